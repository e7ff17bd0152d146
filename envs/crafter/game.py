"""Crafter (danijar/crafter 1.8.3) as a gymnasium environment with ground-truth preference
rewards.

Reproducibility. Crafter seeds one `numpy.random.RandomState` per episode,
`hash((seed, episode)) % (2**31 - 1)`, and draws world generation, creature moves, sapling
luck and spawn/despawn balancing from it; the world generated from a seed is reproducible.
Two things in crafter 1.8.3 make the same seed and actions diverge all the same:
- Every 10 steps the balancing visits the creatures of each chunk in the iteration order of a
  `set` of objects hashed by identity (memory address), and picks the one to despawn by an
  index into that order: which zombie, skeleton or cow disappears differs between processes.
- At night, drawing a frame adds noise drawn from the world's generator, so a frame drawn
  beyond the one observation per step (a larger `render()`) shifts every later draw.
`CrafterEnv` removes both: its game visits creatures in order of position, and a `render()`
at a size other than the observation's restores the generator's state afterwards. With those,
`reset(seed=s)` and the same actions give the same episode, in any process and with either
observation; `reset(seed=s)` starts the world `crafter.Env(seed=s).reset()` starts, and a
`reset()` without a seed continues crafter's own episode sequence of that seed.
"""

from __future__ import annotations

from typing import Any

import envs.legacy_gym  # noqa: F401  (before crafter, which imports gym 0.26)
import crafter
import gymnasium
import numpy as np
from crafter import constants
from gymnasium import spaces

from envs.registration import check_choice

TASKS = ("achieve", "thrift")
OBSERVATIONS = ("state", "pixels")
ACHIEVEMENTS: tuple[str, ...] = tuple(constants.achievements)
"""The 22 achievements, in crafter's order (alphabetical)."""
ITEMS: tuple[str, ...] = tuple(constants.items)
"""The 16 inventory entries: health, food, drink, energy, then materials and tools."""
ACTIONS: tuple[str, ...] = tuple(constants.actions)
"""The 17 actions: noop, move_left/right/up/down, do, sleep, place_*, make_*."""
ITEM_MAX = 9
"""Every inventory count lies in [0, 9]."""
EPISODE_STEPS = 500
"""Default episode length (crafter's own default is 10,000)."""

HEALTH_PENALTY = 0.5
"""achieve: ground-truth reward lost per health point lost."""
WASTE_PENALTY = 0.5
"""thrift: ground-truth reward lost per needless placement (a table or stone after the first)."""
WASTED_PLACEMENTS = ("place_table", "place_stone")

VIEW_RADIUS = 4
"""The state's view of the map covers the (2·4+1)² = 81 cells centred on the player (crafter
shows 9×7 of them on screen)."""
SEMANTIC_CLASSES = 18
"""Crafter's semantic ids 1..18: water, grass, stone, path, sand, tree, lava, coal, iron,
diamond, table, furnace, player, cow, zombie, skeleton, arrow, plant (0: outside the world)."""
COUNT_SCALE = 500
"""Achievement counts are encoded as log(1 + count) / log(1 + 500), clipped to 1."""
_FACINGS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_ONE_HOT = np.eye(SEMANTIC_CLASSES + 1, dtype=np.float32)[:, 1:]
"""Row i: the one-hot code of semantic id i (all zeros for 0, outside the world)."""
_WIDTH = 2 * VIEW_RADIUS + 1
_OFFSETS = np.stack(np.meshgrid(np.arange(_WIDTH), np.arange(_WIDTH), indexing="ij"), -1).reshape(-1, 2) - VIEW_RADIUS
"""(81, 2) (dx, dy) of the view's cells, in the order of the (x, y) window raveled."""
_BY_DISTANCE = np.argsort(np.abs(_OFFSETS).sum(1), kind="stable")
"""The view's cells, nearest to the player first (Manhattan distance; ties in raveled order)."""
_OFFSETS_BY_DISTANCE = (_OFFSETS[_BY_DISTANCE] / VIEW_RADIUS).astype(np.float32)

