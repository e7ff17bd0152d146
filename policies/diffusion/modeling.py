"""Networks of the diffusion policy: Diffusion Policy's conditional 1-D temporal UNet
(FiLM-conditioned residual blocks over the action chunk) and the observation encoder that
turns an observation history into its global conditioning vector."""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from policies.diffusion.configuration import CameraConfig, DiffusionPolicyConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step t (B,) -> (B, dim) sinusoidal features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=t.device) * -(math.log(10_000) / (half - 1)))
        angle = t.float()[:, None] * freq[None]
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


def conv_block(c_in: int, c_out: int, kernel_size: int, n_groups: int) -> nn.Sequential:
    """Conv1d -> GroupNorm -> Mish, length preserved."""
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
        nn.GroupNorm(n_groups, c_out),
        nn.Mish(),
    )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the conditioning vector scales and shifts the first one's output."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.first = conv_block(c_in, c_out, kernel_size, n_groups)
        self.second = conv_block(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), film = self.film(cond) (B, 2 C_out) -> (B, C_out, T)."""
        scale, shift = film[:, :, None].chunk(2, dim=1)
        out = self.second(self.first(x) * scale + shift)
        return out + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Predicts the noise in a noisy action chunk.

    forward(sample (B, H, Da), timestep (B,), global_cond (B, C)) -> (B, H, Da), in two parts:
    `film(timestep, global_cond)`, every residual block's FiLM scale and shift, which does not
    depend on the sample (a sampler can compute it for all its steps at once), and
    `denoise(sample, film)`. The chunk length H must be divisible by 2 ** (len(down_dims) - 1).
    """

    def __init__(self, action_dim: int, global_cond_dim: int, down_dims: tuple[int, ...],
                 kernel_size: int = 5, n_groups: int = 8, step_embedding_dim: int = 128) -> None:
        super().__init__()
        self.step_encoder = nn.Sequential(
            SinusoidalStepEmbedding(step_embedding_dim),
            nn.Linear(step_embedding_dim, 4 * step_embedding_dim),
            nn.Mish(),
            nn.Linear(4 * step_embedding_dim, step_embedding_dim),
        )
        cond_dim = step_embedding_dim + global_cond_dim
        widths = (action_dim, *down_dims)
        levels = list(zip(widths[:-1], widths[1:]))

        def block(c_in: int, c_out: int) -> FiLMResidualBlock:
            return FiLMResidualBlock(c_in, c_out, cond_dim, kernel_size, n_groups)

        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                block(c_in, c_out), block(c_out, c_out),
                nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
            ]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                block(2 * c_out, c_in), block(c_in, c_in), nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(conv_block(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))
        self.downsampling = 2 ** (len(down_dims) - 1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        return self.denoise(sample, self.film(timestep.expand(sample.shape[0]), global_cond))

    def film_blocks(self) -> list[FiLMResidualBlock]:
        """The residual blocks in the order `denoise` runs them."""
        return [block for level in (*self.down, self.mid, *self.up) for block in level
                if isinstance(block, FiLMResidualBlock)]

    def film_layers(self) -> list[nn.Module]:
        """Each residual block's FiLM layer (cond -> scale and shift), in `film_blocks` order."""
        return [block.film for block in self.film_blocks()]

    def film(self, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        """timestep (B,), global_cond (B, C) -> every block's FiLM parameters, concatenated (B, F).
        Reads only `step_encoder` and `film_layers()`."""
        cond = torch.cat([self.step_encoder(timestep), global_cond], dim=-1)
        return torch.cat([layer(cond) for layer in self.film_layers()], dim=-1)

    def denoise(self, sample: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """sample (B, H, Da), film = self.film(...) (B, F) -> predicted noise (B, H, Da)."""
        if sample.shape[1] % self.downsampling:
            raise ValueError(f"sample: chunk length {sample.shape[1]} is not divisible by {self.downsampling}")
        films = iter(film.split([layer[-1].out_features for layer in self.film_layers()], dim=-1))
        x = sample.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down:
            x = second(first(x, next(films)), next(films))
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, next(films))
        for first, second, upsample in self.up:
            x = second(first(torch.cat([x, skips.pop()], dim=1), next(films)), next(films))
            x = upsample(x)
        return self.final(x).transpose(1, 2)


def _group_norm_for_batch_norm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for a GroupNorm (batch statistics do not mix with EMA weights)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(max(1, child.num_features // 16), child.num_features))
        else:
            _group_norm_for_batch_norm(child)
    return module


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random `size` x `size` crop of each image: (N, C, H, W) -> (N, C, size, size)."""
    n, _, h, w = images.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator, device="cpu").to(images.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator, device="cpu").to(images.device)
    rows = (top[:, None] + torch.arange(size, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(size, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return images[batch, channels, rows, cols]


class CameraEncoder(nn.Module):
    """Frames (N, H, W, 3) uint8 -> features (N, F) through a timm backbone."""

    def __init__(self, camera: CameraConfig, load_pretrained: bool = True) -> None:
        """`load_pretrained=False` builds the same network without fetching weights (a
        checkpoint is about to overwrite them)."""
        super().__init__()
        import timm  # the vision extra; state-only policies never need it

        self.camera = camera
        backbone = timm.create_model(camera.backbone, pretrained=camera.pretrained and load_pretrained, num_classes=0)
        self.backbone = backbone if camera.pretrained else _group_norm_for_batch_norm(backbone)
        self.feature_dim = int(backbone.num_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        size, crop = self.camera.image_size, self.camera.crop_size
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if self.training:
            x = random_crops(x, crop)
        else:
            offset = (size - crop) // 2
            x = x[..., offset:offset + crop, offset:offset + crop]
        return self.backbone((x - self.mean) / self.std)


class ObservationEncoder(nn.Module):
    """Observation history -> global conditioning (B, To * (Ds + Σ camera features)).

    obs["state"]: (B, To, Ds) float, already normalized; obs[camera]: (B, To, H, W, 3) uint8.
    """

    def __init__(self, config: DiffusionPolicyConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.state_dim = config.state_dim
        self.cameras = nn.ModuleDict({c.name: CameraEncoder(c, load_pretrained) for c in config.cameras})
        per_step = config.state_dim + sum(e.feature_dim for e in self.cameras.values())
        self.output_dim = config.n_obs_steps * per_step

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [obs["state"]] if self.state_dim else []
        for name, encoder in self.cameras.items():
            frames = obs[name]
            b, t = frames.shape[:2]
            parts.append(encoder(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1))
        return torch.cat(parts, dim=-1).flatten(1)
