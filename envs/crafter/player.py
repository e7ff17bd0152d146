"""A scripted Crafter player of controllable quality.

The competent player reads the game's own state (world map, creatures, inventory), not the
observation. It keeps itself alive (drinks below 4 drink until 8, hunts a cow below 4 food,
sleeps below 3 energy, fights an adjacent zombie) and otherwise works down a plan: collect
wood, place a table, make a wood pickaxe and sword, collect a sapling and plant it, collect
stone, place one stone, make a stone pickaxe and sword, collect coal, place a furnace,
collect iron, make iron tools, then gather wood. It walks by breadth-first search over the
free cells of the map.

`violate` keeps the plan but does what the task's hidden preference is against:
- achieve: lies down to sleep in the open as soon as dusk falls (daylight below `DUSK`),
  where zombies find it (a zombie hits a sleeper for 7 health instead of 2);
- thrift: places another table whenever it holds 2 wood, and another stone whenever it holds
  one, half of the time (every table and stone after the first is a needless placement).
"""

from __future__ import annotations

from typing import Callable

import gymnasium
import numpy as np
from crafter import constants, objects

from envs.crafter.game import ACTIONS, CrafterEnv

_MOVES = {(-1, 0): "move_left", (1, 0): "move_right", (0, -1): "move_up", (0, 1): "move_down"}
_ACTION = {name: index for index, name in enumerate(ACTIONS)}
DUSK = 0.5
"""Daylight below which the violating achiever goes to sleep."""
_EXPLORE_STEPS = 8
"""Steps the explorer keeps one direction when nothing on the plan is in reach."""