STATE_LAYOUT: dict[str, slice] = {}
"""Rows of the state vector, float32 in [-1, 1]."""
_offset = 0
for _name, _size in (
    ("inventory", len(ITEMS)),                 # count / 9, in ITEMS order
    ("unlocked", len(ACHIEVEMENTS)),           # 1 if unlocked this episode, ACHIEVEMENTS order
    ("achievement_counts", len(ACHIEVEMENTS)), # log(1 + times achieved) / log(1 + COUNT_SCALE)
    ("achieved", len(ACHIEVEMENTS)),           # 1 if the last step achieved it (again or not)
    ("newly_unlocked", len(ACHIEVEMENTS)),     # 1 if the last step achieved it the first time
    ("inventory_change", len(ITEMS)),          # change by the last step / 9
    ("facing", len(_FACINGS)),                 # one-hot: left, right, up, down
    ("sleeping", 1),
    ("daylight", 1),                           # crafter's daylight: 1 noon ... 0 midnight
    ("facing_cell", SEMANTIC_CLASSES),         # one-hot semantic class of the cell faced
    ("nearest", 3 * SEMANTIC_CLASSES),
    # per semantic class (SEMANTIC_CLASSES order), of its nearest cell (Manhattan distance)
    # within VIEW_RADIUS: [present, dx / 4, dy / 4] (x right, y down), zeros if none
):
    STATE_LAYOUT[_name] = slice(_offset, _offset + _size)
    _offset += _size
STATE_DIM = _offset
"""198 = 16 + 3·22 + 22 + 16 + 4 + 1 + 1 + 18 + 3·18."""


class OrderedBalanceGame(crafter.Env):
    """`crafter.Env` whose spawn/despawn balancing visits a chunk's creatures in order of
    position rather than in a set's identity-hash order (see the module docstring)."""

    def _balance_chunk(self, chunk, objs):
        super()._balance_chunk(chunk, sorted(objs, key=lambda obj: tuple(obj.pos)) if len(objs) > 1 else list(objs))


def placement_waste(before: dict[str, int], after: dict[str, int]) -> int:
    """Tables and stones placed between two achievement-count dicts beyond the first of each."""
    return sum(max(0, after[name] - max(before[name], 1)) for name in WASTED_PLACEMENTS)


def preference_reward(task: str, newly_unlocked: int, health_lost: float, wasted: int) -> float:
    """Ground-truth preference reward of one step: +1 per achievement unlocked for the first
    time in the episode, minus `HEALTH_PENALTY` per health point lost (achieve) or minus
    `WASTE_PENALTY` per needless table or stone placed (thrift)."""
    check_choice("task", task, TASKS)
    penalty = HEALTH_PENALTY * health_lost if task == "achieve" else WASTE_PENALTY * wasted
    return float(newly_unlocked - penalty)


def state_vector(inventory: dict[str, int], achievements: dict[str, int], facing: tuple[int, int],
                 sleeping: bool, daylight: float, semantic: np.ndarray, player_pos: np.ndarray,
                 last_inventory: dict[str, int], last_achievements: dict[str, int]) -> np.ndarray:
    """The state observation, (STATE_DIM,) float32 in [-1, 1], laid out as `STATE_LAYOUT`;
    `semantic` is crafter's (area_x, area_y) int map of semantic ids; `last_*` are the
    inventory and achievement counts before the last step (the same dicts at reset)."""
    counts = np.fromiter(map(achievements.__getitem__, ACHIEVEMENTS), np.float32, len(ACHIEVEMENTS))
    last_counts = np.fromiter(map(last_achievements.__getitem__, ACHIEVEMENTS), np.float32, len(ACHIEVEMENTS))
    items = np.fromiter(map(inventory.__getitem__, ITEMS), np.float32, len(ITEMS))
    last_items = np.fromiter(map(last_inventory.__getitem__, ITEMS), np.float32, len(ITEMS))
    r = VIEW_RADIUS
    x, y = int(player_pos[0]), int(player_pos[1])
    window = np.zeros((_WIDTH, _WIDTH), dtype=semantic.dtype)  # id 0 outside the world
    x0, x1, y0, y1 = max(x - r, 0), min(x + r + 1, semantic.shape[0]), max(y - r, 0), min(y + r + 1, semantic.shape[1])
    window[x0 - (x - r):x1 - (x - r), y0 - (y - r):y1 - (y - r)] = semantic[x0:x1, y0:y1]
    by_distance = _ONE_HOT[window.ravel()[_BY_DISTANCE]]  # (81, SEMANTIC_CLASSES), nearest cells first
    present = by_distance.max(0)
    nearest = _OFFSETS_BY_DISTANCE[by_distance.argmax(0)] * present[:, None]  # first cell of each class

    state = np.empty(STATE_DIM, dtype=np.float32)
    layout = STATE_LAYOUT
    state[layout["inventory"]] = items / ITEM_MAX
    state[layout["unlocked"]] = counts > 0
    state[layout["achievement_counts"]] = np.minimum(np.log1p(counts) / np.log1p(COUNT_SCALE), 1.0)
    state[layout["achieved"]] = counts > last_counts
    state[layout["newly_unlocked"]] = (counts > 0) & (last_counts == 0)
    state[layout["inventory_change"]] = (items - last_items) / ITEM_MAX
    state[layout["facing"]] = [facing == f for f in _FACINGS]
    state[layout["sleeping"]] = sleeping
    state[layout["daylight"]] = daylight
    state[layout["facing_cell"]] = _ONE_HOT[window[r + facing[0], r + facing[1]]]
    view = state[layout["nearest"]].reshape(SEMANTIC_CLASSES, 3)
    view[:, 0] = present
    view[:, 1:] = nearest
    return state


