"""Behaviour-cloning pretraining of a diffusion policy on demonstrations.

Reads top to bottom: split the demonstrations by episode, fit the normalizer, then minibatch
denoising updates with per-batch EMA; every `eval_every` steps the EMA policy is scored on the
held-out episodes' denoising loss (`val_loss`, fixed noise) and, when an `evaluate` callback is
given, by its metrics (e.g. `eval_score` from env rollouts); the top-k policies by the named
`monitor` metric are kept. A run directory with a training state resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from embodied_pref.data import Trajectory
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.training import PolicyTrainer, TopKCheckpoints, TrainerConfig
from policies.diffusion.windows import ChunkWindows

Evaluate = Callable[[DiffusionPolicy], dict[str, float]]
"""EMA policy -> metrics (e.g. {"eval_score": ...} from rollouts)."""


@dataclass(frozen=True)
class BCConfig:
    """Behaviour-cloning pretraining."""

    steps: int = 3000
    """Optimizer steps."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Optimizer, EMA and hardware."""
    val_fraction: float = 0.1
    """Share of episodes held out for `val_loss` (at least one when there are two or more)."""
    eval_every: int = 500
    """Steps between validations (and checkpoints)."""
    monitor: str = "val_loss"
    """Metric that ranks checkpoints: val_loss, or a key the evaluate callback returns."""
    monitor_mode: str = "min"
    """min or max."""
    top_k: int = 3
    """Checkpoints kept."""
    state_normalization: str = "gaussian"
    """State normalizer: gaussian (mean/std) or limits."""
    progress: bool = True
    """Show a progress bar."""
    seed: int = 0
    """Seeds the split, batches, noise and initialization."""


@dataclass(frozen=True)
class BCReport:
    steps: int
    train_windows: int
    val_windows: int
    history: list[dict]
    best_checkpoint: str | None


def split_episodes(trajectories: Sequence[Trajectory], val_fraction: float, seed: int
                   ) -> tuple[list[Trajectory], list[Trajectory]]:
    """(train, held out) by episode."""
    order = np.random.default_rng(seed).permutation(len(trajectories))
    n_val = 0 if len(trajectories) < 2 else max(1, round(val_fraction * len(trajectories)))
    return [trajectories[i] for i in order[n_val:]], [trajectories[i] for i in order[:n_val]]


def fit_normalizer(policy: DiffusionPolicy, windows: ChunkWindows, state_mode: str) -> None:
    """Actions: the data's range, as Diffusion Policy does; states: `state_mode` on the data.

    Not the env's action box: it can be far wider than the commands that matter (X-MAGICAL's
    turn saturates at 1/16 of it), which would leave the denoiser that sliver of [-1, 1].
    """
    policy.normalizer.fit("action", windows.actions, "limits")
    if windows.states is not None:
        policy.normalizer.fit("state", windows.states, state_mode)


