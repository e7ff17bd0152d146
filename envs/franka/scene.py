"""MuJoCo scene of a Franka Panda on a table with pushable blocks and a goal region.

The arm (meshes, kinematic chain, position actuators) is gymnasium-robotics' Panda model,
read from the installed package and composed into our scene with MuJoCo's `<include>`: nothing is copied into this repository. The base of the robot sits at the world
origin on the table top (z = 0); x points away from the robot.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

BLOCK_HALF = 0.025
"""Half edge of every block (m)."""
GOAL_RADIUS = 0.08
"""Radius of the goal disk drawn on the table (m)."""
CAMERA = "third_person"
"""The camera the env renders and its pixel observations come from."""
TOP_CAMERA = "top_down"
"""A second, overhead camera over the table (robot recordings usually carry several views)."""
ARM_DAMPING = 10.0
"""Joint damping of the arm (N m s/rad), lowered from the kitchen model's 100."""
ARM_JOINTS = tuple(f"robot:panda0_joint{i}" for i in range(1, 8))
EE_SITE = "end_effector"
# Arm pose with the end-effector site at (0.45, 0, 0.10) and the hand pointing straight
# down (`HAND_DOWN`); found with the env's own IK.
HOME_QPOS = np.array([-0.129, 0.172, 0.12, -2.566, -0.052, 1.166, 0.038])
HAND_DOWN = np.column_stack([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
"""World orientation of the end-effector site (columns: site x, y, z axes) held by EE control."""
BLOCK_COLORS = {"object": "0.85 0.25 0.2 1", "distractor": "0.25 0.45 0.85 1"}


def panda_asset_dir() -> Path:
    """Directory holding gymnasium-robotics' `franka_assets/` (Panda xml and meshes)."""
    import gymnasium_robotics

    path = (
        Path(gymnasium_robotics.__file__).parent / "envs" / "assets" / "kitchen_franka"
    )
    if not (path / "franka_assets" / "chain.xml").is_file():
        raise FileNotFoundError(
            f"{path}/franka_assets/chain.xml: expected gymnasium-robotics' Panda model"
        )
    return path


@dataclass(frozen=True)
class SceneSpec:
    """What the scene holds: `n_objects` blocks to push and `n_distractors` to leave alone."""

    n_objects: int = 2
    """Red blocks that count for the task."""
    n_distractors: int = 0
    """Blue blocks that should stay where they start."""

    def __post_init__(self) -> None:
        if self.n_objects < 1 or self.n_distractors < 0:
            raise ValueError(
                f"SceneSpec: expected n_objects >= 1 and n_distractors >= 0, got {self}"
            )

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(f"object{i}" for i in range(self.n_objects)) + tuple(
            f"distractor{i}" for i in range(self.n_distractors)
        )


def _block_xml(name: str, kind: str, slot: int) -> str:
    h = BLOCK_HALF
    # Parked off the table until reset places it.
    return f"""
    <body name="{name}" pos="{-1.0 - 0.1 * slot} 0 {h}">
      <freejoint name="{name}"/>
      <geom type="box" size="{h} {h} {h}" rgba="{BLOCK_COLORS[kind]}" mass="0.3"
            friction="1.0 0.005 0.0001" condim="3"/>
    </body>"""


def scene_xml(spec: SceneSpec) -> str:
    """The MJCF text of the scene; it includes the Panda files by relative path."""
    blocks = "".join(
        _block_xml(n, "object" if n.startswith("object") else "distractor", i)
        for i, n in enumerate(spec.block_names)
    )
    return f"""
<mujoco model="embodied_pref_franka_table">
  <include file="franka_assets/assets.xml"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="224" offheight="224"/>
    <headlight ambient="0.4 0.4 0.4" diffuse="0.6 0.6 0.6"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1=".35 .35 .38" rgb2=".3 .3 .33" width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="8 8"/>
  </asset>
  <include file="franka_assets/actuator.xml"/>
  <worldbody>
    <light pos="0.5 0 2" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor"/>
    <geom name="table" type="box" size="0.55 0.6 0.02" pos="0.45 0 -0.02" rgba="0.75 0.65 0.5 1"
          friction="0.4 0.005 0.0001"/>
    <site name="goal" type="cylinder" size="{GOAL_RADIUS} 0.0005" pos="0.55 0 0.0005" rgba="0.2 0.8 0.3 0.6"/>
    <camera name="{CAMERA}" pos="1.3 0.65 0.85" xyaxes="-0.585 0.811 0.000 -0.410 -0.296 0.863" fovy="50"/>
    <camera name="{TOP_CAMERA}" pos="0.5 0 1.3" xyaxes="0 -1 0 1 0 0" fovy="45"/>
    <body name="panda_base" pos="0 0 0">
      <include file="franka_assets/chain.xml"/>
    </body>{blocks}
  </worldbody>
</mujoco>"""


def build_model(spec: SceneSpec) -> mujoco.MjModel:
    """Compile the scene; shadows and reflections are off to keep headless rendering cheap."""
    # MuJoCo resolves the Panda's includes and `meshdir` relative to the main file, so the
    # scene is compiled from a temporary directory that links to the installed assets.
    with tempfile.TemporaryDirectory(prefix="franka_scene_") as tmp:
        (Path(tmp) / "franka_assets").symlink_to(panda_asset_dir() / "franka_assets")
        path = Path(tmp) / "scene.xml"
        path.write_text(scene_xml(spec))
        spec = mujoco.MjSpec.from_file(str(path))
        # Gravity compensation on every link of the arm, as the real arm's controller does,
        # so the position servos track targets without a steady sag.
        for body in spec.bodies:
            if body.name.startswith("panda"):
                body.gravcomp = 1.0
        # The kitchen model damps the shoulder and elbow at 100 N m s/rad, which with the
        # 87 N m force limit caps them at ~0.9 rad/s; pushing needs a livelier arm.
        for joint in spec.joints:
            if joint.name.startswith("robot:panda0_joint"):
                joint.damping = np.minimum(joint.damping, ARM_DAMPING)
        model = spec.compile()
    model.vis.quality.shadowsize = 0
    model.mat_reflectance[:] = 0.0
    return model
