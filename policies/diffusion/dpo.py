"""Diffusion-DPO (Wallace et al. 2023) on preference pairs of clips, for a diffusion policy.

A clip's action chunks are scored by how much better the policy denoises them than the
frozen pretrained reference does. For a labelled pair (winner w, loser l), one window of each
is noised with the same noise ε and timestep t, and

    loss = −log σ(−½β [(‖ε−ε_θ(x_t^w)‖² − ‖ε−ε_θ(x_t^l)‖²) − (‖ε−ε_ref(x_t^w)‖² − ‖ε−ε_ref(x_t^l)‖²)])

which is log 2 while the policy equals the reference. The implicit accuracy is the share of
pairs whose bracket is negative (the policy favours the winner more than the reference
does). Pairs come from stored labels (`embodied_pref.segments.labelled_pairs`) or from clips
ranked by a learned reward; ties carry no signal and are dropped. An optional BC term on the
pretraining demonstrations adds a second anchor.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from embodied_pref.data import Trajectory
from embodied_pref.segments import PreferencePairs, SegmentBatch, pair_sets
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.training import PolicyTrainer, TrainerConfig
from policies.diffusion.windows import ChunkWindows


@dataclass(frozen=True)
class DPOConfig:
    """Diffusion-DPO fine-tuning."""

    steps: int = 500
    """Optimizer steps."""
    beta: float = 2000.0
    """Inverse temperature of the implicit reward; larger keeps closer to the reference."""
    bc_weight: float = 0.0
    """Weight of a BC term on the pretraining demonstrations (0: DPO's own anchor only)."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(learning_rate=1e-5, warmup_steps=50, batch_size=64))
    """Optimizer (a smaller step size than BC's), EMA and hardware."""
    progress: bool = True
    """Show a progress bar."""
    seed: int = 0
    """Seeds pair sampling and noise."""


def dpo_loss(policy: DiffusionPolicy, reference: DiffusionPolicy, winner: tuple[dict, torch.Tensor],
             loser: tuple[dict, torch.Tensor], beta: float, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss scalar, bracket (B,)) for B winner/loser windows (obs dict, actions (B, H, Da))."""
    (obs_w, act_w), (obs_l, act_l) = winner, loser
    noise = torch.randn(act_w.shape, generator=generator).to(act_w.device)
    t = torch.randint(0, policy.config.train_timesteps, (act_w.shape[0],), generator=generator).to(act_w.device)
    policy_w = policy.noise_prediction_error(policy.condition(obs_w), act_w, noise, t)
    policy_l = policy.noise_prediction_error(policy.condition(obs_l), act_l, noise, t)
    with torch.no_grad():
        ref_w = reference.noise_prediction_error(reference.condition(obs_w), act_w, noise, t)
        ref_l = reference.noise_prediction_error(reference.condition(obs_l), act_l, noise, t)
    bracket = (policy_w - policy_l) - (ref_w - ref_l)
    return -F.logsigmoid(-0.5 * beta * bracket).mean(), bracket.detach()


def decisive_pairs(pairs: PreferencePairs | Sequence[PreferencePairs]) -> tuple[list[Trajectory], list[Trajectory]]:
    """(winners, losers) as clip trajectories, from one set of pairs or several (e.g. of clips
    and of whole episodes); ties are dropped."""
    def clip(batch: SegmentBatch, i: int) -> Trajectory:
        return Trajectory(observations=batch.observations[i], actions=batch.actions[i], rewards=None)

    winners, losers = [], []
    for pair_set in pair_sets(pairs):
        for i, target in enumerate(pair_set.targets):
            if target == 0.5:
                continue
            w, l = (pair_set.first, pair_set.second) if target > 0.5 else (pair_set.second, pair_set.first)
            winners.append(clip(w, i))
            losers.append(clip(l, i))
    if not winners:
        raise ValueError("pairs: no decisive preference (every pair is a tie)")
    return winners, losers


def train_dpo(
    pretrained: DiffusionPolicy,
    pairs: PreferencePairs | Sequence[PreferencePairs],
    run_dir: Path,
    config: DPOConfig = DPOConfig(),
    demonstrations: Sequence[Trajectory] = (),
) -> tuple[DiffusionPolicy, list[dict]]:
    """Fine-tune a copy of `pretrained` on `pairs`; returns its EMA policy and the log
    (loss and implicit accuracy every 50 steps)."""
    if config.bc_weight > 0 and not demonstrations:
        raise ValueError("bc_weight > 0 needs the pretraining demonstrations")
    torch.manual_seed(config.seed)
    policy_config = pretrained.config
    reference = copy.deepcopy(pretrained).eval().requires_grad_(False)
    policy = copy.deepcopy(pretrained)
    winners, losers = decisive_pairs(pairs)
    win_windows, lose_windows = ChunkWindows(winners, policy_config), ChunkWindows(losers, policy_config)
    demo_windows = ChunkWindows(demonstrations, policy_config) if config.bc_weight > 0 else None
    trainer = PolicyTrainer(policy, config.trainer, config.steps, log_dir=run_dir / "tensorboard")
    reference.to(trainer.ctx.device)
    device = trainer.ctx.device
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    log, brackets = [], []

    def to_device(batch):
        obs, actions, _ = batch
        return {k: v.to(device) for k, v in obs.items()}, actions.to(device)

    for _ in tqdm(range(config.steps), desc="DPO", disable=not (config.progress and trainer.ctx.is_main)):
        chosen = rng.integers(0, len(winners), config.trainer.batch_size)
        winner = to_device(win_windows.batch(win_windows.windows_of(chosen, rng)))
        loser = to_device(lose_windows.batch(lose_windows.windows_of(chosen, rng)))
        with trainer.autocast():
            loss, bracket = dpo_loss(policy, reference, winner, loser, config.beta, generator)
            if demo_windows is not None:
                obs, actions = to_device(demo_windows.batch(rng.integers(0, len(demo_windows), config.trainer.batch_size)))
                loss = loss + config.bc_weight * policy.bc_loss(obs, actions, generator=generator)
        accuracy = float((bracket < 0).float().mean())
        trainer.update(loss, {"implicit_accuracy": accuracy})
        brackets.append(accuracy)
        if trainer.step % 50 == 0 or trainer.step == config.steps:
            log.append({"step": trainer.step, "loss": float(loss.detach()), "implicit_accuracy": float(np.mean(brackets))})
            brackets = []
    trainer.close()
    return trainer.averaged(), log
