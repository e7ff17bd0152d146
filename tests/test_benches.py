"""Every bench/*.py runs to the end at its --smoke size, as `make bench` runs it at full size.

Each bench runs in its own process from the repository root, writing its outputs under the
test's tmp_path. Every bench must print a markdown table with no failed cell; the benches named
in EXPECTED must also print the lines that only a complete run prints.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted((ROOT / "bench").glob("*.py"))

OUTPUTS = {
    "pbrl_vs_imitation": ("--out", "out", "table.md"),
    "trueskill_pairs": ("--out", "trueskill_pair_choice.png", ""),
    "ui": ("--screenshot", "human_ui.png", ""),
}
"""bench: (flag, path under tmp_path it is given, file expected under that path ("" = the path
itself)) for the benches that write files beyond their temporary ones."""

NUMBER = r"[\d,]+(?:\.\d+)?"
EXPECTED = {
    "crafter_reward": [rf"^\| crafter-thrift \| 20 \| {NUMBER} ± 0\.000 \| {NUMBER} ± 0\.000 \| 1 \|$"],
    "deploy": [rf"^\| runtime, onnxruntime \| {NUMBER} \| {NUMBER} \| {NUMBER}× / {NUMBER}× faster \| {NUMBER}e[-+]\d+ \|$",
               r"^goal: exports ≤ eager p50 latency .*: (holds|does not hold|not checked)"],
    "env_throughput": [
        rf"^\| embodied_pref/XMagical-SweepToTop-Gripper-Pixels-v0 \| {NUMBER} \| {NUMBER} \|$",
        rf"^\| Longstick \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$",
        rf"^\| pixels \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$",
    ],
    "ot": [
        rf"\*\*{NUMBER}× faster than ot\.solve_batch\*\* \({NUMBER}× than ot\.sinkhorn\) \|$",
        rf"^\| float32, both capped at \d+ iteration\(s\).* \| {NUMBER} / {NUMBER} \| {NUMBER}× faster \|$",
        rf"^\| OT reward inference, encoder \+ Sinkhorn \(frames/s\) \| {NUMBER} \| {NUMBER} \|$",
    ],
    "policy": [
        rf"^\| chunk latency at batch 1, DDIM-4, torch\.compile \(eager backend\) .* \| {NUMBER}× / {NUMBER}× faster \|$",
        rf"^\| BC training, batch 256, torch\.compile \(eager backend\) .* \| {NUMBER} vs batch 64 eager \|$",
        rf"^\| BC success, DDIM-4 \(mean eval_score, same seeds\) \| {NUMBER} \|",
        rf"^goal: DDIM-10 ≥ 8× faster than DDPM-100 .*: (holds|does not hold) — eager p50 speed-up {NUMBER}×",
    ],
    "pbrl_vs_imitation": [rf"^\| sweep \| 16 \| ours \| 0 \| {NUMBER} \| -?{NUMBER} \| -?{NUMBER} \|",
                          rf"^\| sweep \| 16 \| imitation \| 0 \| {NUMBER} \| -?{NUMBER} \| -?{NUMBER} \|",
                          rf"^\| sweep \| 16 \| ours / imitation \| \| {NUMBER} \| -?{NUMBER} \|"],
    "recordings_import": [rf"^\| ours \| {NUMBER} \| {NUMBER} \| {NUMBER} \| 1\.00 \|$",
                          rf"^\| pyarrow \+ PyAV demux \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$",
                          r"^imported 4 episodes; peak RSS"],
    "reward_pipeline": [rf"^\| LearnedRewardVecEnv, 3×256² ensemble \| {NUMBER} \| {NUMBER} \|$"],
    "rollouts": [rf"^\| PPO policy, state obs \| {NUMBER} \| {NUMBER} \| {NUMBER}× \| yes \| -?{NUMBER} \|$",
                 rf"^\| wrapper, demo reward \| {NUMBER} \| {NUMBER}× \|$",
                 rf"^\| wrapper, demo reward, per step \| {NUMBER} \| {NUMBER}× \|$"],
    "trueskill_pairs": [rf"^\| (active|uniform) \| {NUMBER} \| \d+ \| {NUMBER} \|$",
                        rf"^ratio uniform / active: {NUMBER}$"],
    "ui": [rf"^\| next pair ready to play \| Chromium \| {NUMBER} \| {NUMBER} \| < 150 [✓✗] \|$",
           rf"^\| label committed, inside the server \| HTTP \(httpx\) \| {NUMBER} \| {NUMBER} \| < 20 [✓✗] \|$"],
    "video_memory": [rf"^\| peak RSS of the fresh process \| {NUMBER} MB",
                     rf"^\| the recording's share: peak less the RSS after imports \| -?{NUMBER} MB .*; limit 512 MB\) \|$",
                     rf"^\| sequential decode \| {NUMBER} frames/s \|$"],
}
"""bench: patterns (re.MULTILINE) that its --smoke output must match, each at least once."""


def run_smoke(script: Path, *args: str) -> subprocess.CompletedProcess:
    """`script --smoke *args` in its own process from the repository root, on one thread."""
    return subprocess.run([sys.executable, str(script.relative_to(ROOT)), "--smoke", *args], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", BENCHES, ids=[script.stem for script in BENCHES])
def test_bench_runs_to_the_end_at_smoke_size(script: Path, tmp_path: Path):
    args, expected_file = [], None
    if script.stem in OUTPUTS:
        flag, given, inside = OUTPUTS[script.stem]
        args = [flag, str(tmp_path / given)]
        expected_file = tmp_path / given / inside if inside else tmp_path / given
    run = run_smoke(script, *args)
    assert run.returncode == 0, f"{script.name} --smoke exited {run.returncode}:\n{run.stdout}\n{run.stderr[-4000:]}"
    out = run.stdout
    assert re.search(r"^\|.*\|\n\|(-{3,}|:?-+:?)(\|:?-+:?)*\|$", out, re.MULTILINE), f"no markdown table:\n{out}"
    assert "failed:" not in out, out
    for pattern in EXPECTED.get(script.stem, []):
        assert re.search(pattern, out, re.MULTILINE), f"{script.name}: no line matches {pattern!r} in:\n{out}"
    if expected_file is not None:
        assert expected_file.is_file() and expected_file.stat().st_size > 0, f"{script.name} wrote no {expected_file}"


def test_video_memory_bench_fails_when_the_recording_outgrows_its_limit():
    run = run_smoke(ROOT / "bench" / "video_memory.py", "--limit-mb", "0")
    assert run.returncode != 0
    assert "the recording's share of the peak RSS" in run.stderr and ">= --limit-mb 0" in run.stderr, run.stderr
