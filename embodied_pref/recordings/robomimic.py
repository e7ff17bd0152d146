"""robomimic HDF5 datasets read as `RecordedEpisode`s and written back, and the operator-quality
masks of multi-human datasets turned into graded preference pairs.

```
info = robomimic_info("can_mh.hdf5")                 # demos, obs keys and shapes, masks: no data read
for episode in read_robomimic("can_mh.hdf5", filter_key="better"):   # one demo in memory at a time
    ...
pairs = quality_preferences(info.masks)     # better ≻ okay, better ≻ worse, okay ≻ worse
write_robomimic(episodes, "out.hdf5", env_args=info.env_args, masks={"train": ["demo_0"]})
```

The layout (robomimic's docs/datasets/overview.md):

```
data                       attrs: total (samples in all demos), env_args (JSON string)
data/demo_N                attr num_samples; actions (N, A), rewards (N,), dones (N,),
                           states (N, S) simulator states (optional; not read here)
data/demo_N/obs/<key>      low-dim (N,) or (N, D) float, or image (N, H, W, 3) uint8
data/demo_N/next_obs/<key> obs shifted by one frame
mask/<filter_key>          names of demos as bytes: train, valid, better, okay, worse, ...
```

Demos are ordered by N numerically. An episode's states are its low-dim obs keys concatenated
in the order asked; its cameras are its image obs keys.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embodied_pref.durable import fsync_dir, fsync_file, temp_path
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError

QUALITY_LEVELS = ("better", "okay", "worse")
"""The operator-quality masks of robomimic's multi-human datasets, best first."""

DEFAULT_STATE_KEY = "state"
"""The single obs key `write_robomimic` stores states under when no split is given."""

_DEMO_NAME = re.compile(r"demo_(\d+)")


@dataclasses.dataclass(frozen=True)
class RobomimicInfo:
    """What a robomimic file holds, read from its metadata without reading any demo's data."""

    path: Path
    """The file."""
    demos: tuple[str, ...]
    """Names of the demos under ``data``, ordered by N in ``demo_N``."""
    env_args: dict[str, Any]
    """The ``data`` attribute ``env_args`` parsed from JSON ({} when absent)."""
    low_dim_keys: dict[str, tuple[int, ...]]
    """Obs key -> per-frame shape, for (N,) and (N, D) arrays (the first demo's)."""
    image_keys: dict[str, tuple[int, int, int]]
    """Obs key -> (H, W, 3), for (N, H, W, 3) uint8 arrays (the first demo's)."""
    other_keys: dict[str, tuple[int, ...]]
    """Obs key -> per-frame shape, for arrays that are neither (e.g. depth maps (N, H, W, 1))."""
    action_dim: int
    """A in the first demo's ``actions`` (N, A) (1 for (N,)); 0 when there are no demos."""
    masks: dict[str, tuple[str, ...]]
    """Filter key -> the demo names ``mask/<filter_key>`` lists."""
    total: int
    """The ``data`` attribute ``total`` (samples in all demos), summed from the demos if absent."""


@dataclasses.dataclass(frozen=True)
class QualityPreference:
    """A demo from a higher-quality mask preferred over one from a lower-quality mask."""

    preferred: str
    """Name of the demo in the higher level."""
    rejected: str
    """Name of the demo in the lower level."""
    preferred_mask: str
    """The mask that put ``preferred`` in its level (e.g. "better")."""
    rejected_mask: str
    """The mask that put ``rejected`` in its level (e.g. "worse")."""


# --- reading ------------------------------------------------------------------------------


def robomimic_info(path: str | os.PathLike[str]) -> RobomimicInfo:
    """The demos, obs keys, action size, masks and env_args of a robomimic file."""
    path = Path(path)
    with _open(path) as file:
        data = _data_group(path, file)
        demos = _demo_names(data)
        first = data[demos[0]] if demos else None
        low_dim, images, others = _obs_key_shapes(path, first) if first is not None else ({}, {}, {})
        action_dim = int(np.prod(_dataset(path, first, "actions").shape[1:])) if first is not None else 0
        total = data.attrs.get("total")
        if total is None:
            total = sum(len(_dataset(path, data[demo], "actions")) for demo in demos)
        return RobomimicInfo(
            path=path, demos=demos, env_args=_env_args(path, data), low_dim_keys=low_dim,
            image_keys=images, other_keys=others, action_dim=action_dim,
            masks=_masks(path, file, set(demos)), total=int(total),
        )


