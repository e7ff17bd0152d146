"""MineRL action dicts as flat vectors, and VPT's quantized camera.

Flat layout, (..., 24) float32 (`FLAT_SIZE`):

    [0:22]   the buttons in `spaces.BUTTONS` order (ESC, attack, back, drop, forward,
             hotbar.1-9, inventory, jump, left, pickItem, right, sneak, sprint,
             swapHands, use): 1.0 pressed, 0.0 not; reading back, a value > 0.5 is pressed
    [22:24]  camera [pitch, yaw] in degrees, in [-180, 180]

VPT's policy sees the camera as 11 bins per axis: degrees clipped to ±10, squashed with a
μ-law (μ = 10), then cut into bins 2 units wide; bin 5 is "no turn". Every function here
takes one action or a batch: a dict of (N,) buttons and (N, 2) camera, or (N, 24) vectors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gymnasium import spaces as gym_spaces

from envs.basalt.spaces import BUTTONS, CAMERA, CAMERA_LIMIT

FLAT_SIZE = len(BUTTONS) + 2
CAMERA_SLICE = slice(len(BUTTONS), FLAT_SIZE)

CAMERA_MAXVAL = 10.0
"""Degrees: VPT clips each camera component to ±CAMERA_MAXVAL before quantizing."""
CAMERA_BINSIZE = 2.0
CAMERA_MU = 10.0
CAMERA_BINS = 11
"""Bins per camera axis: 0 .. 10."""
CAMERA_ZERO_BIN = 5


def flat_action_space() -> gym_spaces.Box:
    """The Box of flat actions: buttons in [0, 1], camera in [-180, 180]."""
    low = np.zeros(FLAT_SIZE, dtype=np.float32)
    high = np.ones(FLAT_SIZE, dtype=np.float32)
    low[CAMERA_SLICE], high[CAMERA_SLICE] = -CAMERA_LIMIT, CAMERA_LIMIT
    return gym_spaces.Box(low, high, dtype=np.float32)


def flatten_action(action: Mapping[str, object]) -> np.ndarray:
    """MineRL action dict -> flat vector.

    `action`: every button as an int (or (N,) ints) and `camera` (2,) (or (N, 2)) degrees
    -> (24,) (or (N, 24)) float32. A missing button or camera raises `KeyError` naming it.
    """
    missing = [name for name in (*BUTTONS, CAMERA) if name not in action]
    if missing:
        raise KeyError(f"action: missing {', '.join(missing)}")
    camera = np.asarray(action[CAMERA], dtype=np.float32)
    buttons = np.stack(
        [np.asarray(action[name], dtype=np.float32) for name in BUTTONS], axis=-1
    )
    if buttons.shape[:-1] != camera.shape[:-1] or camera.shape[-1:] != (2,):
        raise ValueError(
            f"action: buttons of shape {buttons.shape[:-1]} need a camera of shape "
            f"{(*buttons.shape[:-1], 2)}, found {camera.shape}"
        )
    return np.concatenate([buttons, camera], axis=-1)


def unflatten_action(flat: np.ndarray) -> dict[str, np.ndarray]:
    """Flat vector (24,) or (N, 24) -> MineRL action dict: buttons as int64 0/1 (value > 0.5
    is pressed), camera float32 clipped to [-180, 180]."""
    flat = np.asarray(flat, dtype=np.float32)
    if flat.shape[-1:] != (FLAT_SIZE,):
        raise ValueError(f"flat action: expected shape (..., {FLAT_SIZE}), found {flat.shape}")
    action: dict[str, np.ndarray] = {
        name: (flat[..., i] > 0.5).astype(np.int64) for i, name in enumerate(BUTTONS)
    }
    action[CAMERA] = np.clip(flat[..., CAMERA_SLICE], -CAMERA_LIMIT, CAMERA_LIMIT)
    return action


def noop_action() -> dict[str, object]:
    """The action that presses nothing and keeps the camera still."""
    action: dict[str, object] = {name: 0 for name in BUTTONS}
    action[CAMERA] = np.zeros(2, dtype=np.float32)
    return action


def camera_to_bins(camera: np.ndarray) -> np.ndarray:
    """Degrees (..., 2) -> VPT's camera bins (..., 2) int64 in [0, 10] (μ-law, as VPT's
    `CameraQuantizer.discretize`; halves round to even, as `np.round` does there)."""
    clipped = np.clip(np.asarray(camera, dtype=np.float64), -CAMERA_MAXVAL, CAMERA_MAXVAL)
    unit = clipped / CAMERA_MAXVAL
    encoded = np.sign(unit) * np.log1p(CAMERA_MU * np.abs(unit)) / np.log1p(CAMERA_MU)
    return np.round((encoded * CAMERA_MAXVAL + CAMERA_MAXVAL) / CAMERA_BINSIZE).astype(np.int64)


def bins_to_camera(bins: np.ndarray) -> np.ndarray:
    """VPT's camera bins (..., 2) in [0, 10] -> degrees (..., 2) float32 (the inverse
    μ-law, as VPT's `CameraQuantizer.undiscretize`); bin 5 is 0 degrees."""
    bins = np.asarray(bins)
    if bins.size and (bins.min() < 0 or bins.max() >= CAMERA_BINS):
        raise ValueError(
            f"camera bins: expected values in [0, {CAMERA_BINS - 1}], "
            f"found range [{bins.min()}, {bins.max()}]"
        )
    unit = (bins * CAMERA_BINSIZE - CAMERA_MAXVAL) / CAMERA_MAXVAL
    decoded = np.sign(unit) * ((1.0 + CAMERA_MU) ** np.abs(unit) - 1.0) / CAMERA_MU
    return (decoded * CAMERA_MAXVAL).astype(np.float32)
