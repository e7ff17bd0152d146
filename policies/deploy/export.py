"""Exporting a diffusion policy for deployment: its two networks as TorchScript and ONNX,
beside everything the sampler needs to run without the policy's Python objects.

An export directory holds:

    deploy.json              format + version, the policy config, the observation inputs, the
                             DDIM schedule, the normalizer's statistics, each format written
                             (or why it was skipped) and the SHA-256 of every file
    encoder.pt/.onnx         observations -> conditioning (B, C), state normalization inside:
                             state (B, To, Ds) float32, camera (B, To, H, W, 3) uint8
    film.pt/.onnx            (timestep t (B,) int64, cond (B, C) float32) -> every UNet
                             block's FiLM scale and shift (B, F): one call for all the steps
                             of a chunk, since it does not depend on the noisy sample
    denoiser.pt/.onnx        (sample x_t (B, H, Da) float32, film (B, F) float32) -> predicted
                             noise (B, H, Da)
    policy/                  the PyTorch policy (`DiffusionPolicy.save`), for the eager backend

A format that fails to export, or whose networks differ from PyTorch's by more than
`EXPORT_TOLERANCE` on check inputs of another batch size, is skipped with a warning, and the
reason is recorded in deploy.json's "formats"; loading that backend then raises an error
quoting it. The export is written to a temporary directory beside `directory` and renamed
into place, so an interrupted export never leaves a partial directory.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.modeling import ConditionalUnet1D
from policies.diffusion.policy import DiffusionPolicy

DEPLOY_FORMAT = "embodied-pref deployed diffusion policy"
DEPLOY_VERSION = 2
DEPLOY_FILE = "deploy.json"
POLICY_DIR = "policy"
"""Subdirectory holding the policy as `DiffusionPolicy.save` writes it."""
FORMAT_FILES = {"torchscript": ("encoder.pt", "film.pt", "denoiser.pt"),
                "onnx": ("encoder.onnx", "film.onnx", "denoiser.onnx")}
"""Files of each format: (encoder, FiLM network, denoiser)."""
FILM_INPUTS = ("timestep", "cond")
DENOISER_INPUTS = ("sample", "film")
ONNX_OPSET = 18
"""Opset of the torch.export-based exporter (its conversion down to 17 has no Mish)."""
LEGACY_ONNX_OPSET = 17
"""Opset of the TorchScript-based exporter, tried when the torch.export-based one fails."""
EXPORT_TOLERANCE = 1e-4
"""Largest abs difference allowed between an exported network's outputs and PyTorch's."""
EXAMPLE_BATCH, CHECK_BATCH = 2, 3
"""Batch sizes of the tracing inputs and of the check inputs (another size: the batch axis is dynamic)."""


def import_onnxruntime() -> ModuleType:
    """onnxruntime, an optional dependency (the `robot` extra): imported when ONNX is used."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise ModuleNotFoundError("ONNX export and the onnxruntime backend need the onnxruntime package "
                                  "(pip install 'embodied-pref[robot]')") from None
    return onnxruntime


class ObservationConditioner(nn.Module):
    """`DiffusionPolicy.condition` with positional inputs, in `input_names` order, for tracing:
    state (B, To, Ds) float32 (unnormalized), camera (B, To, H, W, 3) uint8 -> cond (B, C).

    It holds only what `condition` reads (config, normalizer, encoder) and runs that method on
    itself, so that the traced encoder carries no UNet weights.
    """

    def __init__(self, policy: DiffusionPolicy, input_names: Sequence[str]) -> None:
        super().__init__()
        self.config, self.normalizer, self.obs_encoder = policy.config, policy.normalizer, policy.obs_encoder
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return DiffusionPolicy.condition(self, dict(zip(self.input_names, inputs)))