def read_robomimic(
    path: str | os.PathLike[str],
    state_keys: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
    filter_key: str | None = None,
    fps: float = 20.0,
) -> Iterator[RecordedEpisode]:
    """The file's demos as episodes, one at a time: each step reads only that demo's datasets.

    ``state_keys``: low-dim obs keys whose arrays, concatenated in this order as float32, are
    the states (None: every low-dim key, sorted). ``cameras``: image obs keys to read (None:
    every image key). ``filter_key``: read only the demos ``mask/<filter_key>`` lists (still
    in demo order). ``fps``: the recording's frame rate (robomimic files do not store one).

    Each episode is named ``demo_N``, has the demo's rewards if it has any, and its metadata
    holds ``state_keys`` (key -> width, in concatenation order, as `write_robomimic` takes
    it), ``masks`` (the filter keys listing the demo) and ``dones`` (when the demo has them).
    Keys (present, of their kind in the first demo) and the filter key are checked here; each
    demo's data when it is read.
    """
    info = robomimic_info(path)
    state_keys = tuple(sorted(info.low_dim_keys) if state_keys is None else state_keys)
    cameras = tuple(info.image_keys if cameras is None else cameras)
    demos = info.demos
    if filter_key is not None:
        if filter_key not in info.masks:
            raise RobotDataError(f"{info.path}: filter_key {filter_key!r}: no key 'mask/{filter_key}' "
                                 f"(masks: {sorted(info.masks) or 'none'})")
        chosen = set(info.masks[filter_key])
        demos = tuple(demo for demo in demos if demo in chosen)
    if info.demos:
        with _open(info.path) as file:
            _obs_arrays(info.path, _data_group(info.path, file)[info.demos[0]], state_keys, cameras)
    return _episodes(info, demos, state_keys, cameras, fps)


def _episodes(info: RobomimicInfo, demos: tuple[str, ...], state_keys: tuple[str, ...],
              cameras: tuple[str, ...], fps: float) -> Iterator[RecordedEpisode]:
    with _open(info.path) as file:
        data = _data_group(info.path, file)
        for demo in demos:
            yield _read_demo(info, data[demo], state_keys, cameras, fps)


def _read_demo(info: RobomimicInfo, group: h5py.Group, state_keys: tuple[str, ...],
               cameras: tuple[str, ...], fps: float) -> RecordedEpisode:
    path, demo = info.path, group.name.rsplit("/", 1)[-1]
    actions = _read(path, _dataset(path, group, "actions"))
    frames = len(actions)
    state_arrays, image_arrays = _obs_arrays(path, group, state_keys, cameras)
    for dataset in state_arrays + image_arrays:
        if len(dataset) != frames:
            raise RobotDataError(f"{path}: key {dataset.name!r}: {len(dataset)} frames, but "
                                 f"{frames} actions")
    parts = [_read(path, dataset).reshape(frames, -1).astype(np.float32) for dataset in state_arrays]
    states = np.concatenate(parts, axis=1) if parts else np.zeros((frames, 0), np.float32)
    images = {key: _read(path, dataset) for key, dataset in zip(cameras, image_arrays)}
    rewards = _read(path, group["rewards"]) if "rewards" in group else None
    metadata: dict[str, Any] = {
        "state_keys": {key: part.shape[1] for key, part in zip(state_keys, parts)},
        "masks": sorted(name for name, members in info.masks.items() if demo in members),
    }
    if "dones" in group:
        metadata["dones"] = _read(path, group["dones"]).astype(int).reshape(-1).tolist()
    return RecordedEpisode(states=states, actions=actions.reshape(frames, -1), cameras=images, fps=fps,
                           rewards=rewards, name=demo, source=str(path), metadata=metadata)


def _obs_arrays(path: Path, group: h5py.Group, state_keys: tuple[str, ...],
                cameras: tuple[str, ...]) -> tuple[list[h5py.Dataset], list[h5py.Dataset]]:
    """One demo's obs datasets for these state keys and cameras, each checked to be of its kind
    (nothing read)."""
    obs = group.get("obs")
    obs = obs if isinstance(obs, h5py.Group) else {}

    def array(key: str) -> h5py.Dataset:
        dataset = obs.get(key)
        if not isinstance(dataset, h5py.Dataset):
            raise RobotDataError(f"{path}: key '{group.name}/obs/{key}': missing "
                                 f"(obs keys: {sorted(obs) or 'none'})")
        return dataset

    state_arrays = [array(key) for key in state_keys]
    for dataset in state_arrays:
        if dataset.ndim not in (1, 2):
            raise RobotDataError(f"{path}: key {dataset.name!r}: expected a low-dim (N,) or (N, D) "
                                 f"array for the states, found shape {dataset.shape}")
    image_arrays = [array(key) for key in cameras]
    for dataset in image_arrays:
        _check_image(f"{path}: key {dataset.name!r}", dataset.dtype, dataset.shape)
    return state_arrays, image_arrays


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise RobotDataError(f"{path}: file missing")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise RobotDataError(f"{path}: not an HDF5 file ({err})") from None


