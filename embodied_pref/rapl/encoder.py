"""The visual encoder: a timm backbone (ResNet-18 by default) and a linear projection.

Frame preprocessing (`preprocess_frames`): uint8 (…, H, W, 3) RGB → float32 (…, 3, S, S) in
[0, 1], resized to S = `image_size` (112 in RAPL) with antialiased bilinear interpolation.
RAPL feeds [0, 1] frames without ImageNet mean/std normalization; `imagenet_normalize=True`
applies it (use it with timm ImageNet weights if you want their training statistics).

Start weights, in order of precedence: `encoder_weights` (a state-dict file: the whole
encoder's `state_dict()`, or the backbone's alone), else timm's `pretrained=True` (needs the
weights to be reachable), else a random initialization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import timm
import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderConfig:
    """Backbone, projection, start weights and preprocessing."""

    backbone: str = "resnet18"
    """Any timm model name; its pooled features feed the projection."""
    embedding_dim: int = 32
    """Output width of the linear projection (RAPL: 512 → 32)."""
    pretrained: bool = False
    """Start from timm's pretrained weights (downloads them; needs network access)."""
    encoder_weights: Path | None = None
    """A state-dict file to start from instead (whole encoder or backbone only)."""
    freeze_backbone: bool = False
    """Train only the projection (the backbone stays in eval mode)."""
    image_size: int = 112
    """Frames are resized to image_size × image_size."""
    imagenet_normalize: bool = False
    """Subtract ImageNet mean and divide by std after scaling to [0, 1]."""
    pool_grid: int = 1
    """Average-pool the backbone's last feature map to pool_grid × pool_grid cells and
    concatenate them (features: num_features · pool_grid²); 1 is global average pooling (RAPL).
    A grid keeps where things are in the frame, which global pooling of features that were not
    trained for the task (a random or briefly self-supervised backbone) mostly loses."""

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ValueError(f"field 'embedding_dim': expected an int >= 1, found {self.embedding_dim!r}")
        if self.pool_grid < 1:
            raise ValueError(f"field 'pool_grid': expected an int >= 1, found {self.pool_grid!r}")
        if self.image_size < 8:
            raise ValueError(f"field 'image_size': expected an int >= 8, found {self.image_size!r}")
        if self.encoder_weights is not None and not Path(self.encoder_weights).is_file():
            raise ValueError(f"field 'encoder_weights': no such file {str(self.encoder_weights)!r}")


def preprocess_frames(frames: torch.Tensor, image_size: int, imagenet_normalize: bool = False) -> torch.Tensor:
    """frames: (…, H, W, 3) uint8 -> (…, 3, image_size, image_size) float32 in [0, 1]
    (or ImageNet-normalized)."""
    if frames.dtype != torch.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 (..., H, W, 3), found {frames.dtype} {tuple(frames.shape)}")
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp(0.0, 1.0)
    if imagenet_normalize:
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.reshape(*lead, 3, image_size, image_size)


def resize_frames(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize uint8 frames once, ahead of training: (…, H, W, 3) -> (…, S, S, 3) uint8."""
    x = preprocess_frames(frames, image_size)
    return (x * 255.0).round().to(torch.uint8).movedim(-3, -1)


def pad_videos(clips: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """Stack videos of unequal length: each (T_i, H, W, 3) uint8 -> (N, max T_i, H, W, 3)
    uint8; a shorter video repeats its last frame."""
    arrays = [np.asarray(clip) for clip in clips]
    length = max(len(a) for a in arrays)
    return torch.from_numpy(np.stack([np.concatenate([a, np.repeat(a[-1:], length - len(a), axis=0)]) for a in arrays]))


class FrameEncoder(nn.Module):
    """frames (…, H, W, 3) uint8 -> embeddings (…, embedding_dim) float32."""

    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(
            config.backbone, pretrained=config.pretrained and config.encoder_weights is None, num_classes=0,
            **({} if config.pool_grid == 1 else {"global_pool": ""}),
        )
        self.projection = nn.Linear(self.feature_dim, config.embedding_dim)
        if config.encoder_weights is not None:
            self.load_weights(config.encoder_weights)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        """Width of the backbone's pooled features."""
        return int(self.backbone.num_features) * self.config.pool_grid ** 2

    def train(self, mode: bool = True) -> FrameEncoder:
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x)
        if self.config.pool_grid > 1:
            out = F.adaptive_avg_pool2d(out, self.config.pool_grid).flatten(1)
        return out

    def features(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Backbone features: frames (…, H, W, 3) uint8 -> (…, feature_dim), in chunks of
        `batch_size` frames."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        chunks = [
            self._pooled(preprocess_frames(flat[i : i + batch_size], self.config.image_size,
                                           self.config.imagenet_normalize))
            for i in range(0, flat.shape[0], batch_size)
        ]
        return torch.cat(chunks).reshape(*lead, -1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(frames))

    def load_weights(self, path: str | Path) -> None:
        """Load a state-dict file: the encoder's own keys (backbone.*, projection.*) or the
        backbone's alone. Raises ValueError naming the file and the mismatched keys."""
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ValueError(f"encoder_weights {str(path)!r}: expected a state dict, found {type(state).__name__}")
        target: nn.Module = self if any(k.startswith("backbone.") for k in state) else self.backbone
        result = target.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"encoder_weights {str(path)!r}: does not match backbone {self.config.backbone!r} "
                f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
            )
