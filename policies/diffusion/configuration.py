"""Configuration of a diffusion policy: network shape, action chunking and noise schedule."""

from __future__ import annotations

from dataclasses import dataclass

UNET_PRESETS: dict[str, tuple[int, ...]] = {
    "low-dim": (256, 512, 1024),
    "cpu": (64, 128, 256),
    "tiny": (32, 64, 128),
}
"""UNet channel widths: Diffusion Policy's low-dim default (65 M parameters), a CPU preset
(4.5 M) and a tiny one (1.4 M) for minutes-long CPU experiments and tests."""

SAMPLERS = ("ddpm", "ddim")


@dataclass(frozen=True)
class CameraConfig:
    """One camera the policy conditions on, each with its own timm encoder."""

    name: str = "frames"
    """Key of its frames in the observation dict: (B, To, H, W, 3) uint8 ("frames": the
    trajectory's rendered frames)."""
    image_size: int = 64
    """Frames are resized to this square size before cropping."""
    crop_size: int = 56
    """Random crop while training, centre crop when acting."""
    backbone: str = "resnet18"
    """Any timm model name; its pooled features feed the FiLM conditioning."""
    pretrained: bool = False
    """Load timm's ImageNet weights (needs the network)."""


@dataclass(frozen=True)
class DiffusionPolicyConfig:
    """A conditional 1-D UNet denoising action chunks, conditioned on an observation history.

    Shapes: obs["state"] (B, To, Ds) and obs[camera] (B, To, H, W, 3) -> actions (B, Ta, Da),
    with To = n_obs_steps, Ta = n_action_steps, sampled from a chunk of `horizon` steps
    that starts at the first observed step.
    """

    state_dim: int
    """Ds: state-vector size (0 when the policy sees cameras only)."""
    action_dim: int
    """Da: action size."""
    horizon: int = 16
    """Steps in a denoised action chunk (a multiple of 4: the UNet halves it twice)."""
    n_obs_steps: int = 2
    """To: observations the policy conditions on."""
    n_action_steps: int = 8
    """Ta: actions executed from each chunk before sampling again."""
    unet: str = "cpu"
    """Channel preset: tiny (32/64/128), cpu (64/128/256) or low-dim (256/512/1024, Diffusion Policy's)."""
    kernel_size: int = 5
    """Temporal convolution kernel."""
    n_groups: int = 8
    """GroupNorm groups."""
    step_embedding_dim: int = 128
    """Size of the sinusoidal diffusion-step embedding."""
    train_timesteps: int = 100
    """DDPM noise levels."""
    beta_schedule: str = "squaredcos_cap_v2"
    """Noise schedule (diffusers' name)."""
    clip_sample: bool = True
    """Clip the predicted clean chunk to [-1, 1] (the normalized action limits)."""
    sampler: str = "ddim"
    """ddpm (all train_timesteps steps) or ddim (inference_steps steps)."""
    inference_steps: int = 10
    """Denoising steps when sampling with DDIM."""
    noise_scale: float = 1.0
    """Std of the noise x_T that sampling starts from. 1 samples the learned distribution;
    less concentrates the samples on its densest actions, and 0 with DDIM (deterministic
    after x_T) acts deterministically: the choice for a deterministic demonstrator, where
    an imperfectly trained model's spread around the demonstrated action is only error."""
    cameras: tuple[CameraConfig, ...] = ()
    """Cameras to condition on (none: state only)."""

    def __post_init__(self) -> None:
        if self.state_dim < 0 or self.action_dim < 1:
            raise ValueError(f"state_dim/action_dim: expected >= 0 / >= 1, found {self.state_dim}/{self.action_dim}")
        if self.state_dim == 0 and not self.cameras:
            raise ValueError("DiffusionPolicyConfig: expected a state_dim > 0 or at least one camera")
        if self.horizon < 4 or self.horizon % 4:
            raise ValueError(f"horizon: expected a multiple of 4, found {self.horizon}")
        if not 1 <= self.n_obs_steps <= self.horizon:
            raise ValueError(f"n_obs_steps: expected 1..horizon, found {self.n_obs_steps}")
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError(f"n_action_steps: expected 1..horizon - n_obs_steps + 1, found {self.n_action_steps}")
        if self.unet not in UNET_PRESETS:
            raise ValueError(f"unet: expected one of {sorted(UNET_PRESETS)}, found {self.unet!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {SAMPLERS}, found {self.sampler!r}")
        if not self.noise_scale >= 0:
            raise ValueError(f"noise_scale: expected >= 0, found {self.noise_scale}")
        if not 1 <= self.inference_steps <= self.train_timesteps:
            raise ValueError(f"inference_steps: expected 1..train_timesteps, found {self.inference_steps}")
        if len({c.name for c in self.cameras}) != len(self.cameras) or any(c.name == "state" for c in self.cameras):
            raise ValueError("cameras: expected distinct names other than 'state'")

    @property
    def down_dims(self) -> tuple[int, ...]:
        return UNET_PRESETS[self.unet]
