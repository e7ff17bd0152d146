import dataclasses
import hashlib
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

import embodied_pref.store.arrays
from embodied_pref.data import FORMAT_VERSION, Clip, Label, Outcome, Query, Trajectory, new_id
from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.store import ConflictError, DatasetError, PreferenceDataset

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


SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
"""For tests of SQLite's files; the others run on both backends (``backend`` fixture)."""


@pytest.fixture
def filled(dataset_url):
    """A dataset with 2 trajectories, 4 clips, a pair and a triplet query, 3 labels."""
    ds = PreferenceDataset.create(dataset_url, description="test set",
                                  instructions="# Pick the better")
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


def test_everything_round_trips_through_disk(filled, dataset_url):
    ds, trajs, clips, queries, labels = filled
    ds.set_meta("loop", {"iteration": 3, "phase": "labeling"})
    token = ds.add_annotator("alice")
    ds.close()
    with PreferenceDataset.open(dataset_url) as again:
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
        assert again.annotator_for_token(token) == ("alice", "annotator")
        assert again.annotator_for_token(token + "x") is None
        seg = again.segment(clips[1].id)
        np.testing.assert_array_equal(seg.observations, trajs[0].observations[8:13])
        np.testing.assert_array_equal(seg.frames, trajs[0].frames[8:13])
        np.testing.assert_array_equal(seg.rewards, trajs[0].rewards[8:12])
    for db_file in ds.path.glob("dataset.sqlite*"):  # only a hash of the token is stored
        assert token.encode() not in db_file.read_bytes()


@SQLITE_ONLY
def test_layout_and_cache(filled):
    ds, trajs, *_ = filled
    assert (ds.path / "trajectories" / f"{trajs[0].id}.npz").is_file()
    assert (ds.path / "instructions.md").read_text() == "# Pick the better"
    assert ds.trajectory(trajs[0].id) is ds.trajectory(trajs[0].id)
    with ds._transaction(write=False) as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
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


@SQLITE_ONLY
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


@SQLITE_ONLY
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


FORMAT_4_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trajectories (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    env_id TEXT NOT NULL, seed INTEGER, embodiment TEXT NOT NULL,
    length INTEGER NOT NULL CHECK (length >= 1), obs_dim INTEGER NOT NULL,
    action_dim INTEGER NOT NULL, has_rewards INTEGER NOT NULL, has_frames INTEGER NOT NULL,
    frame_height INTEGER, frame_width INTEGER, terminated INTEGER NOT NULL,
    metadata TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL, created_at REAL NOT NULL,
    video_file TEXT, video_sha256 TEXT, video_bytes INTEGER);
CREATE TABLE clips (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    trajectory_id TEXT NOT NULL REFERENCES trajectories (id),
    start INTEGER NOT NULL CHECK (start >= 0), length INTEGER NOT NULL CHECK (length >= 1));
CREATE INDEX clips_by_trajectory ON clips (trajectory_id);
CREATE TABLE queries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    selector TEXT NOT NULL, score REAL, round INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE query_clips (query_id TEXT NOT NULL REFERENCES queries (id),
    position INTEGER NOT NULL, clip_id TEXT NOT NULL REFERENCES clips (id),
    PRIMARY KEY (query_id, position));
CREATE TABLE labels (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    query_id TEXT NOT NULL REFERENCES queries (id),
    outcome TEXT NOT NULL CHECK (outcome IN ('left', 'right', 'equal', 'cannot_tell', 'skip',
                                             'ranking')),
    ranking TEXT, annotator TEXT NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL,
    ties TEXT);
CREATE INDEX labels_by_query ON labels (query_id);
CREATE TABLE annotators (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    role TEXT NOT NULL DEFAULT 'annotator' CHECK (role IN ('annotator', 'owner')),
    revoked_at REAL);
CREATE TABLE leases (query_id TEXT NOT NULL REFERENCES queries (id), annotator TEXT NOT NULL,
    leased_at REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (query_id, annotator));
