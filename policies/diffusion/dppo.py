"""DPPO (Ren et al. 2024): PPO over the denoising MDP of a diffusion policy.

Sampling a chunk runs N DDIM denoising steps. The frozen pretrained policy runs the first
N − K of them deterministically; a fine-tuned copy runs the last K, each a Gaussian
x_{k-1} ~ N(μ_θ(x_k, t_k | obs), σ_k²) with μ the DDIM (η = 0) mean and
σ_k = max(η·σ_DDIM(k), min_std). Each executed chunk is one env step whose reward is the
learned reward summed over its actions; a critic V(obs history) on the environment state
gives GAE advantages, and denoising step k (counted from the last, k = 0) sees the
env-step advantage discounted by γ_denoise^k. The actor's loss is PPO's clipped ratio of the
per-step log-probabilities (averaged over the chunk's dimensions and clamped, as DPPO does),
plus an optional BC anchor on the demonstrations.

Evaluation uses the `DPPOPolicy` saved by the trainer: the same N and K, deterministic means
(a mismatch in K between fine-tuning and evaluation is what DPPO's issue 29 traced a halved
success rate to, so K travels with the checkpoint).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from embodied_pref.data import Trajectory
from embodied_pref.distributed import distributed_context
from embodied_pref.reward_nets import RewardFn, trajectory_rewards
from policies.diffusion.policy import DiffusionPolicy, Observation
from policies.diffusion.runner import (ChunkRecorder, ChunkSampler, Decisions, observation_history, policy_sampler,
                                      recorder, rollout_returns, run_episodes)
from policies.diffusion.training import PolicyTrainer, TrainerConfig
from policies.diffusion.windows import ChunkWindows

LOG_PROB_CLAMP = (-5.0, 2.0)
DPPO_FILE = "dppo.json"


@dataclass(frozen=True)
class DenoisingConfig:
    """How a DPPO policy samples."""

    denoising_steps: int = 10
    """N: DDIM steps per chunk."""
    finetuned_steps: int = 5
    """K: the last K steps run by the fine-tuned copy."""
    eta: float = 1.0
    """DDIM η of the fine-tuned steps' noise (before the floor)."""
    min_std: float = 0.1
    """Floor on every fine-tuned step's std (sampling and log-probabilities)."""

    def __post_init__(self) -> None:
        if not 1 <= self.finetuned_steps <= self.denoising_steps:
            raise ValueError(f"finetuned_steps: expected 1..denoising_steps, found {self.finetuned_steps}")
        if not self.min_std > 0:
            raise ValueError(f"min_std: expected > 0, found {self.min_std}")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, std²)."""
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * np.log(2 * np.pi)


class DPPOPolicy(nn.Module):
    """Frozen base for the first N − K DDIM steps, fine-tuned actor for the last K."""

    def __init__(self, base: DiffusionPolicy, actor: DiffusionPolicy, denoising: DenoisingConfig) -> None:
        super().__init__()
        self.base, self.actor, self.denoising = base.requires_grad_(False).eval(), actor, denoising
        self.config = base.config
        scheduler = copy.deepcopy(base.ddim_scheduler)
        scheduler.set_timesteps(denoising.denoising_steps)
        self.timesteps = scheduler.timesteps.clone()
        alphas = base.noise_scheduler.alphas_cumprod
        self.register_buffer("alpha_t", alphas[self.timesteps].float(), persistent=False)
        previous = torch.cat([alphas[self.timesteps[1:]], torch.ones(1)])
        self.register_buffer("alpha_prev", previous.float(), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.actor.device

    def step_mean_std(self, model: DiffusionPolicy, x: torch.Tensor, i: int, cond: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM step i (of N) from x (B, H, Da): mean (B, H, Da) and the step's std (scalar)."""
        t = self.timesteps[i].to(x.device).expand(x.shape[0])
        eps = model.unet(x, t, cond)
        a_t, a_prev = self.alpha_t[i], self.alpha_prev[i]
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if self.config.clip_sample:
            x0 = x0.clamp(-1, 1)
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        ddim_std = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp_min(0).sqrt()
        return mean, (self.denoising.eta * ddim_std).clamp_min(self.denoising.min_std)

    def first_finetuned_step(self) -> int:
        return self.denoising.denoising_steps - self.denoising.finetuned_steps

    @torch.no_grad()
    def sample(self, obs: Observation, generator: torch.Generator | None = None, deterministic: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(chain (B, K+1, H, Da) of normalized chunks entering/leaving the fine-tuned steps,
        executed actions (B, Ta, Da) in env units). Exploring, x_T has unit std; deterministic,
        the policy's `noise_scale`."""
        base_cond, cond = self.base.condition(obs), self.actor.condition(obs)
        shape = (base_cond.shape[0], self.config.horizon, self.config.action_dim)
        scale = self.config.noise_scale if deterministic else 1.0
        x = (scale * torch.randn(shape, generator=generator)).to(base_cond.device)
        for i in range(self.first_finetuned_step()):
            x, _ = self.step_mean_std(self.base, x, i, base_cond)
        chain = [x]
        for i in range(self.first_finetuned_step(), self.denoising.denoising_steps):
            mean, std = self.step_mean_std(self.actor, x, i, cond)
            noise = torch.randn(shape, generator=generator).to(x.device)
            x = mean if deterministic else mean + std * noise
            chain.append(x)
        actions = self.actor.normalizer.unnormalize("action", x.clamp(-1, 1))
        return torch.stack(chain, 1), self.actor.executed_actions(actions)

    def log_probs(self, obs: Observation, chain: torch.Tensor) -> torch.Tensor:
        """Per fine-tuned step log-probability of `chain` (B, K+1, H, Da): (B, K), averaged
        over the executed actions' dimensions and clamped."""
        cond = self.actor.condition(obs)
        first, ta = self.config.n_obs_steps - 1, self.config.n_action_steps
        out = []
        for k, i in enumerate(range(self.first_finetuned_step(), self.denoising.denoising_steps)):
            mean, std = self.step_mean_std(self.actor, chain[:, k], i, cond)
            log_prob = gaussian_log_prob(chain[:, k + 1], mean, std)[:, first:first + ta]
            out.append(log_prob.clamp(*LOG_PROB_CLAMP).mean(dim=(1, 2)))
        return torch.stack(out, 1)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.base.save(directory / "base")
        self.actor.save(directory / "actor")
        (directory / DPPO_FILE).write_text(json.dumps(asdict(self.denoising), indent=2))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "DPPOPolicy":
        directory = Path(directory)
        path = directory / DPPO_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a DPPO policy (expected {DPPO_FILE}, base/ and actor/)")
        try:
            denoising = DenoisingConfig(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: expected the fields of DenoisingConfig ({err})") from None
        return cls(DiffusionPolicy.load(directory / "base", device), DiffusionPolicy.load(directory / "actor", device),
                   denoising).to(device)


def dppo_sampler(policy: DPPOPolicy, seed: int, deterministic: bool = True,
                 record: ChunkRecorder | None = None) -> ChunkSampler:
    """A runner sampler; `record(env indices, obs, chain)` sees every sampled chain."""
    generator = torch.Generator().manual_seed(seed)

    def sample(obs: dict[str, torch.Tensor], envs: np.ndarray) -> np.ndarray:
        obs = {k: v.to(policy.device) for k, v in obs.items()}
        chain, actions = policy.sample(obs, generator, deterministic)
        if record is not None:
            record(envs, obs, chain)
        return actions.cpu().numpy()

    return sample


def acting_sampler(policy: DiffusionPolicy | DPPOPolicy, seed: int) -> ChunkSampler:
    """How a trained policy acts: a DPPO policy by its deterministic means, any other as it samples."""
    if isinstance(policy, DPPOPolicy):
        return dppo_sampler(policy, seed, deterministic=True)
    return policy_sampler(policy, seed)


def load_trained_policy(directory: str | Path, device: str | torch.device = "cpu") -> DiffusionPolicy | DPPOPolicy:
    """A policy saved by any diffusion trainer: a DPPO policy when `directory` holds one."""
    loader = DPPOPolicy if (Path(directory) / DPPO_FILE).is_file() else DiffusionPolicy
    return loader.load(directory, device)


@dataclass(frozen=True)
class DPPOConfig:
    """DPPO fine-tuning."""

    iterations: int = 10
    """Rollout → PPO-update iterations."""
    episodes_per_iteration: int = 16
    """Episodes per iteration (in lockstep)."""
    denoising: DenoisingConfig = field(default_factory=DenoisingConfig)
    """N, K and the step noise."""
    gamma: float = 0.99
    """Discount per executed chunk."""
    gae_lambda: float = 0.95
    """GAE λ over chunks."""
    gamma_denoise: float = 0.99
    """Discount per denoising step of the advantage."""
    clip_ratio: float = 0.1
    """PPO clip range."""
    epochs: int = 5
    """Passes over each iteration's samples."""
    minibatch: int = 256
    """(chunk, denoising step) samples per actor update."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Critic MLP widths."""
    critic_learning_rate: float = 1e-3
    """Critic Adam step size."""
    bc_weight: float = 0.0
    """Weight of a BC anchor on the demonstrations (0: the frozen base steps and the clip are the anchor)."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(learning_rate=1e-5, warmup_steps=10, batch_size=64))
    """Actor optimizer, EMA and hardware (batch_size: BC anchor windows)."""
    progress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.clip_ratio < 1:
            raise ValueError(f"clip_ratio: expected in (0, 1), found {self.clip_ratio}")


class Critic(nn.Module):
    """V(obs history): normalized states (B, To, Ds) -> (B,)."""

    def __init__(self, policy: DiffusionPolicy, hidden: tuple[int, ...]) -> None:
        super().__init__()
        if not policy.config.state_dim:
            raise ValueError("DPPO's critic reads the environment state: the policy needs state_dim > 0")
        self.normalizer = policy.normalizer
        layers, width = [], policy.config.n_obs_steps * policy.config.state_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Mish()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalizer.normalize("state", states).flatten(1)).squeeze(-1)


@dataclass
class ChunkBatch:
    """One iteration's executed chunks, flattened over episodes: M chunks."""

    obs: dict[str, torch.Tensor]
    chains: torch.Tensor       # (M, K+1, H, Da)
    old_log_probs: torch.Tensor  # (M, K)
    advantages: torch.Tensor   # (M,)
    returns: torch.Tensor      # (M,)


def _gae(rewards: np.ndarray, values: np.ndarray, last_value: float, gamma: float, lam: float
         ) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) of one episode's chunks; the episode's end bootstraps `last_value`."""
    advantages = np.zeros_like(rewards)
    running, next_value = 0.0, last_value
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t], next_value = running, values[t]
    return advantages, advantages + values


def train_dppo(
    start: DiffusionPolicy | DPPOPolicy,
    reward_fn: RewardFn,
    make_env: Callable[[], gym.Env],
    run_dir: Path,
    config: DPPOConfig = DPPOConfig(),
    demonstrations: Sequence[Trajectory] = (),
    *,
    first_seed: int = 20_000,
    on_iteration: Callable[[int, DPPOPolicy, list[Trajectory]], dict] | None = None,
) -> tuple[DPPOPolicy, list[dict]]:
    """Fine-tune the last K denoising steps with PPO on `reward_fn`, starting from a pretrained
    policy (its copy is the frozen base) or continuing a DPPO policy (same base and K, a fresh
    critic); returns the DPPO policy and one log row per iteration (learned and ground-truth
    return of its rollouts, plus `on_iteration`'s metrics)."""
    if config.bc_weight > 0 and not demonstrations:
        raise ValueError("bc_weight > 0 needs the pretraining demonstrations")
    torch.manual_seed(config.seed)
    if isinstance(start, DPPOPolicy):
        base, actor, denoising = start.base, copy.deepcopy(start.actor), start.denoising
    else:
        base, actor, denoising = copy.deepcopy(start), copy.deepcopy(start), config.denoising
    pcfg = base.config
    device = distributed_context(config.trainer.device).device
    # PPO samples from the policy it updates (not an EMA of it); eval mode keeps camera
    # crops centred, so that sampling and log-probabilities see the same conditioning.
    model = DPPOPolicy(base, actor, denoising).to(device).eval()
    critic = Critic(actor, config.critic_hidden).to(device)
    critic_optimizer = torch.optim.Adam(critic.net.parameters(), lr=config.critic_learning_rate)
    demo_windows = ChunkWindows(demonstrations, pcfg) if config.bc_weight > 0 else None
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    trainer: PolicyTrainer | None = None
    log = []
    for iteration in tqdm(range(config.iterations), desc="DPPO", disable=not config.progress):
        records: dict[int, list[tuple[dict, torch.Tensor]]] = {}
        seeds = [first_seed + iteration * config.episodes_per_iteration + i for i in range(config.episodes_per_iteration)]
        episodes = run_episodes(make_env, seeds, pcfg,
                                dppo_sampler(model, config.seed * 7919 + iteration, False, recorder(records)))
        batch = _chunk_batch(model, critic, episodes, records, reward_fn, config, device)
        if trainer is None:
            updates = config.iterations * config.epochs * _minibatch_count(batch, config)
            trainer = PolicyTrainer(actor, config.trainer, updates, log_dir=run_dir / "tensorboard")
            actor.eval()
        row = {"iteration": iteration, **rollout_returns(reward_fn, episodes)}
        if on_iteration is not None:
            row.update(on_iteration(iteration, model, episodes))
        row.update(_ppo_update(model, critic, critic_optimizer, trainer, batch, config, demo_windows, rng, generator))
        log.append(row)
        trainer.log({k: v for k, v in row.items() if k != "iteration"}, "dppo")
    if trainer is not None:
        trainer.close()
    return model, log


def _minibatch_count(batch: ChunkBatch, config: DPPOConfig) -> int:
    k_steps = batch.chains.shape[1] - 1
    return max(1, batch.chains.shape[0] // max(1, config.minibatch // k_steps))


@torch.no_grad()
def _chunk_batch(model: DPPOPolicy, critic: Critic, episodes: list[Trajectory],
                 records: dict[int, list[tuple[dict, torch.Tensor]]], reward_fn: RewardFn,
                 config: DPPOConfig, device: torch.device) -> ChunkBatch:
    """Chunk rewards (learned, summed over each chunk's executed actions), GAE and old log-probs."""
    decisions = Decisions.from_records(records)
    chunk_rewards = decisions.executed_sums([trajectory_rewards(reward_fn, e) for e in episodes],
                                            model.config.n_action_steps)
    obs = {key: v.to(device) for key, v in decisions.obs.items()}
    values = critic(obs["state"]).cpu().numpy()
    advantages, returns = np.zeros_like(chunk_rewards), np.zeros_like(chunk_rewards)
    for env_index, episode in enumerate(episodes):
        rows = decisions.episode == env_index
        last = torch.from_numpy(observation_history([episode.observations], model.config.n_obs_steps))
        last_value = 0.0 if episode.terminated else float(critic(last.to(device))[0])
        advantages[rows], returns[rows] = _gae(chunk_rewards[rows], values[rows], last_value, config.gamma,
                                               config.gae_lambda)
    chains = decisions.sampled.to(device)
    return ChunkBatch(obs, chains, model.log_probs(obs, chains),
                      torch.from_numpy(advantages).to(device), torch.from_numpy(returns).to(device))


def _ppo_update(model: DPPOPolicy, critic: Critic, critic_optimizer: torch.optim.Optimizer, trainer: PolicyTrainer,
                batch: ChunkBatch, config: DPPOConfig, demo_windows: ChunkWindows | None,
                rng: np.random.Generator, generator: torch.Generator) -> dict[str, float]:
    """PPO epochs over (chunk, fine-tuned step) samples; the critic regresses the returns."""
    m, k_steps = batch.chains.shape[0], batch.chains.shape[1] - 1
    advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    # Step k = 0 is the last denoising step; earlier steps see a more discounted advantage.
    discount = config.gamma_denoise ** torch.arange(k_steps - 1, -1, -1, device=advantages.device, dtype=torch.float32)
    stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": []}
    for _ in range(config.epochs):
        for chosen in np.array_split(rng.permutation(m), _minibatch_count(batch, config)):
            idx = torch.from_numpy(chosen).to(advantages.device)
            obs = {key: v[idx] for key, v in batch.obs.items()}
            with trainer.autocast():
                new = model.log_probs(obs, batch.chains[idx])
            ratio = (new - batch.old_log_probs[idx]).exp()
            adv = advantages[idx][:, None] * discount[None]
            loss = -torch.min(ratio * adv, ratio.clamp(1 - config.clip_ratio, 1 + config.clip_ratio) * adv).mean()
            if demo_windows is not None:
                d_obs, d_actions, _ = demo_windows.batch(rng.integers(0, len(demo_windows), config.trainer.batch_size))
                loss = loss + config.bc_weight * model.actor.bc_loss(
                    {k: v.to(advantages.device) for k, v in d_obs.items()}, d_actions.to(advantages.device),
                    generator=generator)
            trainer.update(loss)
            value_loss = (critic(obs["state"]) - batch.returns[idx]).square().mean()
            critic_optimizer.zero_grad(set_to_none=True)
            value_loss.backward()
            critic_optimizer.step()
            stats["policy_loss"].append(float(loss.detach()))
            stats["value_loss"].append(float(value_loss.detach()))
            stats["clip_fraction"].append(float(((ratio - 1).abs() > config.clip_ratio).float().mean()))
            stats["approx_kl"].append(float((batch.old_log_probs[idx] - new).mean().detach()))
    return {key: float(np.mean(v)) for key, v in stats.items()}
