"""Memory of loading a recording: a 5-minute 360p VPT recording (6,000 frames, 4.1 GB as raw
frames; `<name>.mp4` + `<name>.jsonl`) imported into a dataset by the VPT importer (its mp4
stored as a video-backed trajectory, clips cut), then 20 clips' segments read and 2 previews
written, all in a fresh process whose peak RSS is printed next to the raw size. Exits non-zero
if the recording's share of that peak (the peak less the RSS after the imports) reaches
--limit-mb. The imports (torch and its compiler stack, loaded with the package) weigh 0.7–0.95
GB by themselves, the spread being how many of the shared libraries' cached file pages the
kernel maps in around each page touched, so the whole peak says more about the page cache than
about the recording. Also prints random-access and sequential decode rates.

    .venv/bin/python bench/video_memory.py [--frames 6000] [--clips 20] [--clip-steps 60] \
        [--limit-mb 512] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.process_memory import peak_rss_bytes

HEIGHT, WIDTH, FPS = 360, 640, 20
SMOKE = {"frames": 40, "clips": 2, "clip_steps": 10, "random_reads": 3, "sequential_reads": 20}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""


def moving_pattern(count: int):
    """(HEIGHT, WIDTH, 3) uint8 frames: drifting gradients and checkerboard over a scrolling
    blocky texture (4×4-pixel noise, so that it compresses like game footage, not like snow)."""
    noise = np.random.default_rng(0).integers(0, 48, size=(HEIGHT // 4, WIDTH // 4, 3))
    texture = noise.repeat(4, axis=0).repeat(4, axis=1).astype(np.uint8)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    for t in range(count):
        frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame[..., 0] = (x + 4 * t) % 200
        frame[..., 1] = (y + 2 * t) % 200
        frame[..., 2] = (((x + 3 * t) // 40 + y // 40) % 2) * 150
        yield frame + np.roll(texture, 5 * t, axis=1)


def write_ticks(path: Path, count: int) -> None:
    """A VPT `.jsonl` of `count` ticks: walking forward while turning, every 10th tick null."""
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for t in range(count):
            moving = t % 10 != 0
            dx = float(rng.integers(-20, 21)) if moving else 0.0
            tick = {
                "mouse": {"x": 640.0, "y": 360.0, "dx": dx, "dy": 0.0, "buttons": [],
                          "newButtons": []},
                "keyboard": {"keys": ["key.keyboard.w"] if moving else []},
                "isGuiOpen": False, "hotbar": 0,
            }
            f.write(json.dumps(tick) + "\n")


def measure(recordings: Path, dataset: Path, clips: int, clip_steps: int) -> dict[str, float]:
    """Run in a fresh process: import, read and preview; report times and peak RSS."""
    from embodied_pref.data.vpt import VPTImportConfig, import_recordings
    from embodied_pref.store import PreferenceDataset
    from envs.basalt import flatten_action

    after_imports = peak_rss_bytes()
    start = time.perf_counter()
    config = VPTImportConfig(clip_length=clip_steps, size=None, progress=False)
    with PreferenceDataset.create(dataset) as ds:
        import_recordings(recordings, ds, flatten_action, config)
        stored_at = time.perf_counter()
        stored = ds.clips()
        picks = np.random.default_rng(0).choice(len(stored), size=min(clips, len(stored)),
                                                replace=False)
        checksum = 0
        for pick in picks:
            checksum += int(ds.segment(stored[pick]).frames[:, ::97, ::97].sum())
        read_at = time.perf_counter()
        for pick in picks[:2]:
            ds.write_preview(stored[pick].id)
        done = time.perf_counter()
    return {
        "peak_rss": peak_rss_bytes(), "rss_after_imports": after_imports,
        "store_s": stored_at - start, "segments_s": read_at - stored_at,
        "previews_s": done - read_at, "total_s": done - start, "checksum": checksum,
        "clips_stored": len(stored),
    }


def decode_rates(video: Path, random_reads: int, sequential_reads: int) -> tuple[float, float]:
    """(frames/s reading random frames, frames/s reading front to back), no cache."""
    frames = VideoFrames(video, cache_frames=0)
    picks = np.random.default_rng(1).integers(0, len(frames), size=random_reads)
    start = time.perf_counter()
    for index in picks:
        frames[int(index)]
    random_rate = random_reads / (time.perf_counter() - start)
    start = time.perf_counter()
    for first in range(0, sequential_reads, 100):
        frames[first : min(first + 100, sequential_reads)]
    sequential_rate = sequential_reads / (time.perf_counter() - start)
    return random_rate, sequential_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=6000, help="frames in the recording")
    parser.add_argument("--clips", type=int, default=20, help="clips to cut and read")
    parser.add_argument("--clip-steps", type=int, default=60, help="steps per clip")
    parser.add_argument("--random-reads", type=int, default=100, help="frames read at random")
    parser.add_argument("--sequential-reads", type=int, default=1500,
                        help="frames read front to back")
    parser.add_argument("--limit-mb", type=float, default=512,
                        help="the most the recording may add to the RSS after the imports (MB)")
    parser.add_argument("--measure", nargs=2, metavar=("RECORDINGS", "DATASET"),
                        help=argparse.SUPPRESS)  # the fresh process's part
    args = parse_with_smoke(parser, SMOKE)
    if args.measure:
        recordings, dataset = (Path(p) for p in args.measure)
        print(json.dumps(measure(recordings, dataset, args.clips, args.clip_steps)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        recordings = Path(tmp) / "recordings"
        recordings.mkdir()
        video = recordings / "recording.mp4"
        start = time.perf_counter()
        write_video(moving_pattern(args.frames), video, fps=FPS, preset="fast")
        encode_s = time.perf_counter() - start
        write_ticks(recordings / "recording.jsonl", args.frames)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(recordings), str(Path(tmp) / "ds"),
             "--clips", str(args.clips), "--clip-steps", str(args.clip_steps)],
            check=True, capture_output=True, text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        random_rate, sequential_rate = decode_rates(video, args.random_reads,
                                                    args.sequential_reads)
        video_mb = video.stat().st_size / 1e6
    raw = args.frames * HEIGHT * WIDTH * 3
    recording_share = result["peak_rss"] - result["rss_after_imports"]
    print(f"| {args.frames} frames of {HEIGHT}×{WIDTH}, H.264 fast | value |")
    print("|---|---|")
    print(f"| raw frames | {raw / 1e9:.2f} GB |")
    print(f"| mp4 | {video_mb:.1f} MB (encoded in {encode_s:.1f} s) |")
    print(f"| peak RSS of the fresh process | {result['peak_rss'] / 1e6:.0f} MB "
          f"({result['peak_rss'] / raw:.1%} of raw; {result['rss_after_imports'] / 1e6:.0f} MB "
          "after imports) |")
    print(f"| the recording's share: peak less the RSS after imports | {recording_share / 1e6:.0f} MB "
          f"({recording_share / raw:.1%} of raw; limit {args.limit_mb:.0f} MB) |")
    print(f"| import the recording (parse jsonl, copy mp4 + sha256, cut {result['clips_stored']} clips) "
          f"| {result['store_s']:.2f} s |")
    print(f"| read {args.clips} segments of {args.clip_steps + 1} frames | "
          f"{result['segments_s']:.2f} s |")
    print(f"| write 2 previews | {result['previews_s']:.2f} s |")
    print(f"| total in the fresh process | {result['total_s']:.2f} s |")
    print(f"| random-access decode (no cache) | {random_rate:.0f} frames/s |")
    print(f"| sequential decode | {sequential_rate:.0f} frames/s |")
    if recording_share >= args.limit_mb * 1e6:
        sys.exit(f"the recording's share of the peak RSS, {recording_share / 1e6:.0f} MB, "
                 f">= --limit-mb {args.limit_mb:.0f}")


if __name__ == "__main__":
    main()