def observation_inputs(config: DiffusionPolicyConfig, frame_sizes: Mapping[str, tuple[int, int]] | None = None
                       ) -> dict[str, dict]:
    """{input name: {"shape": per-step shape, "dtype": ...}}: "state" first (if any), then the
    cameras in config order, each (H, W, 3) uint8 with (H, W) from `frame_sizes` (default: its
    image_size, square)."""
    frame_sizes = dict(frame_sizes or {})
    unknown = set(frame_sizes) - {c.name for c in config.cameras}
    if unknown:
        raise ValueError(f"frame_sizes: {sorted(unknown)} are not cameras of the policy "
                         f"({[c.name for c in config.cameras]})")
    inputs = {"state": {"shape": [config.state_dim], "dtype": "float32"}} if config.state_dim else {}
    for camera in config.cameras:
        height, width = frame_sizes.get(camera.name, (camera.image_size, camera.image_size))
        inputs[camera.name] = {"shape": [int(height), int(width), 3], "dtype": "uint8"}
    return inputs


def ddim_schedule(scheduler: DDIMScheduler) -> dict:
    """What a DDIM loop needs to reproduce `scheduler.step` with eta = 0 and its timesteps
    (diffusers' "leading" spacing, the only one the runtime implements)."""
    config = scheduler.config
    if config.timestep_spacing != "leading" or config.prediction_type != "epsilon" or config.thresholding:
        raise ValueError(f"ddim_scheduler: expected timestep_spacing 'leading', prediction_type 'epsilon' and no "
                         f"thresholding, found {config.timestep_spacing!r}, {config.prediction_type!r}, "
                         f"thresholding={config.thresholding}")
    return {
        "num_train_timesteps": int(config.num_train_timesteps),
        "beta_schedule": config.beta_schedule,
        "alphas_cumprod": scheduler.alphas_cumprod.tolist(),
        "final_alpha_cumprod": float(scheduler.final_alpha_cumprod),
        "set_alpha_to_one": bool(config.set_alpha_to_one),
        "steps_offset": int(config.steps_offset),
        "timestep_spacing": config.timestep_spacing,
        "prediction_type": config.prediction_type,
        "clip_sample": bool(config.clip_sample),
        "clip_sample_range": float(config.clip_sample_range),
    }


def normalizer_statistics(policy: DiffusionPolicy) -> dict[str, dict[str, list[float]]]:
    """{"action": {"offset", "scale"}, "state": ...}: normalized = (x - offset) / scale."""
    names = ["action", "state"] if policy.config.state_dim else ["action"]
    return {name: {"offset": getattr(policy.normalizer, f"{name}_offset").tolist(),
                   "scale": getattr(policy.normalizer, f"{name}_scale").tolist()} for name in names}


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _network_inputs(policy: DiffusionPolicy, inputs: Mapping[str, dict], batch: int, seed: int
                    ) -> tuple[tuple[torch.Tensor, ...], ...]:
    """Random (encoder inputs, FiLM network inputs, denoiser inputs) of batch size `batch`;
    states drawn around the normalizer's statistics, so that normalized states are of order
    one as in use."""
    config, generator = policy.config, torch.Generator().manual_seed(seed)
    observations = []
    for name, spec in inputs.items():
        shape = (batch, config.n_obs_steps, *spec["shape"])
        if name == "state":
            normalized = torch.randn(shape, generator=generator)
            observations.append(policy.normalizer.unnormalize("state", normalized))
        else:
            observations.append(torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8))
    timestep = torch.randint(0, config.train_timesteps, (batch,), generator=generator)
    with torch.no_grad():
        cond = policy.condition(dict(zip(inputs, observations)))
        film = policy.unet.film(timestep, cond)
    sample = torch.randn(batch, config.horizon, config.action_dim, generator=generator)
    return tuple(observations), (timestep, cond), (sample, film)


def _max_error(found: np.ndarray | torch.Tensor, expected: torch.Tensor) -> float:
    return float(np.abs(np.asarray(found, np.float64) - expected.double().numpy()).max())