"""
"""The tables as format 4 created them before the store spoke SQLAlchemy."""


def table_columns(db: Path) -> dict[str, list[tuple[str, str, object, int]]]:
    """Every table's and index's columns: (name, declared type, default, primary key)."""
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        found = {name: [row[1:3] + row[4:6] for row in conn.execute(f"PRAGMA table_info({name})")]
                 for name in names}
    conn.close()
    return found


@SQLITE_ONLY
def test_format_4_directory_keeps_its_tables_gains_views_and_matches_new_ones(filled, tmp_path):
    ds, trajs, clips, queries, labels = filled
    old = tmp_path / "old"
    shutil.copytree(ds.path, old)
    (old / "dataset.sqlite").unlink()
    with sqlite3.connect(old / "dataset.sqlite") as conn:
        conn.executescript(FORMAT_4_TABLES)
        conn.execute("INSERT INTO meta VALUES ('format_version', '4'), ('description', '\"old\"')")
    conn.close()
    new_tables = table_columns(ds.path / "dataset.sqlite")
    views_table = new_tables.pop("trajectory_views")
    assert [column[0] for column in views_table][:3] == ["trajectory_id", "camera", "position"]
    assert table_columns(old / "dataset.sqlite") == new_tables
    before = {**table_columns(old / "dataset.sqlite"), "trajectory_views": views_table}
    with PreferenceDataset.open(old) as reopened:
        for traj in trajs:
            reopened.add_trajectory(traj)
        reopened.add_clips(clips)
        reopened.add_queries(queries)
        for label in labels:
            reopened.add_label(label)
        reopened.lease(queries[0].id, "ann", 9.5)
        token = reopened.add_annotator("olga", role="owner")
        assert snapshot(reopened) == snapshot(ds) and reopened.description == "old"
    with sqlite3.connect(old / "dataset.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == ("5",)
    conn.close()
    assert table_columns(old / "dataset.sqlite") == before
    with PreferenceDataset.open(f"sqlite:///{old}") as again:
        assert again.annotator_for_token(token) == ("olga", "owner")
        assert again.leases() == [(queries[0].id, "ann", 9.5)]


def downgrade_to_format_3(db: Path) -> None:
    """Rewrite a dataset's database as format 3 wrote it: no roles, no leases, no views."""
    with sqlite3.connect(db) as conn:
        for column in ("role", "revoked_at"):
            conn.execute(f"ALTER TABLE annotators DROP COLUMN {column}")
        conn.execute("DROP TABLE leases")
        conn.execute("DROP TABLE trajectory_views")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    conn.close()


