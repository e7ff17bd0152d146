import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from embodied_pref.data import FORMAT_VERSION, Clip, Label, Outcome, Query, Trajectory
from embodied_pref.store import DatasetError, PreferenceDataset

REPO = Path(__file__).resolve().parents[1]


def make_trajectory(seed: int, steps: int = 12, frames: bool = True, rewards: bool = True,
                    size: tuple[int, int] = (6, 8)) -> Trajectory:
    rng = np.random.default_rng(seed)
    return Trajectory(
        observations=rng.normal(size=(steps + 1, 5)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, 3)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32) if rewards else None,
        frames=rng.integers(0, 256, size=(steps + 1, *size, 3), dtype=np.uint8) if frames else None,
        env_id="Grid-v0",
        seed=seed,
        embodiment="gripper",
        terminated=bool(seed % 2),
        metadata={"policy": "scripted", "noise": 0.1 * seed},
    )


def assert_same_trajectory(a: Trajectory, b: Trajectory) -> None:
    for name in ("observations", "actions", "rewards", "frames"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_array_equal(x, y)
    for name in ("id", "env_id", "seed", "embodiment", "terminated", "metadata", "length"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.fixture
def filled(tmp_path):
    """A dataset with 2 trajectories, 4 clips, a pair and a triplet query, 3 labels."""
    root = tmp_path / "ds"
    ds = PreferenceDataset.create(root, description="test set", instructions="# Pick the better")
    trajs = [make_trajectory(1), make_trajectory(2, frames=False)]
    for traj in trajs:
        ds.add_trajectory(traj)
    clips = [Clip(trajs[0].id, 0, 4), Clip(trajs[0].id, 8, 4), Clip(trajs[1].id, 2, 5),
             Clip(trajs[1].id, 0, 12)]
    ds.add_clips(clips)
    pair = Query((clips[0].id, clips[2].id), selector="disagreement", score=0.25, round=1)
    triplet = Query((clips[0].id, clips[1].id, clips[3].id))
    ds.add_queries([pair, triplet])
    labels = [
        Label(pair.id, "left", annotator="ann", source={"kind": "human"}),
        Label(triplet.id, "ranking", ranking=(2, 0, 1), annotator="oracle",
              source={"kind": "teacher", "name": "oracle", "params": {"beta": 1.0}}),
        Label(pair.id, Outcome.EQUAL, source={"kind": "human"}),
    ]
    for label in labels:
        ds.add_label(label)
    yield ds, trajs, clips, [pair, triplet], labels
    ds.close()


def snapshot(ds: PreferenceDataset):
    return ds.trajectory_ids(), ds.clips(), ds.queries(), ds.labels()


# --- round trips ----------------------------------------------------------------------------


def test_everything_round_trips_through_disk(filled):
    ds, trajs, clips, queries, labels = filled
    ds.set_meta("loop", {"iteration": 3, "phase": "labeling"})
    token = ds.add_annotator("alice")
    ds.close()
    with PreferenceDataset.open(ds.path) as again:
        assert again.description == "test set"
        assert again.instructions == "# Pick the better"
        assert again.trajectory_ids() == [t.id for t in trajs]
        for traj in trajs:
            loaded = again.trajectory(traj.id)
            assert_same_trajectory(loaded, traj)
            assert not loaded.observations.flags.writeable
        info = again.trajectory_info(trajs[0].id)
        assert (info["length"], info["obs_dim"], info["action_dim"]) == (12, 5, 3)
        assert info["has_frames"] and info["has_rewards"] and info["terminated"]
        assert (info["frame_height"], info["frame_width"]) == (6, 8)
        assert info["metadata"] == {"policy": "scripted", "noise": 0.1}
        assert again.clips() == clips
        assert again.clip(clips[2].id) == clips[2]
        assert again.queries() == queries
        assert again.query(queries[1].id).clip_ids == queries[1].clip_ids
        assert again.labels() == labels
        assert again.labels_for(queries[0].id) == [labels[0], labels[2]]
        assert again.get_meta("loop") == {"iteration": 3, "phase": "labeling"}
        assert again.get_meta("absent", 7) == 7
        assert again.annotators() == ["alice"]
        assert again.annotator_for_token(token) == "alice"
        assert again.annotator_for_token(token + "x") is None
        seg = again.segment(clips[1].id)
        np.testing.assert_array_equal(seg.observations, trajs[0].observations[8:13])
        np.testing.assert_array_equal(seg.frames, trajs[0].frames[8:13])
        np.testing.assert_array_equal(seg.rewards, trajs[0].rewards[8:12])
    for db_file in ds.path.glob("dataset.sqlite*"):  # only a hash of the token is stored
        assert token.encode() not in db_file.read_bytes()


def test_layout_and_cache(filled):
    ds, trajs, *_ = filled
    assert (ds.path / "trajectories" / f"{trajs[0].id}.npz").is_file()
    assert (ds.path / "instructions.md").read_text() == "# Pick the better"
    assert ds.trajectory(trajs[0].id) is ds.trajectory(trajs[0].id)
    assert ds._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert ds._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with sqlite3.connect(ds.path / "dataset.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "trajectories", "clips", "queries", "labels", "annotators"} <= tables
    assert not list(ds.path.rglob(".*tmp*"))


def test_unlabeled_queries_and_delete_label(filled):
    ds, _, clips, queries, labels = filled
    fresh = Query((clips[1].id, clips[2].id))
    ds.add_queries([fresh])
    assert ds.unlabeled_queries() == [fresh]
    ds.delete_label(labels[1].id)
    assert [q.id for q in ds.unlabeled_queries()] == [queries[1].id, fresh.id]
    assert ds.labels() == [labels[0], labels[2]]
    with pytest.raises(DatasetError, match="field 'label_id'"):
        ds.delete_label(labels[1].id)


def test_create_twice_and_open_errors(tmp_path, filled):
    ds = filled[0]
    with pytest.raises(DatasetError, match="already exists"):
        PreferenceDataset.create(ds.path)
    with PreferenceDataset.create(ds.path, exist_ok=True) as same:
        assert same.labels() == ds.labels()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty/dataset\.sqlite: missing"):
        PreferenceDataset.open(empty)
    with pytest.raises(DatasetError, match="no such directory"):
        PreferenceDataset.open(tmp_path / "nowhere")
    interrupted = tmp_path / "interrupted"  # an empty database file, no tables yet
    interrupted.mkdir()
    sqlite3.connect(interrupted / "dataset.sqlite").close()
    with PreferenceDataset.create(interrupted) as completed:
        assert completed.labels() == [] and completed.get_meta("format_version") == FORMAT_VERSION
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "dataset.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(DatasetError, match=r"garbage/dataset\.sqlite"):
        PreferenceDataset.open(garbage)
    ds.close()
    with pytest.raises(DatasetError, match="closed"):
        ds.labels()


def test_format_version_mismatch_names_file_and_versions(filled):
    ds = filled[0]
    ds.close()
    db = ds.path / "dataset.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                     (str(FORMAT_VERSION + 1),))
    conn.close()
    with pytest.raises(DatasetError) as info:
        PreferenceDataset.open(ds.path)
    message = str(info.value)
    assert str(db) in message and "format_version" in message
    assert f"found version {FORMAT_VERSION + 1}" in message and f"expected {FORMAT_VERSION}" in message


def test_ranking_ties_round_trip_and_validation(filled):
    ds, _, clips, (pair, triplet), _ = filled
    tied = Label(triplet.id, "ranking", ranking=(1, 2, 0), ties=(1,), annotator="p")
    all_equal = Label(triplet.id, "ranking", ranking=(0, 1, 2), ties=[0, 1], annotator="q")
    ds.add_label(tied)
    ds.add_label(all_equal)
    stored = {label.id: label for label in ds.labels()}
    assert stored[tied.id].ties == (1,) and stored[all_equal.id].ties == (0, 1)
    assert stored[tied.id] == tied
    assert all(label.ties == () for label in ds.labels()[:3])  # the fixture's labels
    before = snapshot(ds)
    with pytest.raises(ValueError, match="field 'ties'"):
        Label(triplet.id, "ranking", ranking=(0, 1, 2), ties=(2,))
    with pytest.raises(ValueError, match="field 'ties'"):
        Label(triplet.id, "ranking", ranking=(0, 1, 2), ties=(1, 0))
    with pytest.raises(ValueError, match="field 'ties'"):
        Label(pair.id, "left", ties=(0,))
    assert snapshot(ds) == before


def test_format_1_dataset_is_migrated_on_open(filled):
    ds, *_, labels = filled
    ds.close()
    db = ds.path / "dataset.sqlite"
    with sqlite3.connect(db) as conn:  # what format 1 wrote: no ties column
        conn.execute("ALTER TABLE labels DROP COLUMN ties")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    conn.close()
    with PreferenceDataset.open(ds.path) as migrated:
        assert migrated.get_meta("format_version") == FORMAT_VERSION == 2
        assert migrated.labels() == labels
        triplet = migrated.queries()[1]
        migrated.add_label(Label(triplet.id, "ranking", ranking=(0, 2, 1), ties=(0,)))
        assert migrated.labels()[-1].ties == (0,)


# --- validation writes nothing ----------------------------------------------------------------


def test_bad_clips_and_queries_write_nothing(filled):
    ds, trajs, clips, *_ = filled
    before = snapshot(ds)
    good = Clip(trajs[0].id, 0, 2)
    with pytest.raises(DatasetError, match="field 'trajectory_id'.*unknown trajectory"):
        ds.add_clips([good, Clip("nosuchtraj", 0, 2)])
    with pytest.raises(DatasetError, match=r"field 'length'.*\[10, 13\).*12 steps"):
        ds.add_clips([good, Clip(trajs[0].id, 10, 3)])
    with pytest.raises(DatasetError, match="field 'id'"):
        ds.add_clips([good, clips[0]])
    with pytest.raises(DatasetError, match="field 'clip_ids'.*unknown clip"):
        ds.add_queries([Query((clips[0].id, clips[1].id)), Query((clips[0].id, "nosuchclip"))])
    assert snapshot(ds) == before


def test_bad_labels_write_nothing(filled):
    ds, _, _, (pair, triplet), _ = filled
    before = snapshot(ds)
    with pytest.raises(ValueError, match="field 'outcome'"):
        ds.add_label(Label(pair.id, "maybe"))
    forced = Label(pair.id, "left")
    object.__setattr__(forced, "outcome", "maybe")
    with pytest.raises(DatasetError, match="field 'outcome'"):
        ds.add_label(forced)
    with pytest.raises(DatasetError, match="field 'query_id'.*unknown query 'nosuchquery'"):
        ds.add_label(Label("nosuchquery", "left"))
    with pytest.raises(DatasetError, match="field 'outcome'"):
        ds.add_label(Label(triplet.id, "left"))
    with pytest.raises(DatasetError, match="field 'outcome'"):
        ds.add_label(Label(pair.id, "ranking", ranking=(1, 0)))
    with pytest.raises(DatasetError, match="field 'ranking'"):
        ds.add_label(Label(triplet.id, "ranking", ranking=(1, 0)))
    with pytest.raises(DatasetError, match="field 'id'"):
        ds.add_label(before[3][0])
    with pytest.raises(DatasetError, match="field 'query_id'"):
        ds.labels_for("nosuchquery")
    assert snapshot(ds) == before
    ds.add_label(Label(triplet.id, "equal"))
    ds.add_label(Label(triplet.id, "skip"))
    assert len(ds.labels()) == len(before[3]) + 2


def test_duplicate_trajectory_keeps_the_stored_file(filled):
    ds, trajs, *_ = filled
    path = ds.path / "trajectories" / f"{trajs[0].id}.npz"
    stored = path.read_bytes()
    impostor = Trajectory(np.zeros((3, 5)), np.zeros((2, 3)), None, id=trajs[0].id)
    with pytest.raises(DatasetError, match="field 'id'"):
        ds.add_trajectory(impostor)
    assert path.read_bytes() == stored
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(f"{t.id}.npz" for t in trajs)


def test_meta_and_annotator_errors(filled):
    ds = filled[0]
    with pytest.raises(DatasetError, match="field 'key'.*reserved"):
        ds.set_meta("format_version", 9)
    with pytest.raises(DatasetError, match="field 'value'"):
        ds.set_meta("x", {1, 2})
    assert ds.get_meta("format_version") == FORMAT_VERSION
    ds.set_meta("iteration", 1)
    ds.set_meta("iteration", 2)
    assert ds.get_meta("iteration") == 2
    ds.add_annotator("bob")
    with pytest.raises(DatasetError, match="field 'name'"):
        ds.add_annotator("bob")
    with pytest.raises(DatasetError, match="field 'name'"):
        ds.add_annotator("  ")


# --- corruption -----------------------------------------------------------------------------


def corrupt_and_load(ds: PreferenceDataset, traj: Trajectory, damage) -> str:
    """Damage the trajectory's file, load it from a fresh instance, return the error text."""
    path = ds.path / "trajectories" / f"{traj.id}.npz"
    original = path.read_bytes()
    damage(path, original)
    with PreferenceDataset.open(ds.path) as fresh:
        with pytest.raises(DatasetError) as info:
            fresh.trajectory(traj.id)
    path.write_bytes(original)
    return str(info.value)


def test_corrupt_trajectory_files_name_file_and_field(filled):
    ds, trajs, clips, queries, labels = filled
    ds.close()
    traj = trajs[0]
    relative = f"trajectories/{traj.id}.npz"
    arrays = {"observations": traj.observations, "actions": traj.actions,
              "rewards": traj.rewards, "frames": traj.frames}

    def truncate(path, data):
        path.write_bytes(data[: len(data) // 2])

    def flip_byte(path, data):
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])

    def short_actions(path, data):
        np.savez(path, **{**arrays, "actions": traj.actions[:-1]})

    def no_rewards(path, data):
        np.savez(path, **{k: v for k, v in arrays.items() if k != "rewards"})

    def float64_obs(path, data):
        np.savez(path, **{**arrays, "observations": traj.observations.astype(np.float64)})

    def same_arrays_new_bytes(path, data):
        np.savez(path, **{**arrays, "rewards": traj.rewards + 1})

    with PreferenceDataset.open(ds.path) as reopened:
        for damage, expected in [
            (truncate, "corrupt or truncated"),
            (flip_byte, "corrupt or truncated"),
            (short_actions, "field 'actions': expected shape (12, 3), found (11, 3)"),
            (no_rewards, "field 'rewards': missing"),
            (float64_obs, "field 'observations': expected dtype float32, found float64"),
            (same_arrays_new_bytes, "checksum mismatch"),
        ]:
            message = corrupt_and_load(reopened, traj, damage)
            assert relative in message, message
            assert expected in message, message
            # what was stored before is intact
            assert reopened.labels() == labels
            assert reopened.clips() == clips and reopened.queries() == queries
            assert_same_trajectory(reopened.trajectory(trajs[1].id), trajs[1])
        original = (reopened.path / relative).read_bytes()
        (reopened.path / relative).unlink()
        with pytest.raises(DatasetError, match=f"{relative}: file missing"):
            reopened.segment(clips[0].id)
        (reopened.path / relative).write_bytes(original)
        assert_same_trajectory(reopened.trajectory(traj.id), traj)


# --- previews and export ----------------------------------------------------------------------


def test_preview_is_h264_with_clip_frames(tmp_path):
    steps, height, width = 10, 21, 33
    ramp = np.arange(steps + 1, dtype=np.uint8)[:, None, None, None] * 20
    frames = np.broadcast_to(ramp, (steps + 1, height, width, 3)).copy()
    traj = Trajectory(np.zeros((steps + 1, 2)), np.zeros((steps, 1)), None, frames=frames)
    blind = Trajectory(np.zeros((3, 2)), np.zeros((2, 1)), None)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        ds.add_trajectory(traj)
        ds.add_trajectory(blind)
        clip, blind_clip = Clip(traj.id, 3, 5), Clip(blind.id, 0, 2)
        ds.add_clips([clip, blind_clip])
        path = ds.write_preview(clip.id, fps=5)
        assert path == ds.preview_path(clip.id) == ds.path / "previews" / f"{clip.id}.mp4"
        with pytest.raises(DatasetError, match=f"{blind.id}.npz: field 'frames'"):
            ds.write_preview(blind_clip.id)
        assert not ds.preview_path(blind_clip.id).exists()
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    assert "h264" in meta["codec"]
    assert tuple(meta["size"]) == (34, 22)  # padded to even width and height
    decoded = [np.frombuffer(f, np.uint8).reshape(22, 34, 3) for f in reader]
    assert len(decoded) == 6  # frames [start, start + length]
    means = [float(f[:height, :width].mean()) for f in decoded]
    np.testing.assert_allclose(means, [20.0 * t for t in range(3, 9)], atol=4)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart


def test_to_imitation_round_trip(filled):
    ds, trajs, *_ = filled
    exported = ds.to_imitation()
    assert len(exported) == 2
    for traj, out in zip(trajs, exported):
        np.testing.assert_array_equal(out.obs, traj.observations)
        np.testing.assert_array_equal(out.acts, traj.actions)
        np.testing.assert_array_equal(out.rews, traj.rewards)
        assert out.rews.dtype == np.float32
        assert out.infos is None and out.terminal == traj.terminated
    assert len(ds.to_imitation([trajs[1].id])) == 1
    no_reward = make_trajectory(3, rewards=False)
    ds.add_trajectory(no_reward)
    with pytest.raises(DatasetError, match=f"{no_reward.id}.npz: field 'rewards'"):
        ds.to_imitation()


# --- concurrency and crashes ------------------------------------------------------------------


def test_threads_and_a_second_connection_share_the_store(filled):
    ds, _, _, (pair, _), labels = filled
    other = PreferenceDataset.open(ds.path)
    written: list[str] = []
    lock = threading.Lock()

    def worker(store: PreferenceDataset, n: int) -> None:
        for i in range(n):
            label = Label(pair.id, "left" if i % 2 else "right", annotator="t")
            store.add_label(label)
            with lock:
                written.append(label.id)

    threads = [threading.Thread(target=worker, args=(ds if i % 2 else other, 20))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    stored = [label.id for label in ds.labels()]
    assert len(stored) == len(labels) + 120
    assert set(written) <= set(stored)


CHILD = """
import itertools, sys
from embodied_pref.data import Label
from embodied_pref.store import PreferenceDataset
ds = PreferenceDataset.open(sys.argv[1])
for i, query in enumerate(itertools.cycle(ds.queries())):
    label = Label(query.id, "left" if i % 2 else "right", annotator="child",
                  source={"kind": "teacher", "name": "oracle"})
    ds.add_label(label)
    print(label.id, flush=True)
"""


def test_sigkill_loses_no_acknowledged_label(tmp_path):
    acknowledged_target = 50
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        traj = make_trajectory(0, frames=False)
        ds.add_trajectory(traj)
        a, b = Clip(traj.id, 0, 3), Clip(traj.id, 3, 3)
        ds.add_clips([a, b])
        ds.add_queries([Query((a.id, b.id)) for _ in range(20)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "ds")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    acknowledged = []
    try:
        while len(acknowledged) < acknowledged_target:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"child stalled: {proc.poll()=}")
            acknowledged.append(line.strip())
        assert proc.poll() is None, "the child must still be writing when it is killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    with PreferenceDataset.open(tmp_path / "ds") as ds:
        stored = ds.labels()
        assert {label.id for label in stored} >= set(acknowledged)
        assert len(stored) >= acknowledged_target
        assert [label.id for label in stored][:acknowledged_target] == acknowledged
        assert all(label.source == {"kind": "teacher", "name": "oracle"} for label in stored)
    with sqlite3.connect(tmp_path / "ds" / "dataset.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
