import os

import pytest
import torch

import embodied_pref  # noqa: F401  (loads torch._dynamo before any EGL context; see its __init__)

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    # The networks under test are small: one thread is faster than two contending ones,
    # and keeps results identical from run to run.
    torch.set_num_threads(1)
    yield


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL server for this session (see tests/postgres.py); a test that
    needs it fails, never skips, when PostgreSQL is not installed."""
    from postgres import running_cluster

    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def dataset_url(backend, tmp_path, request) -> str:
    """Where a test's new dataset goes: a directory, or a fresh PostgreSQL database with its
    files in a directory."""
    files = tmp_path / "ds"
    if backend == "sqlite":
        return str(files)
    cluster = request.getfixturevalue("postgres_cluster")
    return f"{cluster.url(cluster.new_database())}&files={files}"