def _export_torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], check: tuple[torch.Tensor, ...],
                        input_names: Sequence[str], path: Path) -> dict:
    with warnings.catch_warnings(), torch.no_grad():
        # Shape checks in Python (e.g. the UNet's divisibility test) become constants: intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation: TorchScript is still asked for
        torch.jit.trace(module, example, check_trace=False).save(str(path))
        error = _max_error(torch.jit.load(str(path))(*check), module(*check))
    return {"max_abs_error": error}


def _export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], check: tuple[torch.Tensor, ...],
                 input_names: Sequence[str], path: Path) -> dict:
    import_onnxruntime()  # before exporting: without it the export could not be checked
    common = dict(input_names=list(input_names), output_names=["output"], verbose=False)
    try:
        batch = torch.export.Dim.AUTO
        torch.onnx.export(module, example, str(path), dynamo=True, opset_version=ONNX_OPSET, external_data=False,
                          dynamic_shapes={"inputs": tuple({0: batch} for _ in input_names)}, **common)
        exporter = f"torch.export-based, opset {ONNX_OPSET}"
    except Exception as err:
        path.unlink(missing_ok=True)
        dynamo_failure = f"torch.export-based exporter failed: {_first_line(err)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the fallback on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            try:
                torch.onnx.export(module, example, str(path), dynamo=False, opset_version=LEGACY_ONNX_OPSET,
                                  dynamic_axes={name: {0: "batch"} for name in [*input_names, "output"]}, **common)
            except Exception as legacy_err:
                raise RuntimeError(f"{dynamo_failure}; TorchScript-based exporter failed: "
                                   f"{_first_line(legacy_err)}") from legacy_err
        exporter = f"TorchScript-based, opset {LEGACY_ONNX_OPSET} ({dynamo_failure})"
    session = import_onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found = session.run(None, {name: x.numpy() for name, x in zip(input_names, check)})[0]
    with torch.no_grad():
        error = _max_error(found, module(*check))
    return {"exporter": exporter, "max_abs_error": error}


class PlanarConvolution(nn.Module):
    """A `Conv1d` or `ConvTranspose1d` computed as its 2-D counterpart with a 1 × k kernel on
    (B, C, 1, L): the same numbers, but onnxruntime's CPU provider runs 2-D convolutions in its
    blocked (NCHWc) layout, which makes the UNet's denoiser call ~1.3× faster at batch 1."""

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d) -> None:
        super().__init__()
        self.transposed = isinstance(conv, nn.ConvTranspose1d)
        self.weight = nn.Parameter(conv.weight.detach()[:, :, None].clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        self.stride, self.padding, self.dilation = (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0])
        self.output_padding = (0, conv.output_padding[0])
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(2)
        if self.transposed:
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                   self.groups, self.dilation)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return y.squeeze(2)