def _data_group(path: Path, file: h5py.File) -> h5py.Group:
    data = file.get("data")
    if not isinstance(data, h5py.Group):
        raise RobotDataError(f"{path}: key 'data': expected the group of demos, found "
                             f"{'nothing' if data is None else type(data).__name__}")
    return data


def _demo_names(data: h5py.Group) -> tuple[str, ...]:
    numbered = [(int(match[1]), name) for name in data
                if (match := _DEMO_NAME.fullmatch(name)) and isinstance(data.get(name), h5py.Group)]
    return tuple(name for _, name in sorted(numbered))


def _env_args(path: Path, data: h5py.Group) -> dict[str, Any]:
    raw = data.attrs.get("env_args")
    if raw is None:
        return {}
    try:
        env_args = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except json.JSONDecodeError as err:
        raise RobotDataError(f"{path}: attribute 'data.env_args': expected a JSON string ({err})") from None
    if not isinstance(env_args, dict):
        raise RobotDataError(f"{path}: attribute 'data.env_args': expected a JSON object, found "
                             f"{type(env_args).__name__}")
    return env_args


def _masks(path: Path, file: h5py.File, demos: set[str]) -> dict[str, tuple[str, ...]]:
    group = file.get("mask")
    if group is None:
        return {}
    masks = {}
    for name, dataset in group.items():
        if not isinstance(dataset, h5py.Dataset):
            raise RobotDataError(f"{path}: key {dataset.name!r}: expected an array of demo names, "
                                 f"found a group")
        members = tuple(_text(value) for value in np.asarray(_read(path, dataset)).reshape(-1))
        for demo in members:
            if demo not in demos:
                raise RobotDataError(f"{path}: key {dataset.name!r}: names demo {demo!r}, which is not "
                                     f"in 'data'")
        masks[name] = members
    return masks


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _obs_key_shapes(path: Path, demo: h5py.Group) -> tuple[dict[str, tuple[int, ...]], ...]:
    """(low-dim, image, other) obs keys of one demo -> per-frame shape."""
    low_dim: dict[str, tuple[int, ...]] = {}
    images: dict[str, tuple[int, ...]] = {}
    others: dict[str, tuple[int, ...]] = {}
    obs = demo.get("obs")
    for key, dataset in (obs.items() if isinstance(obs, h5py.Group) else ()):
        if not isinstance(dataset, h5py.Dataset):
            raise RobotDataError(f"{path}: key {dataset.name!r}: expected an array, found a group")
        shape = tuple(dataset.shape[1:])
        if _is_image(dataset.dtype, dataset.shape):
            images[key] = shape
        elif dataset.ndim in (1, 2):
            low_dim[key] = shape
        else:
            others[key] = shape
    return low_dim, images, others


