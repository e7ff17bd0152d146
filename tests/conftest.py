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
