"""The delivery domain of Knox et al.: a grid whose cells carry reward features.

A state is a cell `(x, y)` with x the row (0..height−1) and y the column (0..width−1),
indexed `x · width + y`. Four actions move by `ACTIONS[a] = (dx, dy)`. Dynamics are
deterministic, as in the papers' reference implementation (whose 50 MDPs
`load_shared_mdp` reads and whose transition table the tests check against):

- a move off the board or into a house stays put and costs gas only;
- entering a non-terminal cell costs gas plus that cell's features (coin, roadblock, mud);
- entering a terminal cell (goal or sheep) ends the episode with that cell's feature and no gas
  (plus mud for the mud variants);
- terminal cells absorb with reward 0; so do house cells, which no move can enter.

Reward is linear in six features, `REWARD_FEATURES = (gas, goal, sheep, coin, roadblock, mud)`:
r(s, a) = w · φ(s, a). Coins are not consumed: entering a coin cell always pays the coin feature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

BLANK, GOAL, HOUSE, SHEEP, COIN, ROADBLOCK, MUD = 0, 1, 2, 3, 4, 5, 6
MUD_GOAL, MUD_HOUSE, MUD_SHEEP, MUD_COIN, MUD_ROADBLOCK = 7, 8, 9, 10, 11
CELL_NAMES = (
    "blank", "goal", "house", "sheep", "coin", "roadblock",
    "mud", "mud+goal", "mud+house", "mud+sheep", "mud+coin", "mud+roadblock",
)
"""Cell code -> name, as in the shared MDP files."""

TERMINAL_CELLS = frozenset({GOAL, SHEEP, MUD_GOAL, MUD_SHEEP})
BLOCKING_CELLS = frozenset({HOUSE, MUD_HOUSE})

REWARD_FEATURES = ("gas", "goal", "sheep", "coin", "roadblock", "mud")
"""Names of the reward features, in the order of `DeliveryMDP.reward_weights`."""
GAS, GOAL_F, SHEEP_F, COIN_F, ROADBLOCK_F, MUD_F = range(6)

ACTIONS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
"""Action index -> (dx, dy): up, down, left, right in (row, column)."""

GAMMA = 0.999
"""Discount of the papers' delivery MDPs."""

# Features paid for entering a cell (before gas), by cell code.
_CELL_FEATURES = np.zeros((12, 6))
_CELL_FEATURES[[GOAL, MUD_GOAL], GOAL_F] = 1
_CELL_FEATURES[[SHEEP, MUD_SHEEP], SHEEP_F] = 1
_CELL_FEATURES[[COIN, MUD_COIN], COIN_F] = 1
_CELL_FEATURES[[ROADBLOCK, MUD_ROADBLOCK], ROADBLOCK_F] = 1
_CELL_FEATURES[[MUD, MUD_GOAL, MUD_HOUSE, MUD_SHEEP, MUD_COIN, MUD_ROADBLOCK], MUD_F] = 1

SHARED_MDP_IDS = tuple(range(100, 150))
"""Ids of the 50 MDPs of the papers' code release, shipped under shared/data/delivery_mdps."""


def shared_data_dir() -> Path:
    """`<repo>/../shared/data/delivery_mdps`, where the papers' MDPs are kept."""
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "delivery_mdps").resolve()