def _is_image(dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    return dtype == np.uint8 and len(shape) == 4 and shape[3] == 3


def _check_image(where: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if not _is_image(dtype, shape):
        raise RobotDataError(f"{where}: expected (N, H, W, 3) uint8 images, found {dtype} {tuple(shape)}")


def _dataset(path: Path, group: h5py.Group, key: str) -> h5py.Dataset:
    dataset = group.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise RobotDataError(f"{path}: key '{group.name}/{key}': "
                             f"{'missing' if dataset is None else 'expected an array, found a group'}")
    return dataset


def _read(path: Path, dataset: h5py.Dataset) -> np.ndarray:
    try:
        return dataset[()]
    except (OSError, ValueError) as err:
        raise RobotDataError(f"{path}: key {dataset.name!r}: unreadable ({err})") from None


# --- preferences --------------------------------------------------------------------------


def quality_preferences(masks: Mapping[str, Sequence[str]],
                        levels: Sequence[str] = QUALITY_LEVELS) -> list[QualityPreference]:
    """Every (demo in a higher level ≻ demo in a lower level) pair of the quality masks.

    ``levels`` names masks best first; those not in ``masks`` are skipped. With all three of
    better/okay/worse that is |better|·|okay| + |better|·|worse| + |okay|·|worse| pairs, in
    level order then mask order. A demo listed by two levels raises `RobotDataError`.
    """
    present = [(level, list(dict.fromkeys(masks[level]))) for level in levels if level in masks]
    level_of: dict[str, str] = {}
    for level, demos in present:
        for demo in demos:
            if demo in level_of:
                raise RobotDataError(f"masks {level_of[demo]!r} and {level!r}: both list demo {demo!r}; "
                                     f"a demo has one quality level")
            level_of[demo] = level
    return [
        QualityPreference(preferred=better, rejected=worse, preferred_mask=high, rejected_mask=low)
        for i, (high, better_demos) in enumerate(present)
        for low, worse_demos in present[i + 1:]
        for better in better_demos
        for worse in worse_demos
    ]


# --- writing ------------------------------------------------------------------------------


def write_robomimic(
    episodes: Iterable[RecordedEpisode],
    path: str | os.PathLike[str],
    env_args: Mapping[str, Any] | None = None,
    masks: Mapping[str, Sequence[str]] | None = None,
    state_keys: Mapping[str, int] | None = None,
) -> Path:
    """Write episodes as a robomimic file, one episode in memory at a time, and return its path.

    ``state_keys``: obs key -> width; the states (N, D) are split into these keys in order
    (widths summing to D; None: one key "state" of width D). Cameras become image obs keys,
    ``next_obs`` is ``obs`` one frame on (the last frame repeated), rewards are written when
    the episode has them, and dones are the episode's metadata ``dones`` (else 1 on the last
    frame only). An episode named ``demo_N`` keeps its name; others are named ``demo_<i>`` by
    position. ``masks``: filter key -> names of written demos. The file is written to a
    temporary sibling, fsynced and renamed into place, so a crash leaves no partial file.
    """
    path = Path(path)
    tmp = temp_path(path, ".hdf5")
    try:
        with h5py.File(tmp, "w-") as file:
            data = file.create_group("data")
            total, names = 0, set()
            for index, episode in enumerate(episodes):
                name = episode.name if _DEMO_NAME.fullmatch(episode.name) else f"demo_{index}"
                if name in names:
                    raise RobotDataError(f"{path}: episode {index} ({episode.name!r}): demo {name!r} "
                                         f"written twice")
                names.add(name)
                _write_demo(path, data.create_group(name), episode, state_keys)
                total += episode.length
            data.attrs["total"] = total
            data.attrs["env_args"] = json.dumps(dict(env_args or {}))
            for mask, demos in (masks or {}).items():
                for demo in demos:
                    if demo not in names:
                        raise RobotDataError(f"{path}: mask {mask!r}: names demo {demo!r}, which is "
                                             f"not among the demos written")
                file.create_dataset(f"mask/{mask}", data=np.array(list(demos), dtype="S"))
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _write_demo(path: Path, group: h5py.Group, episode: RecordedEpisode,
                state_keys: Mapping[str, int] | None) -> None:
    where = f"{path}: episode {episode.name!r}"
    frames, width = episode.states.shape
    widths = dict(state_keys) if state_keys is not None else {DEFAULT_STATE_KEY: width}
    if sum(widths.values()) != width:
        raise RobotDataError(f"{where}: state_keys: widths {widths} sum to {sum(widths.values())}, "
                             f"but the states have {width} columns")
    clashes = set(widths) & set(episode.cameras)
    if clashes:
        raise RobotDataError(f"{where}: obs keys {sorted(clashes)}: both a state key and a camera")
    observations: dict[str, np.ndarray] = {}
    start = 0
    for key, key_width in widths.items():
        observations[key] = episode.states[:, start:start + key_width]
        start += key_width
    for camera, video in episode.cameras.items():
        images = np.asarray(video)
        _check_image(f"{where}: camera {camera!r}", images.dtype, images.shape)
        observations[camera] = images
    for key, values in observations.items():
        group.create_dataset(f"obs/{key}", data=values)
        group.create_dataset(f"next_obs/{key}", data=np.concatenate([values[1:], values[-1:]]))
    group.create_dataset("actions", data=episode.actions)
    if episode.rewards is not None:
        group.create_dataset("rewards", data=episode.rewards)
    group.create_dataset("dones", data=_dones(where, episode))
    group.attrs["num_samples"] = frames


def _dones(where: str, episode: RecordedEpisode) -> np.ndarray:
    recorded = episode.metadata.get("dones")
    if recorded is None:
        dones = np.zeros(episode.length, np.int64)
        dones[-1] = 1
        return dones
    dones = np.asarray(recorded, dtype=np.int64).reshape(-1)
    if len(dones) != episode.length:
        raise RobotDataError(f"{where}: metadata 'dones': {len(dones)} values, but {episode.length} frames")
    return dones
