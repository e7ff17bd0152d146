"""A policy extracted from a learned optimal advantage Â(s, a): act greedily on it.

Knox et al. (AAAI 2024): a partial-return model fit to regret-generated preferences learns
≈ A*, which should be maximized per step, not summed as a reward by an RL algorithm. With
continuous actions the argmax is taken over `n_samples` actions drawn uniformly from the
action space (plus the centre of the box), fresh at every step.

`GreedyAdvantageAgent` implements the PbRL loop's `AgentTrainer`: `train(advantage_fn, steps)`
takes the newest Â and needs no environment steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.reward_nets import RewardEnsemble, RewardFn
from embodied_pref.rollout import rollout


@dataclass(frozen=True)
class GreedyAdvantageConfig:
    """Action search of the greedy policy."""

    n_samples: int = 256
    """Candidate actions scored per step."""
    seed: int = 0
    """Seeds the candidate draws."""

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"GreedyAdvantageConfig.n_samples: expected >= 1, found {self.n_samples}")


class GreedyAdvantagePolicy:
    """obs (D,) -> argmax over sampled actions of Â(obs, a): (A,) float32.

    `advantage_fn` is a `RewardFn` over (obs, acts, next_obs); only obs and acts matter to an
    advantage, so next_obs is passed as obs.
    """

    def __init__(self, advantage_fn: RewardFn, action_space: gym.spaces.Box, config: GreedyAdvantageConfig) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"greedy advantage policies need a Box action space, found {action_space}")
        self.advantage_fn, self.space, self.config = advantage_fn, action_space, config
        self.rng = np.random.default_rng(config.seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        low, high = self.space.low, self.space.high
        candidates = self.rng.uniform(low, high, (self.config.n_samples, *low.shape))
        candidates = np.concatenate([candidates, ((low + high) / 2)[None]]).astype(np.float32)
        states = np.repeat(np.asarray(obs, np.float32)[None], len(candidates), axis=0)
        scores = self.advantage_fn(states, candidates, states)
        return candidates[int(np.argmax(scores))]


class GreedyAdvantageAgent:
    """The loop's agent when the learner is an advantage: greedy on the newest Â.

    The newest Â is saved by reference: `save` records the checkpoint `advantage_checkpoint`
    (where the loop writes its reward ensemble), `load` reads it back (argmax is unchanged by
    the loop's standardization, so the raw ensemble acts the same).
    """

    checkpoint_name = "agent.json"

    def __init__(self, env_id: str, advantage_checkpoint: str | Path,
                 config: GreedyAdvantageConfig = GreedyAdvantageConfig()) -> None:
        self.env_id, self.advantage_checkpoint, self.config = env_id, Path(advantage_checkpoint), config
        self.advantage_fn: RewardFn | None = None
        probe = gym.make(env_id)
        self.action_space = probe.action_space
        probe.close()
        self._acting: GreedyAdvantagePolicy | None = None

    def train(self, reward_fn: RewardFn | None, steps: int) -> None:
        if reward_fn is None:
            raise ValueError("GreedyAdvantageAgent.train: expected a learned advantage, found None")
        self.advantage_fn, self._acting = reward_fn, None

    def policy(self, seed: int) -> GreedyAdvantagePolicy:
        if self.advantage_fn is None:
            raise RuntimeError("GreedyAdvantageAgent: no advantage yet; call train() or load() first")
        return GreedyAdvantagePolicy(self.advantage_fn, self.action_space, GreedyAdvantageConfig(self.config.n_samples, seed))

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The greedy action; candidate draws continue one stream seeded by the config."""
        if self._acting is None:
            self._acting = self.policy(self.config.seed)
        return self._acting(obs)

    def rollouts(self, n: int, seed: int) -> list[Trajectory]:
        env = gym.make(self.env_id)
        try:
            return [rollout(env, self.policy(seed + i), seed + i,
                            metadata={"policy": "greedy-advantage", "n_samples": self.config.n_samples})
                    for i in range(n)]
        finally:
            env.close()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"advantage_checkpoint": str(self.advantage_checkpoint),
                                          "n_samples": self.config.n_samples}))

    def load(self, path: str | Path) -> None:
        saved = json.loads(Path(path).read_text())
        self.advantage_fn, self._acting = RewardEnsemble.load(saved["advantage_checkpoint"]).predict, None