def downgrade_to_format_2(db: Path) -> None:
    """Rewrite a dataset's database as format 2 wrote it: no video columns."""
    downgrade_to_format_3(db)
    with sqlite3.connect(db) as conn:
        for column in ("video_file", "video_sha256", "video_bytes"):
            conn.execute(f"ALTER TABLE trajectories DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    conn.close()


@SQLITE_ONLY
def test_format_1_dataset_is_migrated_on_open(filled):
    ds, *_, labels = filled
    ds.close()
    db = ds.path / "dataset.sqlite"
    downgrade_to_format_2(db)
    with sqlite3.connect(db) as conn:  # what format 1 wrote: no ties column either
        conn.execute("ALTER TABLE labels DROP COLUMN ties")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    conn.close()
    with PreferenceDataset.open(ds.path) as migrated:
        assert migrated.get_meta("format_version") == FORMAT_VERSION == 5
        assert migrated.labels() == labels
        triplet = migrated.queries()[1]
        migrated.add_label(Label(triplet.id, "ranking", ranking=(0, 2, 1), ties=(0,)))
        assert migrated.labels()[-1].ties == (0,)


def test_migrations_from_format_1_run_on_both_backends(filled, dataset_url):
    ds, *_, queries, labels = filled
    with ds._transaction(write=True) as conn:  # back to what format 1 wrote
        for table, column in [("annotators", "role"), ("annotators", "revoked_at"),
                              ("trajectories", "video_file"), ("trajectories", "video_sha256"),
                              ("trajectories", "video_bytes"), ("labels", "ties")]:
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE leases")
        conn.exec_driver_sql("DROP TABLE trajectory_views")
        conn.exec_driver_sql("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    ds.close()
    with PreferenceDataset.open(dataset_url) as migrated:
        assert migrated.get_meta("format_version") == FORMAT_VERSION == 5
        assert migrated.labels() == labels and migrated.leases() == []
        migrated.add_label(Label(queries[1].id, "ranking", ranking=(0, 2, 1), ties=(0,)))
        migrated.lease(queries[0].id, "ann", 3.0)
        migrated.add_annotator("olga", role="owner")
        assert migrated.labels()[-1].ties == (0,) and migrated.annotators() == ["olga"]


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
    with pytest.raises(DatasetError, match="field 'role'"):
        ds.add_annotator("carl", role="admin")
    with pytest.raises(DatasetError, match="field 'name'.*no annotator 'nobody'"):
        ds.revoke_annotator("nobody")
    ds.revoke_annotator("bob")
    with pytest.raises(DatasetError, match="field 'name'.*already revoked"):
        ds.revoke_annotator("bob")
    with pytest.raises(DatasetError, match="field 'query_id'"):
        ds.lease("nosuchquery", "bob", 1.0)
    assert ds.leases() == [] and ds.annotators() == []


# --- corruption -----------------------------------------------------------------------------


def corrupt_and_load(ds: PreferenceDataset, traj: Trajectory, damage) -> str:
    """Damage the trajectory's file, load it from a fresh instance, return the error text."""
    path = ds.path / "trajectories" / f"{traj.id}.npz"
    original = path.read_bytes()
    damage(path, original)
    with PreferenceDataset.open(ds.url) as fresh:
        with pytest.raises(DatasetError) as info:
            fresh.trajectory(traj.id)
    path.write_bytes(original)
    return str(info.value)


def test_corrupt_trajectory_files_name_file_and_field(filled, dataset_url):
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

    with PreferenceDataset.open(dataset_url) as reopened:
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


def test_dataset_urls_and_their_errors(postgres_cluster, tmp_path):
    database = postgres_cluster.url(postgres_cluster.new_database())
    with pytest.raises(DatasetError, match="parameter 'files'"):
        PreferenceDataset.create(database)
    with pytest.raises(DatasetError, match="mysql://"):
        PreferenceDataset.open("mysql://localhost/db")
    with pytest.raises(DatasetError, match="table 'meta' missing"):
        PreferenceDataset.open(database)
    files = tmp_path / "shared"
    with PreferenceDataset.create(f"{database}&files={files}", description="pg") as ds:
        assert ds.backend == "postgresql" and ds.path == files and (files / "previews").is_dir()
        assert "postgresql" in repr(ds)
    with PreferenceDataset.open(database) as ds:  # the directory recorded on create
        assert ds.path == files.resolve() and ds.description == "pg"
        with ds._transaction(write=False) as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        big = dataclasses.replace(make_trajectory(1, frames=False), seed=2**40)
        ds.add_trajectory(big)  # 64-bit integers, as in SQLite
        assert ds.trajectory(big.id).seed == 2**40
    moved = tmp_path / "mounted"
    files.rename(moved)
    with pytest.raises(DatasetError, match="file directory is missing"):
        PreferenceDataset.open(database)
    with PreferenceDataset.open(f"{database}&files={moved}") as ds:
        assert ds.path == moved
    with pytest.raises(DatasetError, match="already exists"):
        PreferenceDataset.create(f"{database}&files={moved}")
    with PreferenceDataset.create(f"sqlite:///{tmp_path / 'lite'}") as ds:
        assert ds.backend == "sqlite" and (tmp_path / "lite" / "dataset.sqlite").is_file()


# --- concurrency and crashes ------------------------------------------------------------------


def test_threads_and_a_second_connection_share_the_store(filled, dataset_url):
    ds, _, _, (pair, _), labels = filled
    other = PreferenceDataset.open(dataset_url)
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


def test_concurrent_writers_store_one_answer_and_one_lease_per_annotator(filled, dataset_url):
    """Eight connections (as eight server processes would hold) race to store the same
    annotator's answer to one query and to lease it: one answer lands, the others are
    refused, and the lease stays one row."""
    ds, _, _, (pair, _), labels = filled
    stores = [PreferenceDataset.open(dataset_url) for _ in range(8)]
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def worker(store: PreferenceDataset, i: int) -> None:
        start.wait()
        store.lease(pair.id, "racer", 100.0 + i)
        try:
            store.add_label(Label(pair.id, "left", annotator="racer"), once_per_annotator=True)
            outcomes.append("stored")
        except ConflictError as err:
            assert "field 'annotator'" in str(err)
            outcomes.append("refused")

    threads = [threading.Thread(target=worker, args=(store, i)) for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert sorted(outcomes) == ["refused"] * 7 + ["stored"]
    assert [x.annotator for x in ds.labels()] == [x.annotator for x in labels] + ["racer"]
    assert [(q, a) for q, a, _ in ds.leases()] == [(pair.id, "racer")]
    ds.add_label(Label(pair.id, "right", annotator="racer"))  # allowed unless asked


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


def test_sigkill_loses_no_acknowledged_label(dataset_url, backend, tmp_path):
    acknowledged_target = 50
    with PreferenceDataset.create(dataset_url) as ds:
        traj = make_trajectory(0, frames=False)
        ds.add_trajectory(traj)
        a, b = Clip(traj.id, 0, 3), Clip(traj.id, 3, 3)
        ds.add_clips([a, b])
        ds.add_queries([Query((a.id, b.id)) for _ in range(20)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, dataset_url],
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
    with PreferenceDataset.open(dataset_url) as ds:
        stored = ds.labels()
        assert {label.id for label in stored} >= set(acknowledged)
        assert len(stored) >= acknowledged_target
        assert [label.id for label in stored][:acknowledged_target] == acknowledged
        assert all(label.source == {"kind": "teacher", "name": "oracle"} for label in stored)
    if backend != "sqlite":
        return
    with sqlite3.connect(tmp_path / "ds" / "dataset.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


# --- video-backed trajectories ----------------------------------------------------------------


def write_recording(path: Path, frames: int = 60, seed: int = 0) -> Path:
    """A lossy 64×96 H.264 recording of a drifting, noisy pattern, a keyframe every 10 frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:96]
    images = [
        np.stack([(3 * x + 5 * t) % 256, (4 * y + 3 * t) % 256,
                  rng.integers(0, 64, size=(64, 96))], axis=-1).astype(np.uint8)
        for t in range(frames)
    ]
    return write_video(images, path, fps=20, gop=10)


def video_trajectory(frames, steps: int | None = None, seed: int = 0) -> Trajectory:
    steps = len(frames) - 1 if steps is None else steps
    rng = np.random.default_rng(seed)
    return Trajectory(
        observations=rng.normal(size=(steps + 1, 4)), actions=rng.normal(size=(steps, 2)),
        rewards=rng.normal(size=steps), frames=frames, env_id="Recording-v0", seed=seed,
    )


def decode_file(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def recording(tmp_path):
    return write_recording(tmp_path / "source.mp4")


def test_video_backed_trajectory_decodes_like_the_npz_path(tmp_path, recording):
    indices = np.r_[0:10, 20:51]  # the recording dropped frames 10..19: 41 frames, 40 steps
    pointer = np.full((41, 3), np.nan, dtype=np.float32)
    pointer[3:6] = (40, 20, 12)
    frames = VideoFrames(recording, indices=indices, size=(32, 48), pointer=pointer)
    on_video = video_trajectory(frames)
    in_npz = dataclasses.replace(on_video, frames=np.asarray(frames), id=new_id())
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        ds.add_trajectory(on_video)
        ds.add_trajectory(in_npz)
        clips = [Clip(on_video.id, 2, 10), Clip(in_npz.id, 2, 10)]
        ds.add_clips(clips)
    with PreferenceDataset.open(tmp_path / "ds") as ds:
        digest = hashlib.sha256(recording.read_bytes()).hexdigest()
        stored = ds.path / "videos" / f"{digest}.mp4"
        assert stored.read_bytes() == recording.read_bytes()  # copied, not re-encoded
        assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]
        info = ds.trajectory_info(on_video.id)
        assert info["video_file"] == f"videos/{digest}.mp4"
        assert info["video_sha256"] == digest
        assert info["video_bytes"] == recording.stat().st_size
        assert (info["has_frames"], info["frame_height"], info["frame_width"]) == (True, 32, 48)
        assert ds.trajectory_info(in_npz.id)["video_file"] is None
        loaded, npz_loaded = ds.trajectory(on_video.id), ds.trajectory(in_npz.id)
        assert isinstance(loaded.frames, VideoFrames) and loaded.frames.path == stored
        assert isinstance(npz_loaded.frames, np.ndarray)
        np.testing.assert_array_equal(loaded.frames.indices, indices)
        np.testing.assert_array_equal(loaded.frames.pointer, pointer)
        np.testing.assert_array_equal(loaded.observations, on_video.observations)
        np.testing.assert_array_equal(np.asarray(loaded.frames), npz_loaded.frames)
        from_video, from_npz = ds.segment(clips[0]), ds.segment(clips[1])
        assert isinstance(from_video.frames, np.ndarray)
        assert from_video.frames.shape == (11, 32, 48, 3)
        np.testing.assert_array_equal(from_video.frames, from_npz.frames)
        np.testing.assert_array_equal(from_video.frames, npz_loaded.frames[2:13])
        np.testing.assert_array_equal(from_video.actions, on_video.actions[2:12])


def test_clips_and_previews_decode_only_their_frames(tmp_path, recording, monkeypatch):
    traj = video_trajectory(VideoFrames(recording, indices=np.arange(0, 60, 2)))
    decoded: list[int] = []
    decode = VideoFrames._decode
    monkeypatch.setattr(VideoFrames, "_decode",
                        lambda self, source: decoded.append(source) or decode(self, source))
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        ds.add_trajectory(traj)
        clip = Clip(traj.id, 10, 6)
        ds.add_clips([clip])
        path = ds.write_preview(clip.id, fps=5)
        assert decoded == list(range(20, 33, 2))  # steps [10, 16] show video frames 20..32
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    preview = decode_file(path)
    source = decode_file(recording)
    assert preview.shape == (7, 64, 96, 3)
    assert np.abs(preview.astype(float) - source[20:33:2]).mean() < 8  # re-encoded, close
    assert np.abs(preview.astype(float) - source[40:53:2]).mean() > 30


def test_long_preview_streams_in_chunks_and_scales(tmp_path, recording, monkeypatch):
    traj = video_trajectory(VideoFrames(recording))
    largest: list[int] = []
    getitem = VideoFrames.__getitem__
    monkeypatch.setattr(VideoFrames, "__getitem__",
                        lambda self, key: largest.append(len(out := getitem(self, key))) or out)
    monkeypatch.setattr("embodied_pref.store.previews.PREVIEW_CHUNK", 16)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        ds.add_trajectory(traj)
        clip = Clip(traj.id, 5, traj.length - 5)
        ds.add_clips([clip])
        path = ds.write_preview(clip.id, fps=5, height=32)
        with pytest.raises(DatasetError, match="field 'height'"):
            ds.write_preview(clip.id, height=1)
    assert max(largest) == 16  # never the whole clip at once
    preview = decode_file(path)
    assert preview.shape == (traj.length - 4, 32, 48, 3)  # 64×96 halved, every frame kept
    source = decode_file(recording)[5:, ::2, ::2].astype(float)
    assert np.abs(preview.astype(float) - source).mean() < 10


@SQLITE_ONLY
def test_short_or_damaged_videos_store_nothing(filled, tmp_path):
    ds, trajs, *_ = filled
    before = snapshot(ds)
    short = write_recording(tmp_path / "short.mp4", frames=20)
    with pytest.raises(ValueError, match=f"field 'frames': expected 41 frames.* in {short}"):
        video_trajectory(VideoFrames(short), steps=40)

    def refused(damage, expected: str) -> None:
        path = write_recording(tmp_path / f"{damage.__name__}.mp4")
        traj = video_trajectory(VideoFrames(path))
        damage(path)
        with pytest.raises(DatasetError, match=f"{path}: {expected}"):
            ds.add_trajectory(traj)

    def shortened(path):  # replaced by a shorter recording after it was opened
        write_recording(path, frames=30)

    def truncated(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def header_overwritten(path):
        data = path.read_bytes()
        path.write_bytes(bytes(64) + data[64:])

    def removed(path):
        path.unlink()

    refused(shortened, "field 'frames': the video has 30 frames")
    refused(truncated, "field 'frames': the video has [0-9]+ frames")
    refused(header_overwritten, "not a readable video file.*field 'frames'")
    refused(removed, "file missing.*field 'frames'")
    assert snapshot(ds) == before
    assert list((ds.path / "videos").iterdir()) == []
    assert sorted(p.name for p in (ds.path / "trajectories").iterdir()) == sorted(
        f"{t.id}.npz" for t in trajs)
    with PreferenceDataset.open(ds.path) as again:  # still readable
        assert snapshot(again) == before
        for traj in trajs:
            assert_same_trajectory(again.trajectory(traj.id), traj)


def test_failed_video_add_leaves_neither_file_nor_row(tmp_path, recording, monkeypatch):
    traj = video_trajectory(VideoFrames(recording))
    ds = PreferenceDataset.create(tmp_path / "ds")
    synced: list[Path] = []

    def fsync_dir_then_fail(path: Path) -> None:
        synced.append(path)
        if len(synced) == 2:  # both files are in place, the row is not yet written
            raise OSError("disk gone")

    monkeypatch.setattr(embodied_pref.store.arrays, "fsync_dir", fsync_dir_then_fail)
    with pytest.raises(OSError, match="disk gone"):
        ds.add_trajectory(traj)
    monkeypatch.undo()
    assert synced == [ds.path / "trajectories", ds.path / "videos"]
    assert ds.trajectory_ids() == []
    assert list((ds.path / "videos").iterdir()) == []
    assert list((ds.path / "trajectories").iterdir()) == []
    ds.add_trajectory(traj)
    stored = ds.path / ds.trajectory_info(traj.id)["video_file"]
    impostor = video_trajectory(VideoFrames(write_recording(tmp_path / "other.mp4", seed=1)))
    with pytest.raises(DatasetError, match="field 'id'"):
        ds.add_trajectory(dataclasses.replace(impostor, id=traj.id))
    assert stored.read_bytes() == recording.read_bytes()
    assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]
    ds.close()


def test_episodes_of_one_recording_share_one_stored_copy(tmp_path, recording):
    """A recording that holds several episodes (LeRobot v3.0 keeps many per mp4) is copied
    into the dataset once, whichever episode comes first, and each episode reads its frames."""
    first, second = (video_trajectory(VideoFrames(recording, indices=np.arange(start, start + 21)), seed=start)
                     for start in (0, 25))
    other = video_trajectory(VideoFrames(write_recording(tmp_path / "other.mp4", seed=1)))
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        for trajectory in (first, second, other):
            ds.add_trajectory(trajectory)
    with PreferenceDataset.open(tmp_path / "ds") as ds:
        files = {t.id: ds.trajectory_info(t.id)["video_file"] for t in (first, second, other)}
        assert files[first.id] == files[second.id] != files[other.id]
        assert sorted(p.name for p in (ds.path / "videos").iterdir()) == sorted(Path(f).name for f in set(files.values()))
        assert (ds.path / files[first.id]).read_bytes() == recording.read_bytes()
        decoded = decode_file(recording)
        np.testing.assert_array_equal(np.asarray(ds.trajectory(second.id).frames), decoded[25:46])
        ds.verify()


def test_a_batch_of_trajectories_lands_together_or_not_at_all(tmp_path, recording):
    first, second = (video_trajectory(VideoFrames(recording, indices=np.arange(start, start + 21)), seed=start)
                     for start in (0, 25))
    plain = make_trajectory(3, frames=False)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        stored = make_trajectory(4)
        ds.add_trajectory(stored)
        good = [(plain, [Clip(plain.id, 0, 12)]), (first, [Clip(first.id, 0, 10)]),
                (second, [Clip(second.id, 10, 10)])]
        too_long = [*good[:2], (second, [Clip(second.id, 15, 10)])]
        with pytest.raises(DatasetError, match=r"field 'length'.*\[15, 25\).*20 steps"):
            ds.add_trajectories(too_long)
        with pytest.raises(DatasetError, match="field 'id'.*appears twice"):
            ds.add_trajectories([good[0], good[0]])
        with pytest.raises(DatasetError, match=f"field 'id'.*{stored.id}.*already stored"):
            ds.add_trajectories([*good, (stored, [])])
        assert ds.trajectory_ids() == [stored.id] and ds.clips() == []
        assert [p.name for p in (ds.path / "trajectories").iterdir()] == [f"{stored.id}.npz"]
        assert list((ds.path / "videos").iterdir()) == []
        assert ds.add_trajectories(good) == [plain.id, first.id, second.id]
        assert [(c.trajectory_id, c.start) for c in ds.clips()] == [(plain.id, 0), (first.id, 0), (second.id, 10)]
        # the two episodes of one recording, staged in one batch, share one copy
        assert ds.trajectory_info(first.id)["video_file"] == ds.trajectory_info(second.id)["video_file"]
        assert len(list((ds.path / "videos").iterdir())) == 1
        np.testing.assert_array_equal(np.asarray(ds.trajectory(second.id).frames), decode_file(recording)[25:46])
        ds.verify()


def test_further_cameras_are_stored_beside_the_frames_and_come_back(tmp_path, recording):
    steps = 20
    scene = make_trajectory(5, steps=steps, size=(64, 96))
    side = np.random.default_rng(7).integers(0, 256, (steps + 1, 10, 12, 3), dtype=np.uint8)
    wrist = VideoFrames(recording, indices=np.arange(30, 30 + steps + 1))
    traj = dataclasses.replace(scene, views={"wrist": wrist, "side": side})
    clip = Clip(traj.id, 4, 6)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        ds.add_trajectory(traj, [clip])
    with PreferenceDataset.open(tmp_path / "ds") as ds:
        info = ds.trajectory_info(traj.id)
        assert [(v["camera"], v["position"], v["frame_height"], v["frame_width"]) for v in info["views"]] == [
            ("wrist", 0, 64, 96), ("side", 1, 10, 12)]
        assert info["views"][1]["video_file"] is None and info["video_file"] is None
        back = ds.trajectory(traj.id)
        assert list(back.views) == ["wrist", "side"] and isinstance(back.views["wrist"], VideoFrames)
        np.testing.assert_array_equal(back.views["side"], side)
        decoded = decode_file(recording)
        np.testing.assert_array_equal(ds.clip_frames(clip.id, "wrist"), decoded[34:41])
        np.testing.assert_array_equal(ds.clip_frames(clip.id, "side"), side[4:11])
        np.testing.assert_array_equal(ds.clip_frames(clip.id), scene.frames[4:11])
        with pytest.raises(DatasetError, match=r"field 'camera'.*no camera 'top'.*\['side', 'wrist'\]"):
            ds.clip_frames(clip.id, "top")
        ds.verify()
        copy = ds.path / info["views"][0]["video_file"]
    original = copy.read_bytes()
    start = original.index(b"mdat") + 8  # same size, the coded pictures zeroed
    copy.write_bytes(original[:start] + bytes(len(original) - start))
    with PreferenceDataset.open(tmp_path / "ds") as ds:
        with pytest.raises(DatasetError, match=f"{copy}: checksum mismatch"):
            ds.verify()
    with pytest.raises(ValueError, match="field 'views': further cameras need the trajectory's own frames"):
        dataclasses.replace(make_trajectory(5, steps=steps, frames=False), views={"side": side})
    with pytest.raises(ValueError, match=r"field 'views\['side'\]': expected 21 frames"):
        dataclasses.replace(scene, views={"side": side[:-1]})


def test_stored_video_altered_afterwards_is_detected(tmp_path, recording):
    traj, other = video_trajectory(VideoFrames(recording)), make_trajectory(1)
    clip = Clip(traj.id, 30, 5)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        ds.add_trajectory(traj)
        ds.add_trajectory(other)
        ds.add_clips([clip])
        ds.verify()
    with PreferenceDataset.open(tmp_path / "ds") as ds:
        stored = ds.path / ds.trajectory_info(traj.id)["video_file"]
    original = stored.read_bytes()

    def load_error() -> str:
        with PreferenceDataset.open(tmp_path / "ds") as fresh:
            with pytest.raises(DatasetError) as info:
                fresh.trajectory(traj.id)
            assert_same_trajectory(fresh.trajectory(other.id), other)
        return str(info.value)

    stored.write_bytes(original[: len(original) // 2])
    assert f"{stored}: field 'video_bytes'" in load_error()
    stored.unlink()
    assert f"{stored}: file missing" in load_error()
    start = original.index(b"mdat") + 8  # same size, the coded pictures zeroed
    stored.write_bytes(original[:start] + bytes(len(original) - start))
    with PreferenceDataset.open(tmp_path / "ds") as fresh:
        assert isinstance(fresh.trajectory(traj.id).frames, VideoFrames)  # the cheap checks pass
        with pytest.raises(DatasetError, match=f"{stored}: checksum mismatch"):
            fresh.verify()
        fresh.verify([other.id])
        with pytest.raises(DatasetError, match=f"{stored}: frame 30: cannot decode"):
            fresh.segment(clip.id)
        with pytest.raises(DatasetError, match=f"{stored}: frame 30: cannot decode"):
            fresh.write_preview(clip.id)
        assert not fresh.preview_path(clip.id).exists()
        assert fresh.clips() == [clip]
    stored.write_bytes(original)
    with PreferenceDataset.open(tmp_path / "ds") as fresh:
        fresh.verify()
        np.testing.assert_array_equal(fresh.segment(clip.id).frames, decode_file(recording)[30:36])


@SQLITE_ONLY
def test_format_3_dataset_is_migrated_to_4_with_annotators_kept(filled):
    ds, *_, queries, labels = filled
    token = ds.add_annotator("alice")
    ds.close()
    downgrade_to_format_3(ds.path / "dataset.sqlite")
    with PreferenceDataset.open(ds.path) as migrated:
        assert migrated.get_meta("format_version") == FORMAT_VERSION == 5
        assert migrated.annotator_for_token(token) == ("alice", "annotator")
        assert migrated.labels() == labels and migrated.leases() == []
        owner = migrated.add_annotator("olga", role="owner")
        migrated.lease(queries[0].id, "alice", 5.0)
        migrated.lease(queries[0].id, "alice", 7.0)  # a renewal replaces the expiry
        migrated.revoke_annotator("alice")
    with PreferenceDataset.open(ds.path) as again:
        assert again.annotator_for_token(owner) == ("olga", "owner")
        assert again.annotator_for_token(token) is None and again.annotators() == ["olga"]
        assert again.leases() == [(queries[0].id, "alice", 7.0)]


@SQLITE_ONLY
def test_format_2_dataset_is_migrated_to_3_and_takes_videos(filled, recording):
    ds, trajs, clips, queries, labels = filled
    ds.close()
    db = ds.path / "dataset.sqlite"
    downgrade_to_format_2(db)
    shutil.rmtree(ds.path / "videos")  # format 2 had no videos directory

    def columns() -> set[str]:
        with sqlite3.connect(db) as conn:
            found = {row[1] for row in conn.execute("PRAGMA table_info(trajectories)")}
        conn.close()
        return found

    assert "video_file" not in columns()
    with PreferenceDataset.open(ds.path) as migrated:
        assert migrated.get_meta("format_version") == FORMAT_VERSION == 5
        assert {"video_file", "video_sha256", "video_bytes"} <= columns()
        for traj in trajs:
            assert_same_trajectory(migrated.trajectory(traj.id), traj)
            assert migrated.trajectory_info(traj.id)["video_file"] is None
        assert (migrated.clips(), migrated.queries(), migrated.labels()) == (clips, queries, labels)
        np.testing.assert_array_equal(migrated.segment(clips[1].id).frames, trajs[0].frames[8:13])
        video = video_trajectory(VideoFrames(recording))
        migrated.add_trajectory(video)
        migrated.verify()
    with PreferenceDataset.open(ds.path) as again:
        np.testing.assert_array_equal(np.asarray(again.trajectory(video.id).frames),
                                      decode_file(recording))