@dataclass(frozen=True)
class DeliveryMDP:
    """One delivery-domain MDP: a board of cell codes and the true reward weights."""

    board: np.ndarray
    """(height, width) int cell codes (see `CELL_NAMES`)."""
    reward_weights: np.ndarray
    """(6,) float weights over `REWARD_FEATURES`."""
    gamma: float = GAMMA
    """Discount factor."""
    name: str = "delivery"
    """Where the MDP came from, e.g. "MDP_100" or "random-seed-3"."""

    def __post_init__(self) -> None:
        board = np.asarray(self.board)
        if board.ndim != 2 or board.size == 0 or board.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: field 'board': expected a non-empty 2-d integer array, "
                             f"found shape {board.shape} dtype {board.dtype}")
        if board.min() < 0 or board.max() >= len(CELL_NAMES):
            raise ValueError(f"{self.name}: field 'board': expected cell codes 0..{len(CELL_NAMES) - 1}, "
                             f"found range [{board.min()}, {board.max()}]")
        weights = np.asarray(self.reward_weights, dtype=np.float64)
        if weights.shape != (len(REWARD_FEATURES),) or not np.isfinite(weights).all():
            raise ValueError(f"{self.name}: field 'reward_weights': expected {len(REWARD_FEATURES)} finite "
                             f"numbers {REWARD_FEATURES}, found {self.reward_weights!r}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"{self.name}: field 'gamma': expected 0 < gamma < 1, found {self.gamma}")
        object.__setattr__(self, "board", board.astype(np.int64))
        object.__setattr__(self, "reward_weights", weights)

    @property
    def height(self) -> int:
        return int(self.board.shape[0])

    @property
    def width(self) -> int:
        return int(self.board.shape[1])

    @property
    def n_states(self) -> int:
        return self.board.size

    @property
    def n_actions(self) -> int:
        return len(ACTIONS)

    def state_index(self, x: np.ndarray | int, y: np.ndarray | int) -> np.ndarray:
        """Cell (x, y) -> state index x · width + y (elementwise)."""
        return np.asarray(x) * self.width + np.asarray(y)

    def cell(self, state: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """State index -> (x, y) (elementwise)."""
        return np.divmod(np.asarray(state), self.width)

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        h, w = self.board.shape
        cells = self.board.reshape(-1)
        absorbing = np.isin(cells, list(TERMINAL_CELLS | BLOCKING_CELLS))
        x, y = np.divmod(np.arange(h * w), w)
        tx = x[:, None] + ACTIONS[None, :, 0]
        ty = y[:, None] + ACTIONS[None, :, 1]
        inside = (tx >= 0) & (tx < h) & (ty >= 0) & (ty < w)
        target = np.where(inside, np.clip(tx, 0, h - 1) * w + np.clip(ty, 0, w - 1), 0)
        moves = inside & ~np.isin(cells[target], list(BLOCKING_CELLS))
        next_state = np.where(moves, target, np.arange(h * w)[:, None])
        entered = cells[next_state]
        features = np.where(moves[..., None], _CELL_FEATURES[entered], 0.0)
        features[..., GAS] = ~np.isin(entered, list(TERMINAL_CELLS)) | ~moves
        next_state[absorbing] = np.arange(h * w)[absorbing, None]
        features[absorbing] = 0.0
        done = np.isin(cells[next_state], list(TERMINAL_CELLS))
        return next_state, features, absorbing, done

    @property
    def next_state(self) -> np.ndarray:
        """(S, A) int: the state each action leads to."""
        return self._tables[0]

    @property
    def features(self) -> np.ndarray:
        """(S, A, 6) float: reward features φ(s, a) of each transition; 0 in absorbing states."""
        return self._tables[1]

    @property
    def absorbing(self) -> np.ndarray:
        """(S,) bool: terminal (goal, sheep) and blocked (house) cells; they loop with reward 0."""
        return self._tables[2]

    @property
    def done(self) -> np.ndarray:
        """(S, A) bool: the transition ends in a terminal cell (the reference's `done`)."""
        return self._tables[3]

    @property
    def reward(self) -> np.ndarray:
        """(S, A) float: r(s, a) = w · φ(s, a) under the true weights."""
        return self.features @ self.reward_weights

    @property
    def start_states(self) -> np.ndarray:
        """(K,) int: every non-absorbing state, the papers' start-state distribution."""
        return np.flatnonzero(~self.absorbing)

    def segment_states(self, starts: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Roll segments out: starts (...,) states, actions (..., L) ints -> states (..., L+1)."""
        starts, actions = np.asarray(starts), np.asarray(actions)
        states = np.empty(actions.shape[:-1] + (actions.shape[-1] + 1,), dtype=np.int64)
        states[..., 0] = starts
        for t in range(actions.shape[-1]):
            states[..., t + 1] = self.next_state[states[..., t], actions[..., t]]
        return states


def action_index(moves: np.ndarray) -> np.ndarray:
    """(dx, dy) moves (..., 2) -> action indices (...); raises on a move that is not an action."""
    moves = np.asarray(moves)
    match = (moves[..., None, :] == ACTIONS).all(-1)
    if not match.any(-1).all():
        bad = moves[~match.any(-1)][:3].tolist()
        raise ValueError(f"action_index: expected moves among {ACTIONS.tolist()}, found {bad}")
    return match.argmax(-1)


def _field(data: dict, key: str, path: Path):
    if key not in data:
        raise ValueError(f"{path}: missing field '{key}'")
    return data[key]


def load_mdp(path: str | Path) -> DeliveryMDP:
    """Read an MDP json in the shared format (`height`, `width`, `board`, `reward_weights`,
    `actions`, `gamma`); the `transitions` table, if any, is not used here."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such MDP file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    height, width = int(_field(data, "height", path)), int(_field(data, "width", path))
    board = np.asarray(_field(data, "board", path))
    if board.shape != (height, width):
        raise ValueError(f"{path}: field 'board': expected shape (height, width) = ({height}, {width}), "
                         f"found {board.shape}")
    actions = data.get("actions", ACTIONS.tolist())
    if np.asarray(actions).tolist() != ACTIONS.tolist():
        raise ValueError(f"{path}: field 'actions': expected {ACTIONS.tolist()}, found {actions}")
    names = data.get("reward_feature_names", list(REWARD_FEATURES))
    if list(names) != list(REWARD_FEATURES):
        raise ValueError(f"{path}: field 'reward_feature_names': expected {list(REWARD_FEATURES)}, found {names}")
    try:
        return DeliveryMDP(board, np.asarray(_field(data, "reward_weights", path), dtype=np.float64),
                           float(data.get("gamma", GAMMA)), name=path.stem)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _shared_path(name: str, root: str | Path | None) -> Path:
    directory = Path(root) if root is not None else shared_data_dir()
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: the shared delivery MDPs are missing; expected the directory "
            "shared/data/delivery_mdps beside the repository (see its README.md)")
    return directory / name


def load_shared_mdp(mdp_id: int, root: str | Path | None = None) -> DeliveryMDP:
    """The papers' MDP `mdp_id` (100..149) from `root` (default `shared_data_dir()`)."""
    return load_mdp(_shared_path(f"MDP_{mdp_id}.json", root))


def load_shared_transitions(mdp_id: int, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """The reference transition table of MDP `mdp_id` as arrays indexed by (state, action):
    next_state (S, A) int, reward (S, A), done (S, A) bool, features (S, A, 6)."""
    path = _shared_path(f"MDP_{mdp_id}.json", root)
    data = json.loads(path.read_text())
    height, width = int(data["height"]), int(data["width"])
    shape = (height * width, len(ACTIONS))
    table = {"next_state": np.full(shape, -1, dtype=np.int64), "reward": np.zeros(shape),
             "done": np.zeros(shape, dtype=bool), "features": np.zeros(shape + (len(REWARD_FEATURES),))}
    for i, row in enumerate(_field(data, "transitions", path)):
        try:
            s = int(row["state"][0]) * width + int(row["state"][1])
            a = int(row["action"])
            table["next_state"][s, a] = int(row["next_state"][0]) * width + int(row["next_state"][1])
            table["reward"][s, a] = float(row["reward"])
            table["done"][s, a] = bool(row["done"])
            table["features"][s, a] = row["reward_features"]
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: field 'transitions[{i}]': expected state, action, next_state, "
                             f"reward, done, reward_features ({err!r})") from None
    if (table["next_state"] < 0).any():
        raise ValueError(f"{path}: field 'transitions': expected every (state, action) of the "
                         f"{height}x{width} board, some are missing")
    return table


def load_segment_pairs(mdp_id: int, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The papers' segment pairs of MDP `mdp_id`, as arrays for a `DeliveryMDP` of that id:
    starts (N, 2) int state indices and actions (N, 2, L) int action indices."""
    path = _shared_path(f"MDP_{mdp_id}_segment_pairs.npz", root)
    with np.load(path) as archive:
        if "pairs" not in archive.files:
            raise ValueError(f"{path}: missing array 'pairs'; found {archive.files}")
        pairs = archive["pairs"].astype(np.int64)
    if pairs.ndim != 4 or pairs.shape[1] != 2 or pairs.shape[3] != 2:
        raise ValueError(f"{path}: array 'pairs': expected shape (N, 2, 1 + L, 2), found {pairs.shape}")
    width = int(json.loads(_shared_path(f"MDP_{mdp_id}.json", root).read_text())["width"])
    starts = pairs[:, :, 0, 0] * width + pairs[:, :, 0, 1]
    return starts, action_index(pairs[:, :, 1:])


# Knox et al.'s random MDPs draw each weight from a small set; these are the values in the shared MDPs.
WEIGHT_CHOICES = {
    "gas": (-1.0,),
    "goal": (0.0, 1.0, 5.0, 10.0, 50.0),
    "sheep": (-5.0, -10.0, -50.0, -100.0),
    "coin": (1.0,),
    "roadblock": (-2.0, -5.0, -10.0),
    "mud": (-1.0, -2.0, -3.0),
}
"""Possible values of each reward weight in a random MDP."""

CELL_PROBABILITIES = {BLANK: 0.47, ROADBLOCK: 0.33, SHEEP: 0.12, COIN: 0.08}
"""Share of each cell type in a random board (about their shares in the shared MDPs)."""


def random_reward_weights(rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Weights drawn from `WEIGHT_CHOICES`: (6,) or (size, 6)."""
    n = 1 if size is None else size
    weights = np.stack([rng.choice(WEIGHT_CHOICES[f], size=n) for f in REWARD_FEATURES], axis=-1)
    return weights[0] if size is None else weights


def random_mdp(
    rng: np.random.Generator,
    height: int | None = None,
    width: int | None = None,
    mud_probability: float = 0.0,
    house_probability: float = 0.0,
) -> DeliveryMDP:
    """A new random MDP like the papers': one goal, the other cells drawn from
    `CELL_PROBABILITIES` (plus houses and mud when asked), weights from `WEIGHT_CHOICES`.
    Sizes default to a random pick of the shared MDPs' heights (3, 6, 10, 15) and widths (5, 6, 10)."""
    height = int(rng.choice([3, 6, 10, 15])) if height is None else height
    width = int(rng.choice([5, 6, 10])) if width is None else width
    if height < 1 or width < 1 or height * width < 2:
        raise ValueError(f"random_mdp: expected a board of at least 2 cells, found {height}x{width}")
    codes = np.array(list(CELL_PROBABILITIES))
    probs = np.array(list(CELL_PROBABILITIES.values()))
    board = rng.choice(codes, size=(height, width), p=probs / probs.sum())
    board[rng.random(board.shape) < house_probability] = HOUSE
    mud = rng.random(board.shape) < mud_probability
    board[mud] = np.array([MUD, MUD_GOAL, MUD_HOUSE, MUD_SHEEP, MUD_COIN, MUD_ROADBLOCK, MUD])[board[mud]]
    goal = rng.integers(board.size)
    board.reshape(-1)[goal] = MUD_GOAL if mud.reshape(-1)[goal] else GOAL
    return DeliveryMDP(board, random_reward_weights(rng), GAMMA, name="random")
