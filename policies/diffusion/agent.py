"""A diffusion policy as the PbRL loop's agent (`embodied_pref.loop.AgentTrainer`): pretrained
by BC on demonstrations, then fine-tuned on each round's learned reward by reward- or
advantage-weighted regression (`rwr`) or by DPPO (`dppo`), anchored to the demonstrations."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import gymnasium as gym

from embodied_pref.data import Trajectory
from embodied_pref.reward_nets import RewardFn
from policies.diffusion.dppo import DPPOConfig, DPPOPolicy, acting_sampler, train_dppo
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import run_episodes
from policies.diffusion.rwr import RWRConfig, train_rwr

ALGORITHMS = ("rwr", "dppo")
AGENT_FILE = "agent.json"


@dataclass(frozen=True)
class DiffusionAgentConfig:
    """How the loop fine-tunes the diffusion policy."""

    algorithm: str = "rwr"
    """rwr (reward- or, with rwr.score=advantage, advantage-weighted regression) or dppo."""
    rwr: RWRConfig = field(default_factory=lambda: RWRConfig(progress=False))
    """RWR settings (rounds are set from the loop's step budget)."""
    dppo: DPPOConfig = field(default_factory=lambda: DPPOConfig(progress=False))
    """DPPO settings (iterations are set from the loop's step budget)."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {ALGORITHMS}, found {self.algorithm!r}")


class DiffusionAgent:
    """`train(reward_fn, steps)` fine-tunes for about `steps` env steps of rollouts;
    `rollouts(n, seed)` samples the current policy."""

    checkpoint_name = "diffusion_agent"

    def __init__(self, env_id: str, pretrained: DiffusionPolicy, demonstrations: Sequence[Trajectory],
                 run_dir: Path, config: DiffusionAgentConfig = DiffusionAgentConfig(),
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.policy: DiffusionPolicy | DPPOPolicy = pretrained
        self.demonstrations, self.run_dir, self.config = list(demonstrations), Path(run_dir), config
        probe = gym.make(env_id, **self.env_kwargs)
        self.episode_steps = int(getattr(probe.unwrapped, "max_episode_steps", None) or probe.spec.max_episode_steps or 100)
        probe.close()
        self.steps_trained, self.rounds = 0, 0
        self.log: list[dict] = []

    def _make_env(self) -> gym.Env:
        return gym.make(self.env_id, **self.env_kwargs)

    def train(self, reward_fn: RewardFn | None, steps: int) -> None:
        if reward_fn is None:
            raise ValueError("DiffusionAgent.train: expected a learned reward (the env's own reward is not used)")
        run_dir = self.run_dir / f"finetune_{self.rounds}"
        seed = 100_000 + 1_000 * self.rounds
        if self.config.algorithm == "rwr":
            rounds = max(1, round(steps / (self.config.rwr.episodes_per_round * self.episode_steps)))
            config = replace(self.config.rwr, rounds=rounds, seed=self.config.rwr.seed + self.rounds)
            base = self.policy if isinstance(self.policy, DiffusionPolicy) else self.policy.actor
            self.policy, log = train_rwr(base, reward_fn, self._make_env, self.demonstrations, run_dir, config,
                                         first_seed=seed)
        else:
            iterations = max(1, round(steps / (self.config.dppo.episodes_per_iteration * self.episode_steps)))
            config = replace(self.config.dppo, iterations=iterations, seed=self.config.dppo.seed + self.rounds)
            self.policy, log = train_dppo(self.policy, reward_fn, self._make_env, run_dir, config, self.demonstrations,
                                          first_seed=seed)
        self.log += [{"train_call": self.rounds, **row} for row in log]
        self.rounds += 1
        self.steps_trained += steps

    def rollouts(self, n: int, seed: int) -> list[Trajectory]:
        return run_episodes(self._make_env, [seed + i for i in range(n)], self.policy.config,
                            acting_sampler(self.policy, seed),
                            metadata={"policy": f"diffusion-{self.config.algorithm}", "steps_trained": self.steps_trained})

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.policy.save(path / "policy")
        (path / AGENT_FILE).write_text(json.dumps({
            "kind": "dppo" if isinstance(self.policy, DPPOPolicy) else "diffusion",
            "steps_trained": self.steps_trained, "rounds": self.rounds, "log": self.log,
            "config": asdict(self.config)}, indent=2, default=str))

    def load(self, path: str | Path) -> None:
        path = Path(path)
        try:
            state = json.loads((path / AGENT_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path / AGENT_FILE}: cannot read the agent state ({err})") from None
        loader = DPPOPolicy if state["kind"] == "dppo" else DiffusionPolicy
        self.policy = loader.load(path / "policy")
        self.steps_trained, self.rounds, self.log = state["steps_trained"], state["rounds"], state["log"]

