"""schemathesis against the live server, every check on, a bounded number of examples: the
served OpenAPI schema matches what the app answers (status codes, media types, bodies)."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.server import create_app


def schemathesis_run(url: str, headers: dict[str, str], workdir: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/api/openapi.json", "--checks", "all", "--max-examples", "15",
               "--seed", "1", "--no-color"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)


@pytest.mark.parametrize("exposed", [False, True], ids=["local", "exposed-owner"])
def test_the_served_schema_holds_for_every_check(dataset_dir, serve, exposed, tmp_path):
    token = None
    if exposed:
        with PreferenceDataset.open(dataset_dir) as ds:
            token = ds.add_annotator("olga", role="owner")
    config = UIConfig(overlap=0.0, require_token=exposed)
    with serve(create_app(dataset_dir, config)) as server:
        headers = {"X-Annotator-Token": token} if token else {}
        session = httpx.get(f"{server.url}/api/session", headers=headers)
        (cookie, value), = session.cookies.items()
        headers.update({"X-CSRF-Token": session.json()["csrf_token"], "Cookie": f"{cookie}={value}"})
        result = schemathesis_run(server.url, headers, tmp_path)  # it writes .schemathesis/ there
    report = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "7 selected / 7 total" in result.stdout and "Stateful" in result.stdout, report
    assert "failures" not in result.stdout.rsplit("SUMMARY", 1)[-1], report