def with_planar_convolutions(module: nn.Module) -> nn.Module:
    """A copy of `module` with every zero-padded 1-D (transposed) convolution a `PlanarConvolution`."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)) and child.padding_mode == "zeros":
                setattr(parent, name, PlanarConvolution(child))
    return module


class _PositionalFilm(nn.Module):
    """`ConditionalUnet1D.film` with its inputs as one positional tuple, the signature both
    exporters see. It holds only what `film` reads (the step encoder, the FiLM layers) and runs
    that method on itself, so that the traced network carries no convolution weights."""

    def __init__(self, unet: ConditionalUnet1D) -> None:
        super().__init__()
        self.step_encoder = unet.step_encoder
        self.layers = nn.ModuleList(unet.film_layers())

    def film_layers(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return ConditionalUnet1D.film(self, *inputs)


class _PositionalDenoiser(nn.Module):
    """`ConditionalUnet1D.denoise` with its inputs as one positional tuple; its 1-D
    convolutions planar (`PlanarConvolution`)."""

    def __init__(self, unet: ConditionalUnet1D) -> None:
        super().__init__()
        self.unet = with_planar_convolutions(unet)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.unet.denoise(*inputs)


EXPORTERS: dict[str, Callable[..., dict]] = {"torchscript": _export_torchscript, "onnx": _export_onnx}


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _export_format(name: str, policy: DiffusionPolicy, inputs: Mapping[str, dict], staging: Path) -> dict:
    """{"files", "networks": {file: exporter facts}} or {"skipped": reason}."""
    example = _network_inputs(policy, inputs, EXAMPLE_BATCH, seed=0)
    check = _network_inputs(policy, inputs, CHECK_BATCH, seed=1)
    networks = ((ObservationConditioner(policy, inputs), list(inputs)),
                (_PositionalFilm(policy.unet), list(FILM_INPUTS)),
                (_PositionalDenoiser(policy.unet), list(DENOISER_INPUTS)))
    facts = {}
    for file, (module, input_names), example_inputs, check_inputs in zip(FORMAT_FILES[name], networks, example, check):
        try:
            facts[file] = EXPORTERS[name](module.eval(), example_inputs, check_inputs, input_names, staging / file)
        except Exception as err:  # any exporter failure: the format is skipped, the reason recorded
            reason = f"{file}: {_first_line(err)}"
        else:
            if facts[file]["max_abs_error"] <= EXPORT_TOLERANCE:
                continue
            reason = (f"{file}: outputs differ from PyTorch's by {facts[file]['max_abs_error']:.2e} "
                      f"(> {EXPORT_TOLERANCE:g})")
        for written in FORMAT_FILES[name]:
            (staging / written).unlink(missing_ok=True)
        warnings.warn(f"export: format {name!r} skipped: {reason}", RuntimeWarning, stacklevel=3)
        return {"skipped": reason}
    return {"files": list(FORMAT_FILES[name]), "networks": facts}


def _check_replaceable(directory: Path) -> None:
    """An export replaces an earlier export or an empty directory, never anything else."""
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir())
                                                          and not (directory / DEPLOY_FILE).is_file())):
        raise FileExistsError(f"{directory}: exists and is not a policy export (no {DEPLOY_FILE}); "
                              f"choose another directory")


def _move_into_place(staging: Path, directory: Path) -> None:
    """Rename `staging` to `directory`, replacing what `_check_replaceable` allowed there."""
    if not directory.exists():
        staging.rename(directory)
        return
    previous = staging.with_name(staging.name + ".previous")
    directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous)


def export_policy(policy: DiffusionPolicy, directory: str | Path, formats: Iterable[str] = ("torchscript", "onnx"),
                  frame_sizes: Mapping[str, tuple[int, int]] | None = None) -> Path:
    """Write `policy` as a deployable directory (see the module docstring); returns its path.

    Args:
        policy: The policy (on any device; exported from a CPU copy in eval mode).
        directory: Where the export goes; an earlier export there is replaced.
        formats: Any of "torchscript" and "onnx" (the PyTorch policy is always saved too).
        frame_sizes: Camera name -> (H, W) of the frames the robot sends (default: the camera's
            image_size, square). The exported encoder takes exactly that size.
    """
    formats = tuple(formats)
    unknown = set(formats) - set(FORMAT_FILES)
    if unknown:
        raise ValueError(f"formats: expected any of {sorted(FORMAT_FILES)}, found {sorted(unknown)}")
    directory = Path(directory)
    _check_replaceable(directory)
    policy = copy.deepcopy(policy).cpu().eval()
    inputs = observation_inputs(policy.config, frame_sizes)
    header = {"format": DEPLOY_FORMAT, "version": DEPLOY_VERSION, "config": dataclasses.asdict(policy.config),
              "inputs": inputs, "schedule": ddim_schedule(policy.ddim_scheduler),
              "normalizer": normalizer_statistics(policy), "torch_version": torch.__version__}
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        policy.save(staging / POLICY_DIR)
        header["formats"] = {name: _export_format(name, policy, inputs, staging) for name in formats}
        header["files"] = {path.relative_to(staging).as_posix(): sha256(path)
                           for path in sorted(staging.rglob("*")) if path.is_file()}
        (staging / DEPLOY_FILE).write_text(json.dumps(header, indent=2))
        _move_into_place(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
