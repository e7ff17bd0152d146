"""The diffusion policy: observation history in, action chunk out, by denoising Gaussian
noise with the conditional UNet; normalizer and noise schedules inside; saved as
safetensors + a JSON config.

Shapes: obs["state"] (B, To, Ds) float, obs[camera] (B, To, H, W, 3) uint8
-> chunk (B, H, Da) -> executed actions (B, Ta, Da), all in environment units.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import load_file, save_file
from torch import nn

from policies.diffusion.configuration import CameraConfig, DiffusionPolicyConfig
from policies.diffusion.modeling import ConditionalUnet1D, ObservationEncoder
from policies.diffusion.normalizer import Normalizer

Observation = Mapping[str, torch.Tensor]
CHECKPOINT_FORMAT = "embodied-pref diffusion policy"
CHECKPOINT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class DiffusionPolicy(nn.Module):
    """Denoises action chunks conditioned on the encoded observation history."""

    def __init__(self, config: DiffusionPolicyConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        dims = {"action": config.action_dim, **({"state": config.state_dim} if config.state_dim else {})}
        self.normalizer = Normalizer(dims)
        self.obs_encoder = ObservationEncoder(config, load_pretrained)
        self.unet = ConditionalUnet1D(config.action_dim, self.obs_encoder.output_dim, config.down_dims,
                                      config.kernel_size, config.n_groups, config.step_embedding_dim)
        schedule = dict(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
                        clip_sample=config.clip_sample, prediction_type="epsilon")
        self.noise_scheduler = DDPMScheduler(**schedule)
        self.ddim_scheduler = DDIMScheduler(**schedule)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def condition(self, obs: Observation) -> torch.Tensor:
        """Global conditioning (B, C) of an observation history (states unnormalized)."""
        obs = dict(obs)
        if self.config.state_dim:
            obs["state"] = self.normalizer.normalize("state", obs["state"].float())
        return self.obs_encoder(obs)

    def predicted_noise(self, cond: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
                        timesteps: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t | cond) for the chunks noised by `noise` at `timesteps`: (B, H, Da).

        cond (B, C); actions (B, H, Da) in env units; noise (B, H, Da); timesteps (B,) long.
        """
        clean = self.normalizer.normalize("action", actions)
        return self.unet(self.noise_scheduler.add_noise(clean, noise, timesteps), timesteps, cond)

    def noise_prediction_error(self, cond: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
                               timesteps: torch.Tensor) -> torch.Tensor:
        """‖ε − ε_θ(x_t, t | cond)‖² per sample, averaged over the chunk: (B,) (shapes as `predicted_noise`)."""
        return (self.predicted_noise(cond, actions, noise, timesteps) - noise).square().mean(dim=(1, 2))

    def bc_loss(self, obs: Observation, actions: torch.Tensor, weights: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The denoising (behaviour-cloning) loss, optionally weighted per sample: scalar."""
        # Drawn on the CPU, where a seeded generator lives, then moved: the same draws on any device.
        noise = torch.randn(actions.shape, generator=generator).to(actions.device)
        timesteps = torch.randint(0, self.config.train_timesteps, (actions.shape[0],), generator=generator
                                  ).to(actions.device)
        errors = self.noise_prediction_error(self.condition(obs), actions, noise, timesteps)
        return errors.mean() if weights is None else (weights * errors).sum() / weights.sum().clamp_min(1e-12)

    @torch.no_grad()
    def sample_chunk(self, obs: Observation, generator: torch.Generator | None = None,
                     sampler: str | None = None, steps: int | None = None, noise_scale: float | None = None
                     ) -> torch.Tensor:
        """A denoised action chunk (B, H, Da) in env units. `sampler`/`steps`/`noise_scale`
        override the config's (ddpm always runs all train_timesteps steps)."""
        sampler = sampler or self.config.sampler
        scheduler = self.noise_scheduler if sampler == "ddpm" else self.ddim_scheduler
        scheduler.set_timesteps(self.config.train_timesteps if sampler == "ddpm" else steps or self.config.inference_steps)
        cond = self.condition(obs)
        shape = (cond.shape[0], self.config.horizon, self.config.action_dim)
        scale = self.config.noise_scale if noise_scale is None else noise_scale
        x = (scale * torch.randn(shape, generator=generator, device="cpu")).to(cond.device)
        for t in scheduler.timesteps:
            eps = self.unet(x, t.to(cond.device).expand(shape[0]), cond)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return self.normalizer.unnormalize("action", x)

    def executed_actions(self, chunk: torch.Tensor) -> torch.Tensor:
        """The Ta actions of a chunk (B, H, Da) that run from the latest observation: (B, Ta, Da)."""
        first = self.config.n_obs_steps - 1
        return chunk[:, first:first + self.config.n_action_steps]

    def predict_action(self, obs: Observation, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs history -> the next Ta actions (B, Ta, Da)."""
        return self.executed_actions(self.sample_chunk(obs, generator))

    def save(self, directory: str | Path) -> None:
        """`directory`/config.json + model.safetensors; written to temporary names, then renamed."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        header = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": dataclasses.asdict(self.config)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, directory / f"{WEIGHTS_FILE}.tmp")
        (directory / f"{CONFIG_FILE}.tmp").write_text(json.dumps(header, indent=2))
        (directory / f"{WEIGHTS_FILE}.tmp").replace(directory / WEIGHTS_FILE)
        (directory / f"{CONFIG_FILE}.tmp").replace(directory / CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "DiffusionPolicy":
        """Load a policy written by `save`; errors name the file and field."""
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: no diffusion policy config (expected {CONFIG_FILE} "
                                    f"and {WEIGHTS_FILE} written by DiffusionPolicy.save)")
        try:
            header = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from None
        if header.get("format") != CHECKPOINT_FORMAT or header.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{config_path}: field 'format'/'version': expected {CHECKPOINT_FORMAT!r} version "
                             f"{CHECKPOINT_VERSION}, found {header.get('format')!r} version {header.get('version')!r}")
        fields = dict(header["config"])
        fields["cameras"] = tuple(CameraConfig(**c) for c in fields.get("cameras", ()))
        try:
            config = DiffusionPolicyConfig(**fields)
        except TypeError as err:
            raise ValueError(f"{config_path}: field 'config': {err}") from None
        policy = cls(config, load_pretrained=False)
        weights = directory / WEIGHTS_FILE
        try:
            state = load_file(weights)
        except Exception as err:  # a missing file, or safetensors' own error for a corrupt one
            raise ValueError(f"{weights}: cannot read the policy weights ({err})") from None
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights}: tensors do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return policy.to(device)