class ScriptedPlayer:
    """obs -> action (1,) int64. With probability `quality` the competent player's action,
    otherwise a uniformly random one (quality 0: uniformly random; 1: always competent)."""

    def __init__(self, env: gymnasium.Env, quality: float = 1.0, violate: bool = False, seed: int = 0) -> None:
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality: expected a number in [0, 1], found {quality!r}")
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, CrafterEnv):
            raise ValueError(f"env: expected a CrafterEnv, found {type(unwrapped).__name__}")
        self.env, self.quality, self.violate = unwrapped, quality, violate
        self.rng = np.random.default_rng(seed)
        self._thirsty = self._hungry = False
        self._explore: tuple[tuple[int, int], int] = ((0, 1), 0)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.rng.random() < self.quality:
            return np.array([_ACTION[self.competent_action()]], dtype=np.int64)
        return np.array([self.rng.integers(len(ACTIONS))], dtype=np.int64)

    def competent_action(self) -> str:
        """The competent player's next action name (see the module docstring)."""
        game = self.env.game
        self.player, self.world = game._player, game._world
        self.inventory, self.achievements = self.player.inventory, self.player.achievements
        if self.player.sleeping:
            return "noop"
        if self.violate and self.env.task == "achieve" and self.world.daylight < DUSK:
            if self.inventory["energy"] < constants.items["energy"]["max"]:
                return "sleep"
        action = self._survive()
        if action is not None:
            return action
        if self.violate and self.env.task == "thrift":
            action = self._waste()
            if action is not None:
                return action
        for step in self._plan():
            action = step()
            if action is not None:
                return action
        return self._wander()

    # --- what to do -------------------------------------------------------------------

    def _survive(self) -> str | None:
        zombie = self._adjacent(self._creatures(objects.Zombie))
        if zombie is not None:
            return self._face_and_do(zombie)
        self._thirsty = self.inventory["drink"] < 8 if self._thirsty else self.inventory["drink"] < 4
        self._hungry = self.inventory["food"] < 8 if self._hungry else self.inventory["food"] < 4
        if self._thirsty:
            action = self._collect(self._material("water"))
            if action is not None:
                return action
        if self._hungry:
            action = self._collect(self._creatures(objects.Cow))
            if action is not None:
                return action
        if self.inventory["energy"] < 3:
            return "sleep"
        return None

    def _waste(self) -> str | None:
        if self.rng.random() < 0.5:
            if self.achievements["place_table"] and self.inventory["wood"] >= 2:
                return self._place("table")
            if self.achievements["place_stone"] and self.inventory["stone"] >= 1:
                return self._place("stone")
        return None

    def _plan(self) -> list[Callable[[], str | None]]:
        inv, done = self.inventory, self.achievements
        return [
            lambda: None if done["place_table"] else (self._place("table") if inv["wood"] >= 2 else self._gather("wood")),
            lambda: self._make("wood_pickaxe"),
            lambda: self._make("wood_sword"),
            lambda: None if done["place_plant"] else (
                self._place("plant") if inv["sapling"] else self._collect(self._material("grass"))),
            lambda: None if done["place_stone"] else (self._place("stone") if inv["stone"] else self._gather("stone")),
            lambda: self._make("stone_pickaxe"),
            lambda: self._make("stone_sword"),
            lambda: None if inv["coal"] else self._gather("coal"),
            lambda: None if done["place_furnace"] else (
                self._place("furnace") if self._has(constants.place["furnace"]["uses"]) else self._gather("stone")),
            lambda: None if inv["iron"] else self._gather("iron"),
            lambda: self._make("iron_pickaxe"),
            lambda: self._make("iron_sword"),
            lambda: self._gather("wood"),
        ]

    def _make(self, tool: str) -> str | None:
        """Make `tool` once: gather what it uses, walk next to what it needs nearby, make it."""
        if self.inventory[tool]:
            return None
        recipe = constants.make[tool]
        for item, amount in recipe["uses"].items():
            if self.inventory[item] < amount:
                return self._gather(item)
        if not self._near(self.player.pos, recipe["nearby"]):
            return self._walk_to_near(recipe["nearby"])
        return f"make_{tool}"

    def _gather(self, item: str) -> str | None:
        """Collect one more of `item` from the nearest reachable source, if the tools allow."""
        source = next((m for m, info in constants.collect.items() if item in info["receive"]), None)
        if source is None or not self._has(constants.collect[source]["require"]):
            return None
        return self._collect(self._material(source))

    def _place(self, what: str) -> str | None:
        """Place `what` at the facing cell, turning (or stepping) towards a cell it may go on."""
        where = constants.place[what]["where"]
        facing = tuple(self.player.facing)
        for direction in (facing, *(d for d in _MOVES if d != facing)):
            material, obj = self.world[self.player.pos + np.array(direction)]
            # Turning towards lava would step into it.
            if material in where and obj is None and (direction == facing or material != "lava"):
                return f"place_{what}" if direction == facing else _MOVES[direction]
        return self._wander()

    def _wander(self) -> str:
        direction, left = self._explore
        if left <= 0 or not self._free(self.player.pos + np.array(direction)):
            direction = list(_MOVES)[self.rng.integers(len(_MOVES))]
            left = _EXPLORE_STEPS
        self._explore = (direction, left - 1)
        return _MOVES[direction]

    # --- where things are: boolean (area_x, area_y) maps of the world ------------------

    def _has(self, items: dict[str, int]) -> bool:
        return all(self.inventory[item] >= amount for item, amount in items.items())

    def _material(self, name: str) -> np.ndarray:
        return (self.world._mat_map == self.world._mat_ids[name]) & (self.world._obj_map == 0)

    def _creatures(self, kind: type) -> np.ndarray:
        found = np.zeros(self.world.area, dtype=bool)
        for obj in self.world.objects:
            if isinstance(obj, kind):
                found[tuple(obj.pos)] = True
        return found

    def _free_map(self) -> np.ndarray:
        walkable = [self.world._mat_ids[name] for name in constants.walkable]
        return np.isin(self.world._mat_map, walkable) & (self.world._obj_map == 0)

    def _near(self, pos: np.ndarray, materials: list[str]) -> bool:
        around, _ = self.world.nearby(pos, 1)
        return all(material in around for material in materials)

    def _free(self, pos: np.ndarray) -> bool:
        material, obj = self.world[pos]
        return material in constants.walkable and obj is None

    def _adjacent(self, targets: np.ndarray) -> tuple[int, int] | None:
        facing = tuple(self.player.facing)
        for direction in (facing, *(d for d in _MOVES if d != facing)):
            x, y = self.player.pos + np.array(direction)
            if 0 <= x < targets.shape[0] and 0 <= y < targets.shape[1] and targets[x, y]:
                return direction
        return None

    def _face_and_do(self, direction: tuple[int, int]) -> str:
        # Moving towards an occupied or unwalkable cell only turns the player.
        return "do" if direction == tuple(self.player.facing) else _MOVES[direction]

    def _collect(self, targets: np.ndarray) -> str | None:
        """Face and hit the nearest target cell; None when none is reachable."""
        direction = self._adjacent(targets)
        if direction is None:
            return self._walk_to(_dilate(targets, diagonal=False))
        facing = tuple(self.player.facing)
        if direction != facing and self._free(self.player.pos + np.array(direction)):
            # A walkable target (grass) would be stepped on: hit one only when facing it.
            return "do" if self._adjacent(targets) == facing else _MOVES[direction]
        return self._face_and_do(direction)

    def _walk_to_near(self, materials: list[str]) -> str | None:
        near = np.ones(self.world.area, dtype=bool)
        for material in materials:
            near &= _dilate(self.world._mat_map == self.world._mat_ids[material], diagonal=True)
        return self._walk_to(near)

    def _walk_to(self, goals: np.ndarray) -> str | None:
        """First move of a shortest walk over free cells to a free cell of `goals` (a
        breadth-first wave from the goals back to the player); None when none is reachable."""
        free = self._free_map()
        reached = frontier = goals & free
        neighbours = []
        facing = tuple(self.player.facing)
        for direction in (facing, *(d for d in _MOVES if d != facing)):
            x, y = self.player.pos + np.array(direction)
            if 0 <= x < free.shape[0] and 0 <= y < free.shape[1]:
                neighbours.append((direction, (x, y)))
        while frontier.any():
            for direction, cell in neighbours:
                if frontier[cell]:
                    return _MOVES[direction]
            frontier = _dilate(frontier, diagonal=False) & free & ~reached
            reached = reached | frontier
        return None


def _dilate(cells: np.ndarray, diagonal: bool) -> np.ndarray:
    """Cells within one step of a True cell, 4-neighbourhood or (diagonal) 8-neighbourhood;
    the True cells themselves are kept only with `diagonal`."""
    out = cells.copy() if diagonal else np.zeros_like(cells)
    out[1:] |= cells[:-1]
    out[:-1] |= cells[1:]
    out[:, 1:] |= cells[:, :-1]
    out[:, :-1] |= cells[:, 1:]
    if diagonal:
        out[1:, 1:] |= cells[:-1, :-1]
        out[:-1, :-1] |= cells[1:, 1:]
        out[1:, :-1] |= cells[:-1, 1:]
        out[:-1, 1:] |= cells[1:, :-1]
    return out