class CrafterEnv(gymnasium.Env):
    """Crafter with a ground-truth preference reward.

    Observations:
        state: (STATE_DIM,) float32 in [-1, 1], see `STATE_LAYOUT`.
        pixels: (size, size, 3) uint8, crafter's own observation (local view and inventory).
    Actions: (1,) int64 in [0, 17) (`MultiDiscrete([17])`, so that actions are vectors like
        every other suite's), indexing `ACTIONS`; a scalar or a float holding an integer works too.
    Reward: `preference_reward` of the task ("achieve": achievements minus lost health;
        "thrift": achievements minus needless tables and stones); `info` repeats it as
        `gt_reward` and carries crafter's `inventory`, `achievements` (counts), `discount`,
        `semantic`, `player_pos` and `reward` (crafter's own), plus `unlocked` (names
        unlocked this episode), `health_lost` and `wasted_placements` (this step),
        `eval_score` (share of the 22 achievements unlocked), `task` and `embodiment`.
    Episodes terminate when the player dies and truncate after `length` steps.
    `render()` returns the current frame: the observation's (size, size, 3) frame, or crafter's
    drawing at `render_size` when that differs, whatever the observation type.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "achieve",
        observation: str = "state",
        render_mode: str | None = None,
        length: int = EPISODE_STEPS,
        size: int = 64,
        render_size: int | None = None,
        area: tuple[int, int] = (64, 64),
        view: tuple[int, int] = (9, 9),
    ) -> None:
        check_choice("task", task, TASKS)
        check_choice("observation", observation, OBSERVATIONS)
        if render_mode is not None:
            check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        for name, value in (("length", length), ("size", size), ("render_size", render_size or size)):
            if value < 1:
                raise ValueError(f"{name}: expected an int >= 1, found {value}")
        self.task, self.observation, self.render_mode = task, observation, render_mode
        self.length, self.size, self.render_size = length, size, render_size or size
        # Seeded for real by reset(); an explicit seed keeps crafter off numpy's global generator.
        self.game = OrderedBalanceGame(area=area, view=view, size=(size, size), length=length, seed=0)
        self.action_space = spaces.MultiDiscrete([len(ACTIONS)])
        self.observation_space = (
            spaces.Box(0, 255, shape=(size, size, 3), dtype=np.uint8) if observation == "pixels"
            else spaces.Box(-1.0, 1.0, shape=(STATE_DIM,), dtype=np.float32)
        )
        self._frame: np.ndarray | None = None
        self._achievements: dict[str, int] | None = None
        self._inventory: dict[str, int] = {}
        self._unlocked: set[str] = set()
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode. `reset(seed=s)` generates the world crafter generates for seed s
        (its first episode); `reset()` continues that seed's episode sequence."""
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self.game._seed = int(seed if seed is not None else self.np_random.integers(2**31 - 1))
            self.game._episode = 0
            self._seeded = True
        self._frame = self.game.reset()
        player = self.game._player
        self._achievements, self._inventory = dict(player.achievements), dict(player.inventory)
        self._unlocked = set()
        info = {"inventory": dict(self._inventory), "achievements": dict(self._achievements),
                "discount": 1.0, "semantic": self.game._sem_view(), "player_pos": player.pos,
                "reward": 0.0}
        return self._observe(info), self._extend(info, gt_reward=0.0, health_lost=0, wasted=0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._achievements is None or self.game._step >= self.length or self.game._player.health <= 0:
            raise RuntimeError(f"{self.spec.id if self.spec else type(self).__name__}: step() called with no "
                               "episode in progress (before reset() or after it ended); call reset()")
        self._frame, _, done, info = self.game.step(self._action_index(action))
        achievements = info["achievements"]
        newly = {name for name, count in achievements.items() if count > 0} - self._unlocked
        self._unlocked |= newly
        health_lost = max(0, self._inventory["health"] - info["inventory"]["health"])
        wasted = placement_waste(self._achievements, achievements)
        reward = preference_reward(self.task, len(newly), health_lost, wasted)
        terminated = info["discount"] == 0.0
        obs = self._observe(info)
        self._achievements, self._inventory = dict(achievements), dict(info["inventory"])
        return obs, reward, terminated, bool(done and not terminated), self._extend(info, reward, health_lost, wasted)

    def render(self) -> np.ndarray:
        """(render_size, render_size, 3) uint8."""
        if self._frame is None:
            raise RuntimeError("render() called before reset()")
        if self.render_size == self.size:
            return self._frame
        # Crafter's night noise draws from the world's generator; keep the dynamics untouched.
        random_state = self.game._world.random.get_state()
        frame = self.game.render((self.render_size, self.render_size))
        self.game._world.random.set_state(random_state)
        return frame

    def _action_index(self, action: Any) -> int:
        flat = np.asarray(action).reshape(-1)
        if flat.size != 1 or not float(flat[0]).is_integer() or not 0 <= flat[0] < len(ACTIONS):
            raise ValueError(f"action: expected one integer in [0, {len(ACTIONS)}), found {action!r}")
        return int(flat[0])

    def _observe(self, info: dict[str, Any]) -> np.ndarray:
        if self.observation == "pixels":
            return self._frame
        player = self.game._player
        return state_vector(info["inventory"], info["achievements"], tuple(player.facing), player.sleeping,
                            float(self.game._world.daylight), info["semantic"], info["player_pos"],
                            self._inventory, self._achievements)

    def _extend(self, info: dict[str, Any], gt_reward: float, health_lost: int, wasted: int) -> dict[str, Any]:
        return {**info, "player_pos": np.array(info["player_pos"]), "gt_reward": gt_reward, "unlocked": sorted(self._unlocked), "health_lost": health_lost,
                "wasted_placements": wasted, "eval_score": len(self._unlocked) / len(ACHIEVEMENTS),
                "task": self.task, "embodiment": "Player"}


ZOMBIE_CLASS = 15
"""Crafter's semantic id of a zombie."""


def violates_preference(task: str, observations: np.ndarray) -> bool:
    """Whether an episode's state observations, (T+1, STATE_DIM), go against the task's
    hidden preference: achieve, the player slept with a zombie within `VIEW_RADIUS`; thrift, it
    placed a second table or a second stone."""
    check_choice("task", task, TASKS)
    observations = np.asarray(observations)
    if observations.ndim != 2 or observations.shape[1] != STATE_DIM:
        raise ValueError(f"observations: expected shape (T+1, {STATE_DIM}) state vectors, found {observations.shape}")
    if task == "thrift":
        encoded = observations[-1, STATE_LAYOUT["achievement_counts"]]
        counts = np.rint(np.expm1(encoded * np.log1p(COUNT_SCALE)))
        return bool(any(counts[ACHIEVEMENTS.index(name)] >= 2 for name in WASTED_PLACEMENTS))
    sleeping = observations[:, STATE_LAYOUT["sleeping"]][:, 0] > 0.5
    nearest = observations[:, STATE_LAYOUT["nearest"]].reshape(len(observations), SEMANTIC_CLASSES, 3)
    return bool((sleeping & (nearest[:, ZOMBIE_CLASS - 1, 0] > 0.5)).any())