@torch.no_grad()
def validation_loss(policy: DiffusionPolicy, windows: ChunkWindows, seed: int, max_windows: int = 2048) -> float:
    """Mean denoising error on (up to `max_windows` of) `windows`, with fixed noise and timesteps."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(windows), generator=generator)[:max_windows].numpy()
    errors = []
    for batch in np.array_split(pick, max(1, len(pick) // 512)):
        obs, actions, _ = windows.batch(batch)
        obs = {k: v.to(policy.device) for k, v in obs.items()}
        actions = actions.to(policy.device)
        noise = torch.randn(actions.shape, generator=generator).to(policy.device)
        t = torch.randint(0, policy.config.train_timesteps, (len(batch),), generator=generator).to(policy.device)
        errors.append(policy.noise_prediction_error(policy.condition(obs), actions, noise, t))
    return float(torch.cat(errors).mean())


def pretrain(
    policy_config: DiffusionPolicyConfig,
    demonstrations: Sequence[Trajectory],
    run_dir: Path,
    config: BCConfig = BCConfig(),
    *,
    evaluate: Evaluate | None = None,
) -> tuple[DiffusionPolicy, BCReport]:
    """Train a policy by BC on `demonstrations`; returns its EMA weights and a report.

    Writes to `run_dir`: tensorboard/, train_state.pt (resume), checkpoints/ (top-k by
    `config.monitor`, with best.json) and policy/ (the final EMA policy).
    """
    torch.manual_seed(config.seed)
    train_eps, val_eps = split_episodes(demonstrations, config.val_fraction, config.seed)
    train_windows = ChunkWindows(train_eps, policy_config)
    val_windows = ChunkWindows(val_eps, policy_config) if val_eps else None
    policy = DiffusionPolicy(policy_config)
    fit_normalizer(policy, train_windows, config.state_normalization)
    trainer = PolicyTrainer(policy, config.trainer, config.steps, log_dir=run_dir / "tensorboard")
    extra = trainer.load_state(run_dir) or {}
    history: list[dict] = extra.get("history", [])
    top_k = TopKCheckpoints(run_dir / "checkpoints", config.monitor, config.monitor_mode, config.top_k)
    device = trainer.ctx.device
    bar = tqdm(total=config.steps, initial=trainer.step, desc="BC", disable=not (config.progress and trainer.ctx.is_main))
    while trainer.step < config.steps:
        # Each step's batch and noise come from its own seed, so a resumed run repeats an uninterrupted one.
        rng = np.random.default_rng([config.seed, trainer.ctx.rank, trainer.step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        obs, actions, _ = train_windows.batch(rng.integers(0, len(train_windows), config.trainer.batch_size))
        obs = {k: v.to(device) for k, v in obs.items()}
        with trainer.autocast():
            loss = policy.bc_loss(obs, actions.to(device), generator=generator)
        trainer.update(loss)
        bar.update(1)
        if trainer.step % config.eval_every == 0 or trainer.step == config.steps:
            averaged = trainer.averaged()
            metrics = {"step": trainer.step, "train_loss": float(loss.detach())}
            if val_windows is not None:
                metrics["val_loss"] = validation_loss(averaged, val_windows, config.seed)
            if evaluate is not None and trainer.ctx.is_main:
                metrics.update(evaluate(averaged))
            history.append(metrics)
            trainer.log({k: v for k, v in metrics.items() if k != "step"}, "val")
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "step"})
            if trainer.ctx.is_main and config.monitor in metrics:
                top_k.consider(metrics[config.monitor], trainer.step, averaged.save)
            trainer.save_state(run_dir, {"history": history})
    bar.close()
    averaged = trainer.averaged()
    if trainer.ctx.is_main:
        averaged.save(run_dir / "policy")
    trainer.close()
    best = top_k.best
    return averaged, BCReport(trainer.step, len(train_windows), len(val_windows) if val_windows else 0, history,
                              None if best is None else str(best))


@dataclass(frozen=True)
class StatePolicyConfig:
    """A new state-conditioned policy; its state and action sizes come from the demonstrations."""

    unet: str = "cpu"
    """UNet preset: tiny, cpu or low-dim."""
    n_action_steps: int = 8
    """Ta: actions executed from each sampled chunk (fewer reacts sooner, at more denoising calls)."""
    noise_scale: float = 1.0
    """Std of the initial noise it acts with (0: deterministic, for deterministic demonstrators)."""

    def for_demonstrations(self, demonstrations: Sequence[Trajectory]) -> DiffusionPolicyConfig:
        return DiffusionPolicyConfig(state_dim=demonstrations[0].observations.shape[1],
                                     action_dim=demonstrations[0].actions.shape[1], unet=self.unet,
                                     n_action_steps=self.n_action_steps, noise_scale=self.noise_scale)


def pretrain_state_policy(
    demonstrations: Sequence[Trajectory],
    run_dir: Path,
    config: BCConfig = BCConfig(),
    policy: StatePolicyConfig = StatePolicyConfig(),
) -> tuple[DiffusionPolicy, BCReport]:
    """`pretrain` a state-conditioned policy shaped by the demonstrations."""
    return pretrain(policy.for_demonstrations(demonstrations), demonstrations, run_dir, config)
