"""Aligning a pretrained diffusion policy on recorded episodes alone (no simulator, no new
rollouts), and the held-out report that judges it without its own reward.

Offline reward-weighted regression (`train_offline_rwr`): denoising steps on windows of the
recorded episodes, each episode weighted by exp of its learned return (in standard deviations,
capped, as online RWR weighs its rollouts), plus an anchor that keeps the noise predictions close to
the pretrained policy's on the same noisy chunks, so the policy moves towards the preferred
recordings without forgetting what it knew. Diffusion-DPO on labelled clip pairs
(`dpo.train_dpo`) is offline already and anchored by its reference policy.

`alignment_report` scores a policy on held-out episodes whose preference is known (preferred
vs dispreferred): the error of its deterministic action chunks against the recorded actions
on each group, and its denoising error on each group with the same noise and timesteps (the
diffusion model's negative log-likelihood bound up to constants): a policy aligned with the
preference reproduces the preferred episodes better and the dispreferred ones worse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from embodied_pref.data import Trajectory
from embodied_pref.reward_nets import RewardFn, trajectory_rewards
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.rwr import exponentiated_weights
from policies.diffusion.training import PolicyTrainer, TrainerConfig
from policies.diffusion.windows import ChunkWindows


@dataclass(frozen=True)
class OfflineRWRConfig:
    """Reward-weighted fine-tuning on recorded episodes."""

    steps: int = 500
    """Optimizer steps."""
    temperature: float = 0.5
    """τ: an episode's weight is exp((R − max R) / (τ · std R)) of its learned return R
    (`rwr.exponentiated_weights`, as online RWR weighs its rollouts)."""
    max_weight: float = 20.0
    """Cap on a weight, relative to the mean weight."""
    anchor_weight: float = 1.0
    """Weight of ‖ε_θ − ε_pretrained‖² on the same noisy chunks (0: no anchor)."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(learning_rate=3e-5, warmup_steps=20, batch_size=64))
    """Optimizer, EMA and hardware."""
    progress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.temperature > 0 or not self.max_weight >= 1 or self.anchor_weight < 0:
            raise ValueError(f"OfflineRWRConfig: expected steps >= 1, temperature > 0, max_weight >= 1, "
                             f"anchor_weight >= 0; found {self.steps}, {self.temperature}, {self.max_weight}, "
                             f"{self.anchor_weight}")


def return_weights(episodes: Sequence[Trajectory], reward_fn: RewardFn, temperature: float,
                   max_weight: float) -> np.ndarray:
    """One weight per episode (mean 1) from its learned return."""
    returns = np.array([trajectory_rewards(reward_fn, e).sum() for e in episodes], dtype=np.float64)
    return exponentiated_weights(returns, temperature, max_weight)


def train_offline_rwr(pretrained: DiffusionPolicy, episodes: Sequence[Trajectory], reward_fn: RewardFn,
                      run_dir: Path, config: OfflineRWRConfig = OfflineRWRConfig()
                      ) -> tuple[DiffusionPolicy, list[dict]]:
    """Fine-tune a copy of `pretrained` on `episodes` weighted by `reward_fn`; returns its EMA
    policy and a log row every 50 steps (weighted denoising loss, anchor loss)."""
    torch.manual_seed(config.seed)
    reference = copy.deepcopy(pretrained).eval().requires_grad_(False)
    policy = copy.deepcopy(pretrained)
    windows = ChunkWindows(episodes, policy.config,
                           return_weights(episodes, reward_fn, config.temperature, config.max_weight))
    trainer = PolicyTrainer(policy, config.trainer, config.steps, log_dir=run_dir / "tensorboard")
    device = trainer.ctx.device
    reference.to(device)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    log = []
    for _ in tqdm(range(config.steps), desc="offline RWR", disable=not (config.progress and trainer.ctx.is_main)):
        obs, actions, weights = windows.batch(rng.integers(0, len(windows), config.trainer.batch_size))
        obs, actions, weights = {k: v.to(device) for k, v in obs.items()}, actions.to(device), weights.to(device)
        noise = torch.randn(actions.shape, generator=generator).to(device)
        timesteps = torch.randint(0, policy.config.train_timesteps, (len(actions),), generator=generator).to(device)
        with trainer.autocast():
            predicted = policy.predicted_noise(policy.condition(obs), actions, noise, timesteps)
            errors = (predicted - noise).square().mean(dim=(1, 2))
            loss = (weights * errors).sum() / weights.sum()
            anchor = torch.zeros((), device=device)
            if config.anchor_weight > 0:
                with torch.no_grad():
                    target = reference.predicted_noise(reference.condition(obs), actions, noise, timesteps)
                anchor = (predicted - target).square().mean()
                loss = loss + config.anchor_weight * anchor
        trainer.update(loss)
        if trainer.step % 50 == 0 or trainer.step == config.steps:
            log.append({"step": trainer.step, "weighted_loss": float(loss.detach()), "anchor": float(anchor.detach())})
    trainer.close()
    return trainer.averaged(), log


@dataclass(frozen=True)
class AlignmentScores:
    """A policy on held-out preferred and dispreferred episodes (lower errors: closer)."""

    action_error_preferred: float
    """Mean squared error of its deterministic action chunks against the recorded actions."""
    action_error_dispreferred: float
    denoising_error_preferred: float
    """Mean denoising error (negative log-likelihood bound up to constants) of the recorded chunks."""
    denoising_error_dispreferred: float

    @property
    def action_margin(self) -> float:
        """Action error on dispreferred minus on preferred episodes: > 0 acts more like the preferred."""
        return self.action_error_dispreferred - self.action_error_preferred

    @property
    def log_likelihood_ratio(self) -> float:
        """Denoising error on dispreferred minus on preferred chunks: a bound on the log-likelihood
        ratio of preferred over dispreferred behaviour (per chunk element); > 0 favours the preferred."""
        return self.denoising_error_dispreferred - self.denoising_error_preferred


def alignment_report(policy: DiffusionPolicy, preferred: Sequence[Trajectory], dispreferred: Sequence[Trajectory],
                     seed: int = 0, windows_per_group: int = 256, noise_draws: int = 8) -> AlignmentScores:
    """Score `policy` on the two groups of held-out episodes: every policy scored with the same
    `seed` sees the same windows, noise and timesteps."""
    policy.eval()
    scores = {}
    for name, episodes in (("preferred", preferred), ("dispreferred", dispreferred)):
        if not episodes:
            raise ValueError(f"{name}: expected at least one held-out episode")
        windows = ChunkWindows(episodes, policy.config)
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(windows), min(windows_per_group, len(windows)), replace=False)
        obs, actions, _ = windows.batch(np.sort(picked))
        obs, actions = {k: v.to(policy.device) for k, v in obs.items()}, actions.to(policy.device)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            chunk = policy.sample_chunk(obs, generator=generator, sampler="ddim", noise_scale=0.0)
            scores[f"action_error_{name}"] = float((chunk - actions).square().mean())
            cond = policy.condition(obs)
            errors = []
            for _ in range(noise_draws):
                noise = torch.randn(actions.shape, generator=generator).to(policy.device)
                timesteps = torch.randint(0, policy.config.train_timesteps, (len(actions),),
                                          generator=generator).to(policy.device)
                errors.append(policy.noise_prediction_error(cond, actions, noise, timesteps).mean())
            scores[f"denoising_error_{name}"] = float(torch.stack(errors).mean())
    return AlignmentScores(**scores)
