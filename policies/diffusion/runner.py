"""Running a diffusion policy in gymnasium environments: several episodes in lockstep, so
that one batched denoising call serves every env; each env keeps its last To observations
and executes Ta actions of every sampled chunk before sampling again.

Episodes come back as `Trajectory`s exactly as `embodied_pref.rollout.rollout` records them
(ground truth from `info["gt_reward"]`, `eval_score` in the metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch

from embodied_pref.data import Trajectory
from embodied_pref.reward_nets import RewardFn, trajectory_rewards
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy

ChunkSampler = Callable[[dict[str, torch.Tensor], np.ndarray], np.ndarray]
"""(obs history of the active envs {"state": (B, To, Ds), camera: (B, To, H, W, 3)}, their
env indices (B,)) -> executed actions (B, Ta, Da) in env units."""


ChunkRecorder = Callable[[np.ndarray, dict[str, torch.Tensor], torch.Tensor], None]
"""(env indices (B,), their obs history, what was sampled for them) -> None."""


def policy_sampler(policy: DiffusionPolicy, seed: int, record: ChunkRecorder | None = None,
                   noise_scale: float | None = None) -> ChunkSampler:
    """Samples chunks from `policy` with its own seeded generator (and `noise_scale` instead of
    the policy's, when given); `record` sees every sampled chunk whole, (B, H, Da) in env units."""
    generator = torch.Generator().manual_seed(seed)

    def sample(obs: dict[str, torch.Tensor], envs: np.ndarray) -> np.ndarray:
        obs = {k: v.to(policy.device) for k, v in obs.items()}
        chunk = policy.sample_chunk(obs, generator, noise_scale=noise_scale)
        if record is not None:
            record(envs, obs, chunk)
        return policy.executed_actions(chunk).cpu().numpy()

    return sample


def recorder(records: dict[int, list[tuple[dict[str, torch.Tensor], torch.Tensor]]]) -> ChunkRecorder:
    """A `ChunkRecorder` that appends (obs history, sample) to `records[env index]`, on the CPU."""
    def record(envs: np.ndarray, obs: dict[str, torch.Tensor], sampled: torch.Tensor) -> None:
        for row, env_index in enumerate(envs):
            records.setdefault(int(env_index), []).append(({k: v[row].cpu() for k, v in obs.items()}, sampled[row].cpu()))
    return record


@dataclass(frozen=True)
class Decisions:
    """What a policy sampled while acting: M decisions, grouped by episode in step order."""

    obs: dict[str, torch.Tensor]
    """Observation history of each decision: (M, To, ...)."""
    sampled: torch.Tensor
    """What was sampled for it, whole: the chunk (M, H, Da) in env units, or DPPO's
    denoising chain (M, K+1, H, Da)."""
    episode: np.ndarray
    """(M,) index of the decision's episode."""
    index: np.ndarray
    """(M,) the decision's number in its episode: it executes steps index·Ta … (index + 1)·Ta − 1."""

    @classmethod
    def from_records(cls, records: dict[int, list[tuple[dict[str, torch.Tensor], torch.Tensor]]]) -> "Decisions":
        """From `recorder`'s records of one `run_episodes` call."""
        rows = [(env, j, obs, sample) for env in sorted(records) for j, (obs, sample) in enumerate(records[env])]
        return cls(obs={k: torch.stack([r[2][k] for r in rows]) for k in rows[0][2]},
                   sampled=torch.stack([r[3] for r in rows]),
                   episode=np.array([r[0] for r in rows]), index=np.array([r[1] for r in rows]))

    def __len__(self) -> int:
        return len(self.episode)

    def executed_sums(self, per_step: Sequence[np.ndarray], n_action_steps: int) -> np.ndarray:
        """Σ of `per_step[episode]` (e.g. learned rewards) over the steps each decision executes: (M,)."""
        return np.array([per_step[e][j * n_action_steps:(j + 1) * n_action_steps].sum()
                         for e, j in zip(self.episode, self.index)], np.float32)


def observation_history(steps: Sequence[Sequence[Any]], n_obs_steps: int) -> np.ndarray:
    """The last To entries of each env's list, the first repeated before the start: (B, To, ...)."""
    return np.stack([np.stack([s[max(0, len(s) - n_obs_steps + i)] for i in range(n_obs_steps)]) for s in steps])


def run_episodes(
    make_env: Callable[[], gym.Env],
    seeds: Sequence[int],
    config: DiffusionPolicyConfig,
    sample: ChunkSampler,
    *,
    record_frames: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> list[Trajectory]:
    """One episode per seed, run in lockstep; envs that finish drop out of the batch."""
    envs = [make_env() for _ in seeds]
    try:
        n = len(envs)
        first = [env.reset(seed=int(seed)) for env, seed in zip(envs, seeds)]
        observations = [[np.asarray(obs, np.float32)] for obs, _ in first]
        needs_frames = record_frames or bool(config.cameras)
        frames = [[env.render()] for env in envs] if needs_frames else None
        actions: list[list[np.ndarray]] = [[] for _ in range(n)]
        rewards: list[list[float]] = [[] for _ in range(n)]
        last_info: list[dict] = [info for _, info in first]
        terminated = [False] * n
        active = np.arange(n)
        while len(active):
            obs = {}
            if config.state_dim:
                obs["state"] = torch.from_numpy(observation_history([observations[i] for i in active], config.n_obs_steps))
            for camera in config.cameras:
                obs[camera.name] = torch.from_numpy(observation_history([frames[i] for i in active], config.n_obs_steps))
            chunk = sample(obs, active)
            still = []
            for row, i in enumerate(active):
                done = False
                for action in chunk[row]:
                    action = np.clip(action, envs[i].action_space.low, envs[i].action_space.high).astype(np.float32)
                    o, reward, term, trunc, info = envs[i].step(action)
                    observations[i].append(np.asarray(o, np.float32))
                    actions[i].append(action)
                    rewards[i].append(float(info.get("gt_reward", reward)))
                    if frames is not None:
                        frames[i].append(envs[i].render())
                    last_info[i], terminated[i] = info, bool(term)
                    if term or trunc:
                        done = True
                        break
                if not done:
                    still.append(i)
            active = np.array(still, dtype=int)
        trajectories = []
        for i, env in enumerate(envs):
            meta = dict(metadata or {})
            if "eval_score" in last_info[i]:
                meta["eval_score"] = float(last_info[i]["eval_score"])
            spec = env.spec
            trajectories.append(Trajectory(
                observations=np.asarray(observations[i]), actions=np.asarray(actions[i]),
                rewards=np.asarray(rewards[i], np.float32),
                frames=np.asarray(frames[i], np.uint8) if record_frames else None,
                env_id=spec.id if spec is not None else type(env.unwrapped).__name__,
                seed=int(seeds[i]), embodiment=str(last_info[i].get("embodiment", "")),
                terminated=terminated[i], metadata=meta,
            ))
        return trajectories
    finally:
        for env in envs:
            env.close()


def rollout_returns(reward_fn: RewardFn, episodes: Sequence[Trajectory]) -> dict[str, float]:
    """Mean learned (`reward_fn`) and ground-truth return of `episodes`: what a fine-tuning
    log records each round, so a policy that games the learned reward shows it."""
    return {"learned_return": float(np.mean([trajectory_rewards(reward_fn, e).sum() for e in episodes])),
            "gt_return": float(np.mean([e.rewards.sum() for e in episodes]))}
