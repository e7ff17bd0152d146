"""Franka Panda tabletop pushing tasks for RAPL: `group` and `clutter`.

- group: push the two red blocks together into the green goal disk.
- clutter: push the red block into the goal disk without disturbing the blue blocks.

Control. `control="ee"` (default): the action is an xyz delta of the end-effector target,
in [-1, 1]^3 scaled by `EE_STEP` metres and clipped to a box over the table. The target is
turned into joint targets by damped least-squares IK on the end-effector site Jacobian
(position and a hand-down orientation, 6-d error), iterated on a kinematics-only copy of
the commanded pose; the Panda's own position servos then track those joint targets for
`FRAME_SKIP` physics steps. `control="joint"`: the action is a delta of the 7 joint targets,
in [-1, 1]^7 scaled by `JOINT_STEP` radians. The fingers stay closed.

Reward (RAPL's form), per step:
  group:   -(|o0 - g| + |o1 - g|) - |o0 - o1| - ACTION_COST |a|^2 - COLLISION_COST [arm hits table]
  clutter: -|o0 - g| - ACTION_COST |a|^2 - DISTURBANCE_COST sum_j |d_j - d_j(0)| - COLLISION_COST [...]
distances in the table plane (m). `info` carries `gt_reward` and each term.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces

from envs.franka.scene import (
    ARM_JOINTS,
    BLOCK_HALF,
    CAMERA,
    EE_SITE,
    GOAL_RADIUS,
    HAND_DOWN,
    HOME_QPOS,
    SceneSpec,
    build_model,
)

TASKS: tuple[str, ...] = ("group", "clutter")
OBSERVATIONS: tuple[str, ...] = ("state", "pixels")
CONTROLS: tuple[str, ...] = ("ee", "joint")
PIXEL_SIZES: tuple[int, ...] = (112, 224)
SCENES: dict[str, SceneSpec] = {"group": SceneSpec(2, 0), "clutter": SceneSpec(1, 3)}

EPISODE_STEPS = 100
STATE_BOUND = 50.0  # joint speeds (rad/s) stay far below; positions are within 1 m
FRAME_SKIP = 25  # 0.05 s of physics per action: 20 Hz control
EE_STEP = 0.02  # metres per unit of EE action
MAX_LEAD = 0.04  # metres the EE target may lead the hand
JOINT_STEP = 0.05  # radians per unit of joint action
IK_ITERATIONS = 3
IK_DAMPING = 1e-2
IK_MAX_DQ = 0.2  # radians per IK iteration
# Box the EE target is clipped to (m); its floor keeps the fingertips ~2 cm above the table (they dip while the servos lag).
EE_LOW = np.array([0.25, -0.4, 0.07])
EE_HIGH = np.array([0.75, 0.35, 0.25])
HOME_EE = np.array([0.45, 0.0, 0.10])
# Where reset places the goal centre and the blocks (table-plane boxes, m).
GOAL_LOW, GOAL_HIGH = np.array([0.5, -0.12]), np.array([0.62, 0.12])
BLOCK_LOW, BLOCK_HIGH = np.array([0.4, -0.2]), np.array([0.68, 0.2])
MIN_GAP = 0.09  # between block centres and the EE's start at reset
CLUTTER_RING = (0.09, 0.15)  # distractor distance from the clutter task's object

ACTION_COST = 0.01
COLLISION_COST = 0.5
DISTURBANCE_COST = 2.0


def check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"FrankaPushEnv: {name}={value!r}; expected one of {valid}")


def segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from `point` to the segment a-b (any dimension)."""
    ab = b - a
    t = np.clip((point - a) @ ab / (ab @ ab + 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(point - (a + t * ab)))


class FrankaPushEnv(gymnasium.Env):
    """A Panda pushing blocks on a table, seen by a fixed third-person camera.

    obs (state): float32 (7 joint positions, 7 joint velocities, 3 EE xyz,
        3 per block xyz [task objects first, then distractors], 2 goal xy).
    obs (pixels): (pixel_size, pixel_size, 3) uint8 from camera `third_person`.
    action: (3,) float32 EE delta in [-1, 1], or (7,) joint-target delta with control="joint".
    `render()` returns a (render_size, render_size, 3) uint8 frame of the same camera.
    Episodes truncate after `EPISODE_STEPS` steps and never terminate.
    """

    metadata: ClassVar[dict] = {
        "render_modes": ["rgb_array"],
        "render_fps": int(1 / (FRAME_SKIP * 0.002)),
    }

    def __init__(
        self,
        task: str = "group",
        observation: str = "state",
        control: str = "ee",
        pixel_size: int = 112,
        render_size: int = 224,
        render_mode: str | None = "rgb_array",
        max_steps: int = EPISODE_STEPS,
    ) -> None:
        check_choice("task", task, TASKS)
        check_choice("observation", observation, OBSERVATIONS)
        check_choice("control", control, CONTROLS)
        check_choice("pixel_size", pixel_size, PIXEL_SIZES)
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        if not 45 <= max_steps <= 100:
            raise ValueError(f"FrankaPushEnv: max_steps={max_steps}; expected 45..100")
        self.task, self.observation, self.control = task, observation, control
        self.pixel_size, self.render_size, self.render_mode = (
            pixel_size,
            render_size,
            render_mode,
        )
        self.max_steps = max_steps
        self.scene = SCENES[task]

        self.model = build_model(self.scene)
        self.data = mujoco.MjData(self.model)
        self._ik_data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qpos = np.array([m.joint(n).qposadr[0] for n in ARM_JOINTS])
        self._arm_qvel = np.array([m.joint(n).dofadr[0] for n in ARM_JOINTS])
        self._arm_range = m.jnt_range[[m.joint(n).id for n in ARM_JOINTS]].copy()
        self._site = m.site(EE_SITE).id
        self._goal_site = m.site("goal").id
        self._block_qpos = np.array(
            [m.joint(n).qposadr[0] for n in self.scene.block_names]
        )
        self._block_qvel = np.array(
            [m.joint(n).dofadr[0] for n in self.scene.block_names]
        )
        self._table = m.geom("table").id
        self._arm_geoms = frozenset(
            g
            for g in range(m.ngeom)
            if m.body(m.geom_bodyid[g]).name.startswith("panda")
        )

        n_blocks = len(self.scene.block_names)
        self.state_dim = 7 + 7 + 3 + 3 * n_blocks + 2
        if observation == "state":
            self.observation_space = spaces.Box(
                -STATE_BOUND, STATE_BOUND, (self.state_dim,), np.float32
            )
        else:
            self.observation_space = spaces.Box(
                0, 255, (pixel_size, pixel_size, 3), np.uint8
            )
        self.action_space = spaces.Box(
            -1.0, 1.0, (3 if control == "ee" else 7,), np.float32
        )

        self._renderers: dict[int, mujoco.Renderer] = {}
        self._scene_option = mujoco.MjvOption()
        self._scene_option.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._scene_option.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._goal = np.zeros(2)
        self._ee_target = HOME_EE.copy()
        self._q_cmd = HOME_QPOS.copy()
        self._distractor_start = np.zeros((self.scene.n_distractors, 2))
        self._steps = 0

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._goal = self.np_random.uniform(GOAL_LOW, GOAL_HIGH)
        self.model.site_pos[self._goal_site, :2] = self._goal
        for adr, xy in zip(self._block_qpos, self._sample_block_xy()):
            yaw = self.np_random.uniform(-np.pi, np.pi)
            self.data.qpos[adr : adr + 7] = [
                *xy,
                BLOCK_HALF,
                np.cos(yaw / 2),
                0,
                0,
                np.sin(yaw / 2),
            ]
        self._q_cmd = HOME_QPOS.copy()
        self._ee_target = HOME_EE.copy()
        self._solve_ik()
        self.data.qpos[self._arm_qpos] = self._q_cmd
        self.data.ctrl[:7] = self._q_cmd
        self.data.ctrl[7:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self._distractor_start = self.block_xy()[self.scene.n_objects :].copy()
        self._steps = 0
        return self._obs(), self._info(np.zeros(self.action_space.shape, np.float32))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if self.control == "ee":
            # The target stays within MAX_LEAD of the hand, so it cannot run away while the
            # servos catch up.
            target = self._ee_target + EE_STEP * a
            lead = target - self.ee_position()
            target = self.ee_position() + lead * min(
                1.0, MAX_LEAD / (np.linalg.norm(lead) + 1e-12)
            )
            self._ee_target = np.clip(target, EE_LOW, EE_HIGH)
            self._solve_ik()
        else:
            self._q_cmd = np.clip(self._q_cmd + JOINT_STEP * a, *self._arm_range.T)
        self.data.ctrl[:7] = self._q_cmd
        collided = False
        for _ in range(FRAME_SKIP):
            mujoco.mj_step(self.model, self.data)
            collided = collided or self._arm_touches_table()
        self._steps += 1
        info = self._info(a, collided)
        return (
            self._obs(),
            float(info["gt_reward"]),
            False,
            self._steps >= self.max_steps,
            info,
        )

    def render(self) -> np.ndarray:
        return self.render_frame(self.render_size)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ----------------------------------------------------------------- state access
    def render_frame(self, size: int, camera: str = CAMERA) -> np.ndarray:
        """(size, size, 3) uint8 frame of a fixed camera (`CAMERA`, or `TOP_CAMERA` overhead); size <= 224."""
        if size not in self._renderers:
            self._renderers[size] = mujoco.Renderer(self.model, size, size)
        renderer = self._renderers[size]
        renderer.update_scene(self.data, camera=camera, scene_option=self._scene_option)
        return renderer.render()

    def ee_position(self) -> np.ndarray:
        """(3,) world position of the end-effector site."""
        return self.data.site_xpos[self._site].copy()

    def block_xy(self) -> np.ndarray:
        """(n_blocks, 2) block centres in the table plane: task objects, then distractors."""
        return np.stack([self.data.qpos[a : a + 2] for a in self._block_qpos])

    @property
    def goal(self) -> np.ndarray:
        """(2,) centre of the goal disk."""
        return self._goal.copy()

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    # ----------------------------------------------------------------- internals
    def _solve_ik(self) -> None:
        """Damped least-squares IK from the commanded pose towards `_ee_target`, hand down."""
        m, d = self.model, self._ik_data
        jac_pos, jac_rot = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        for _ in range(IK_ITERATIONS):
            d.qpos[self._arm_qpos] = self._q_cmd
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            rot = d.site_xmat[self._site].reshape(3, 3)
            err_rot = 0.5 * np.cross(rot, HAND_DOWN, axis=0).sum(axis=1)
            err = np.concatenate([self._ee_target - d.site_xpos[self._site], err_rot])
            mujoco.mj_jacSite(m, d, jac_pos, jac_rot, self._site)
            jac = np.vstack([jac_pos, jac_rot])[:, self._arm_qvel]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + IK_DAMPING * np.eye(6), err)
            dq *= min(1.0, IK_MAX_DQ / (np.abs(dq).max() + 1e-12))
            self._q_cmd = np.clip(self._q_cmd + dq, *self._arm_range.T)

    def _sample_block_xy(self) -> list[np.ndarray]:
        """Block centres: task objects anywhere in the block box away from the goal;
        distractors in a ring around the first object, off its straight path to the goal.
        Layouts that leave no room for a distractor are redrawn whole."""
        while True:
            placed = self._try_block_layout()
            if placed is not None:
                return placed

    def _try_block_layout(self) -> list[np.ndarray] | None:
        placed: list[np.ndarray] = []

        def clear(xy: np.ndarray) -> bool:
            return all(np.linalg.norm(xy - p) > MIN_GAP for p in [HOME_EE[:2], *placed])

        for _ in range(self.scene.n_objects):
            xy = self.np_random.uniform(BLOCK_LOW, BLOCK_HIGH)
            while not (
                clear(xy)
                and np.linalg.norm(xy - self._goal) > MIN_GAP + GOAL_RADIUS / 2
            ):
                xy = self.np_random.uniform(BLOCK_LOW, BLOCK_HIGH)
            placed.append(xy)
        target = placed[0]
        for _ in range(self.scene.n_distractors):
            for _ in range(50):
                radius, angle = (
                    self.np_random.uniform(*CLUTTER_RING),
                    self.np_random.uniform(-np.pi, np.pi),
                )
                xy = target + radius * np.array([np.cos(angle), np.sin(angle)])
                inside = np.all(xy >= BLOCK_LOW - 0.05) and np.all(
                    xy <= BLOCK_HIGH + 0.05
                )
                off_path = (
                    segment_distance(xy, target, self._goal) > 2 * BLOCK_HALF + 0.03
                )
                outside_goal = (
                    np.linalg.norm(xy - self._goal) > GOAL_RADIUS + 2 * BLOCK_HALF
                )
                if inside and clear(xy) and off_path and outside_goal:
                    placed.append(xy)
                    break
            else:
                return None
        return placed

    def _arm_touches_table(self) -> bool:
        for c in self.data.contact[: self.data.ncon]:
            pair = (c.geom1, c.geom2)
            if self._table in pair and (
                pair[0] in self._arm_geoms or pair[1] in self._arm_geoms
            ):
                return True
        return False

    def _state(self) -> np.ndarray:
        blocks = np.concatenate([self.data.qpos[a : a + 3] for a in self._block_qpos])
        return (
            np.concatenate(
                [
                    self.data.qpos[self._arm_qpos],
                    self.data.qvel[self._arm_qvel],
                    self.ee_position(),
                    blocks,
                    self._goal,
                ]
            )
            .clip(-STATE_BOUND, STATE_BOUND)
            .astype(np.float32)
        )

    def _obs(self) -> np.ndarray:
        if self.observation == "state":
            return self._state()
        return self.render_frame(self.pixel_size)

    def _info(self, action: np.ndarray, collided: bool = False) -> dict[str, Any]:
        xy = self.block_xy()
        objects = xy[: self.scene.n_objects]
        goal_distance = float(np.linalg.norm(objects - self._goal, axis=1).sum())
        separation = (
            float(np.linalg.norm(objects[0] - objects[1]))
            if self.task == "group"
            else 0.0
        )
        disturbance = float(
            np.linalg.norm(
                xy[self.scene.n_objects :] - self._distractor_start, axis=1
            ).sum()
        )
        action_penalty = ACTION_COST * float(np.sum(np.square(action)))
        collision = COLLISION_COST * float(collided)
        reward = (
            -goal_distance
            - separation
            - action_penalty
            - collision
            - DISTURBANCE_COST * disturbance
        )
        return {
            "gt_reward": reward,
            "goal_distance": goal_distance,
            "separation": separation,
            "action_penalty": action_penalty,
            "collision": collision,
            "disturbance": disturbance,
            "in_goal": int(
                (np.linalg.norm(objects - self._goal, axis=1) < GOAL_RADIUS).sum()
            ),
        }
