"""Importing a LeRobot v3.0 recording: 200 episodes × 300 frames × 2 cameras (96×96, 50 episodes
per data and video file) written by `write_lerobot`, then, each in a fresh process, (i) our
import (`read_lerobot` → `import_episodes` into a new dataset: every episode a video-backed
trajectory of both cameras, the front one compared and the wrist one for the encoder, its
clips cut) and the peers, which only read the same files: (ii) pyarrow reads
every data parquet and PyAV demuxes every mp4 (what an import needs to know: the frames'
count and place), (iii) the same with every frame decoded. Prints wall time and peak RSS of
each, and our ratios; exits non-zero if our peak RSS reaches 1.5 GB.

    .venv/bin/python bench/recordings_import.py [--episodes 200] [--frames 300] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.process_memory import peak_rss_bytes
from embodied_pref.recordings.episode import RecordedEpisode

SIZE, FPS, CAMERAS = 96, 30.0, ("observation.images.front", "observation.images.wrist")
RSS_LIMIT_BYTES = 1.5e9
SMOKE = {"episodes": 4, "frames": 20, "episodes_per_file": 2}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""
WAYS = ("ours", "pyarrow + PyAV demux", "pyarrow + PyAV decode")


def synthetic_episodes(episodes: int, frames: int):
    """Episodes of drifting gradients (they compress like camera footage, not like noise)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rng = np.random.default_rng(0)
    for e in range(episodes):
        views = {}
        for c, camera in enumerate(CAMERAS):
            t = np.arange(frames)[:, None, None]
            views[camera] = np.stack([(x + 3 * t + 40 * c + e) % 256, (y + 2 * t) % 256,
                                      ((x // 16 + y // 16 + t // 10) % 2) * 120 + 60 * c], axis=-1).astype(np.uint8)
        yield RecordedEpisode(states=rng.normal(size=(frames, 14)), actions=rng.normal(size=(frames, 7)),
                              cameras=views, fps=FPS, rewards=rng.normal(size=frames), task="fold the towel",
                              name=f"episode_{e}")


def run_ours(recording: Path, dataset: Path) -> dict:
    for library in ("av", "pyarrow.parquet"):  # imported before the clock starts, as the peers do
        importlib.import_module(library)
    from embodied_pref.recordings.importing import RecordingImportConfig, import_episodes
    from embodied_pref.recordings.lerobot import read_lerobot
    from embodied_pref.store import PreferenceDataset

    start = time.perf_counter()
    with PreferenceDataset.create(dataset) as store:
        summary = import_episodes(read_lerobot(recording), store, "lerobot",
                                  RecordingImportConfig(camera=CAMERAS[0], encoder_cameras=CAMERAS[1:],
                                                        progress=False))
    return {"seconds": time.perf_counter() - start, "episodes": len(summary.stored)}


PEER = """
import json, sys, time
from pathlib import Path
import av
import pyarrow.parquet as pq

def peak_rss_bytes():
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024

recording, decode = Path(sys.argv[1]), sys.argv[2] == "decode"
after_imports = peak_rss_bytes()
start = time.perf_counter()
rows = sum(pq.read_table(path).num_rows for path in sorted((recording / "data").rglob("*.parquet")))
frames = 0
for path in sorted((recording / "videos").rglob("*.mp4")):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if decode:
            frames += sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24").size)
        else:
            frames += sum(1 for packet in container.demux(stream) if packet.size)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows, "frames": frames,
                  "peak_rss": peak_rss_bytes(),
                  "rss_after_imports": after_imports}))
"""
"""A peer: pyarrow and PyAV alone, in a process that imports nothing else."""


def measure_ours(recording: Path, scratch: Path) -> dict:
    """Our import of `recording` in this (fresh) process, with its peak RSS."""
    before = peak_rss_bytes()
    return {**run_ours(recording, scratch / "dataset"), "peak_rss": peak_rss_bytes(), "rss_after_imports": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--frames", type=int, default=300, help="frames per episode")
    parser.add_argument("--episodes-per-file", type=int, default=50, help="episodes per v3.0 data/video file")
    parser.add_argument("--measure", nargs=2, metavar=("RECORDING", "SCRATCH"),
                        help=argparse.SUPPRESS)  # the fresh process's part
    args = parse_with_smoke(parser, SMOKE)
    if args.measure:
        print(json.dumps(measure_ours(*(Path(p) for p in args.measure))))
        return

    from embodied_pref.recordings.lerobot_writer import write_lerobot

    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "lerobot"
        start = time.perf_counter()
        write_lerobot(synthetic_episodes(args.episodes, args.frames), recording, version="v3.0",
                      episodes_per_file=args.episodes_per_file)
        write_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in recording.rglob("*") if p.is_file()) / 1e6
        results = {}
        commands = {WAYS[0]: [__file__, "--measure", str(recording), tmp],
                    WAYS[1]: ["-c", PEER, str(recording), "demux"], WAYS[2]: ["-c", PEER, str(recording), "decode"]}
        for way, command in commands.items():
            child = subprocess.run([sys.executable, *command], check=True, capture_output=True, text=True)
            results[way] = json.loads(child.stdout.strip().splitlines()[-1])
    ours = results[WAYS[0]]
    print(f"LeRobot v3.0: {args.episodes} episodes × {args.frames} frames × {len(CAMERAS)} cameras "
          f"({SIZE}×{SIZE}), {size_mb:.1f} MB on disk, written in {write_s:.1f} s\n")
    print("| reading the recording | wall (s) | peak RSS (MB) | of which after imports (MB) | ours / this (wall) |")
    print("|---|---:|---:|---:|---:|")
    for way, result in results.items():
        print(f"| {way} | {result['seconds']:.2f} | {result['peak_rss'] / 1e6:.0f} | "
              f"{result['rss_after_imports'] / 1e6:.0f} | {ours['seconds'] / result['seconds']:.2f} |")
    print(f"\nimported {ours['episodes']} episodes; peak RSS {ours['peak_rss'] / 1e6:.0f} MB "
          f"(limit {RSS_LIMIT_BYTES / 1e9:.1f} GB)")
    if ours["episodes"] != args.episodes or ours["peak_rss"] >= RSS_LIMIT_BYTES:
        raise SystemExit("import incomplete or over the memory limit")


if __name__ == "__main__":
    main()
