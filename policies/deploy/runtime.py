"""The deployed policy on the robot: loads an export (`policies.deploy.export`), keeps the last
To observations and returns one action per control step, sampling a new action chunk every Ta
steps by DDIM (eta = 0) in numpy around the exported networks: the encoder once per chunk, the
FiLM network once per chunk for all its steps, the denoiser once per step.

Backends: "onnxruntime" (*.onnx), "torchscript" (*.pt) and "eager" (the PyTorch policy saved in
the export, for comparisons); all three run the same sampler. Observations: {"state": (Ds,)
float, camera: (H, W, 3) uint8} per step.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from policies.deploy.export import (DENOISER_INPUTS, DEPLOY_FILE, DEPLOY_FORMAT, DEPLOY_VERSION, FILM_INPUTS,
                                    FORMAT_FILES, POLICY_DIR, ObservationConditioner, import_onnxruntime, sha256)
from policies.diffusion.configuration import CameraConfig, DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import observation_history

BACKENDS = ("onnxruntime", "torchscript", "eager")
BACKEND_FORMATS = {"onnxruntime": "onnx", "torchscript": "torchscript"}
"""The export format each compiled backend runs."""


class Networks(Protocol):
    """The three networks of a policy, on numpy arrays."""

    def condition(self, observations: Sequence[np.ndarray]) -> np.ndarray:
        """Inputs in deploy.json's "inputs" order, each (B, To, ...) -> cond (B, C) float32."""

    def film(self, timestep: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """t (B,) int64, cond (B, C) float32 -> FiLM parameters (B, F) float32."""

    def denoise(self, sample: np.ndarray, film: np.ndarray) -> np.ndarray:
        """x_t (B, H, Da) float32, film (B, F) -> predicted noise (B, H, Da)."""


class OnnxNetworks:
    """The ONNX networks in onnxruntime sessions on the CPU."""

    def __init__(self, files: Sequence[Path], input_names: Sequence[str], threads: int | None) -> None:
        onnxruntime = import_onnxruntime()
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.encoder, self.film_network, self.denoiser = (_loaded(path, lambda p: onnxruntime.InferenceSession(
            str(p), options, providers=["CPUExecutionProvider"])) for path in files)
        self.input_names = tuple(input_names)

    def condition(self, observations: Sequence[np.ndarray]) -> np.ndarray:
        return self.encoder.run(None, dict(zip(self.input_names, observations)))[0]

    def film(self, timestep: np.ndarray, cond: np.ndarray) -> np.ndarray:
        return self.film_network.run(None, dict(zip(FILM_INPUTS, (timestep, cond))))[0]

    def denoise(self, sample: np.ndarray, film: np.ndarray) -> np.ndarray:
        return self.denoiser.run(None, dict(zip(DENOISER_INPUTS, (sample, film))))[0]


class TorchNetworks:
    """TorchScript modules, or the PyTorch policy's own networks, on the CPU."""

    def __init__(self, encoder: Callable[..., torch.Tensor], film: Callable[..., torch.Tensor],
                 denoiser: Callable[..., torch.Tensor]) -> None:
        self.encoder, self.film_network, self.denoiser = encoder, film, denoiser

    @torch.inference_mode()
    def condition(self, observations: Sequence[np.ndarray]) -> np.ndarray:
        return self.encoder(*(torch.from_numpy(x) for x in observations)).numpy()

    @torch.inference_mode()
    def film(self, timestep: np.ndarray, cond: np.ndarray) -> np.ndarray:
        return self.film_network(torch.from_numpy(timestep), torch.from_numpy(cond)).numpy()

    @torch.inference_mode()
    def denoise(self, sample: np.ndarray, film: np.ndarray) -> np.ndarray:
        return self.denoiser(torch.from_numpy(sample), torch.from_numpy(film)).numpy()


def _loaded(path: Path, load: Callable[[Path], object]):
    try:
        return load(path)
    except Exception as err:  # each loader has its own error types for an unreadable file
        raise ValueError(f"{path}: cannot load ({type(err).__name__}: {err})") from None


@dataclass(frozen=True)
class DDIMSampler:
    """diffusers' `DDIMScheduler.step` with eta = 0 over its "leading" timesteps, in float32
    numpy: x0 = (x - √(1-ᾱ_t) ε) / √ᾱ_t, clipped if configured, then
    x_prev = √ᾱ_prev x0 + √(1-ᾱ_prev) ε."""

    timesteps: np.ndarray
    """(K,) int64 diffusion steps, from noisiest."""
    alpha: np.ndarray
    """(K,) float32 ᾱ at each step."""
    alpha_prev: np.ndarray
    """(K,) float32 ᾱ of the step each one leads to (final_alpha_cumprod after the last)."""
    clip_range: float | None
    """Clip the predicted clean chunk to ±clip_range (None: no clipping)."""

    @classmethod
    def from_schedule(cls, schedule: Mapping, steps: int) -> "DDIMSampler":
        """`schedule`: deploy.json's "schedule"; `steps`: 1..num_train_timesteps."""
        train_steps = schedule["num_train_timesteps"]
        if not 1 <= steps <= train_steps:
            raise ValueError(f"steps: expected 1..{train_steps}, found {steps}")
        alphas = np.asarray(schedule["alphas_cumprod"], np.float32)
        stride = train_steps // steps
        timesteps = np.arange(steps)[::-1] * stride + schedule["steps_offset"]
        previous = timesteps - stride
        alpha_prev = np.where(previous >= 0, alphas[np.maximum(previous, 0)], np.float32(schedule["final_alpha_cumprod"]))
        return cls(timesteps.astype(np.int64), alphas[timesteps], alpha_prev.astype(np.float32),
                   float(schedule["clip_sample_range"]) if schedule["clip_sample"] else None)

    def sample(self, x: np.ndarray, predict_noise: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
        """x_T (B, H, Da) float32 -> x_0; `predict_noise(x_t, k)` -> ε (B, H, Da) at step
        `timesteps[k]`."""
        one = np.float32(1)
        for k, (alpha, alpha_prev) in enumerate(zip(self.alpha, self.alpha_prev)):
            eps = predict_noise(x, k)
            clean = (x - (one - alpha) ** 0.5 * eps) / alpha ** 0.5
            if self.clip_range is not None:
                clean = np.clip(clean, -self.clip_range, self.clip_range)
            x = alpha_prev ** 0.5 * clean + (one - alpha_prev) ** 0.5 * eps
        return x


def read_header(directory: Path) -> dict:
    """deploy.json of an export, its format checked; errors name the file and field."""
    path = directory / DEPLOY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no deployed policy here (expected {DEPLOY_FILE} written by export_policy)")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != DEPLOY_FORMAT or header.get("version") != DEPLOY_VERSION:
        found = (header.get("format"), header.get("version")) if isinstance(header, dict) else type(header).__name__
        raise ValueError(f"{path}: field 'format'/'version': expected {DEPLOY_FORMAT!r} version {DEPLOY_VERSION}, "
                         f"found {found}")
    for field in ("config", "inputs", "schedule", "normalizer", "formats", "files"):
        if field not in header:
            raise ValueError(f"{path}: field {field!r}: missing")
    try:
        policy_config(header)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: field 'config': {err}") from None
    return header


def policy_config(header: Mapping) -> DiffusionPolicyConfig:
    """The policy config recorded in deploy.json."""
    fields = dict(header["config"])
    fields["cameras"] = tuple(CameraConfig(**c) for c in fields.get("cameras", ()))
    return DiffusionPolicyConfig(**fields)


def verified_file(directory: Path, header: Mapping, name: str) -> Path:
    """`directory`/`name`, checked against the SHA-256 deploy.json recorded for it."""
    path = directory / name
    expected = header["files"].get(name)
    if expected is None:
        raise ValueError(f"{directory / DEPLOY_FILE}: field 'files': no entry for {name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the export (deploy.json lists it); export the policy again")
    found = sha256(path)
    if found != expected:
        raise ValueError(f"{path}: corrupt: SHA-256 {found[:16]}… differs from {expected[:16]}… recorded in "
                         f"{DEPLOY_FILE}; export the policy again")
    return path


def load_networks(directory: Path, header: Mapping, backend: str, threads: int | None) -> Networks:
    input_names = list(header["inputs"])
    if backend == "eager":
        for name in header["files"]:
            if name.startswith(f"{POLICY_DIR}/"):
                verified_file(directory, header, name)
        policy = DiffusionPolicy.load(directory / POLICY_DIR).eval()
        return TorchNetworks(ObservationConditioner(policy, input_names), policy.unet.film, policy.unet.denoise)
    format_name = BACKEND_FORMATS[backend]
    written = header["formats"].get(format_name)
    if written is None:
        raise ValueError(f"{directory / DEPLOY_FILE}: field 'formats': {format_name!r} was not exported "
                         f"(exported: {sorted(header['formats'])}); backend {backend!r} needs it")
    if "skipped" in written:
        raise ValueError(f"{directory / DEPLOY_FILE}: field 'formats': {format_name!r} was skipped at export "
                         f"({written['skipped']}); backend {backend!r} needs it")
    files = [verified_file(directory, header, name) for name in FORMAT_FILES[format_name]]
    if backend == "onnxruntime":
        return OnnxNetworks(files, input_names, threads)
    return TorchNetworks(*(_loaded(path, lambda p: torch.jit.load(str(p), map_location="cpu")) for path in files))


def checked_input(spec: Mapping, value: object, leading: tuple[int, ...], where: str) -> np.ndarray:
    """`value` as an array of shape `leading` + spec["shape"] and spec["dtype"]; ValueError naming `where`."""
    expected = (*leading, *spec["shape"])
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{where}: expected an array of shape {expected}, found ragged values ({err})") from None
    if array.shape != expected:
        raise ValueError(f"{where}: expected shape {expected}, found {array.shape}")
    if spec["dtype"] == "uint8":
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
                raise ValueError(f"{where}: expected uint8 pixels 0..255, found dtype {array.dtype}")
            array = array.astype(np.uint8)
        return array
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{where}: expected numbers, found dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: expected finite values, found NaN or inf")
    return array


def checked_observations(inputs: Mapping[str, Mapping], observations: object, leading: tuple[int, ...], where: str
                         ) -> dict[str, np.ndarray]:
    """Every input of `observations` (other keys are ignored) through `checked_input`."""
    if not isinstance(observations, Mapping):
        raise ValueError(f"{where}: expected a mapping with keys {list(inputs)}, found {type(observations).__name__}")
    missing = [name for name in inputs if name not in observations]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r} (expected keys {list(inputs)})")
    return {name: checked_input(spec, observations[name], leading, f"{where}[{name!r}]") for name, spec in inputs.items()}


class DeployedPolicy:
    """An exported diffusion policy behind a control-loop API: `reset()` at the start of an
    episode, then `act(observation) -> action (Da,)` once per control step.

    Chunks are always sampled by DDIM (eta = 0), also for a policy whose config samples by DDPM.
    """

    def __init__(self, header: Mapping, networks: Networks, backend: str, steps: int | None = None,
                 latency_budget_s: float | None = None, seed: int | None = None) -> None:
        self.config = policy_config(header)
        self.inputs: dict[str, dict] = dict(header["inputs"])
        """Observation keys -> {"shape": per-step shape, "dtype"}."""
        self.networks, self.backend = networks, backend
        self.steps = self.config.inference_steps if steps is None else steps
        self.sampler = DDIMSampler.from_schedule(header["schedule"], self.steps)
        action = header["normalizer"]["action"]
        self.action_offset = np.asarray(action["offset"], np.float32)
        self.action_scale = np.asarray(action["scale"], np.float32)
        self.latency_budget_s = latency_budget_s
        """Longest acceptable time to sample a chunk; a slower one warns (once)."""
        self.last_sample_s: float | None = None
        """Seconds the latest `sample_chunk` took."""
        self.rng = np.random.default_rng(seed)
        self._over_budget_warned = False
        self._history: deque[dict[str, np.ndarray]] = deque(maxlen=self.config.n_obs_steps)
        self._actions: deque[np.ndarray] = deque()

    @classmethod
    def load(cls, directory: str | Path, backend: str = "onnxruntime", steps: int | None = None,
             control_hz: float | None = None, latency_budget_s: float | None = None,
             threads: int | None = None, seed: int | None = None) -> "DeployedPolicy":
        """Load an export written by `export_policy`.

        Args:
            directory: The export directory.
            backend: onnxruntime, torchscript or eager (the PyTorch policy saved in the export).
            steps: DDIM steps per chunk (default: the policy's inference_steps).
            control_hz: Control rate; the latency budget defaults to one period, 1 / control_hz.
            latency_budget_s: Longest acceptable chunk sampling time (overrides control_hz's).
            threads: onnxruntime's CPU threads (default: its own choice); torch's are the
                process's, `torch.set_num_threads`.
            seed: Seeds the noise that chunks start from.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, found {backend!r}")
        if control_hz is not None and not control_hz > 0:
            raise ValueError(f"control_hz: expected > 0, found {control_hz}")
        directory = Path(directory)
        header = read_header(directory)
        networks = load_networks(directory, header, backend, threads)
        budget = latency_budget_s if latency_budget_s is not None else (1 / control_hz if control_hz else None)
        return cls(header, networks, backend, steps, budget, seed)

    def sample_chunk(self, obs_history: Mapping[str, np.ndarray], noise: np.ndarray | None = None,
                     rng: np.random.Generator | None = None) -> np.ndarray:
        """An action chunk (H, Da) in env units for an observation history {"state": (To, Ds),
        camera: (To, H, W, 3) uint8}. `noise`: the standard normal draw (H, Da) that x_T is
        noise_scale times (default: drawn from `rng`, else the policy's own generator)."""
        start = time.perf_counter()
        config = self.config
        history = checked_observations(self.inputs, obs_history, (config.n_obs_steps,), "obs_history")
        shape = (config.horizon, config.action_dim)
        if noise is None:
            noise = (rng or self.rng).standard_normal(shape, dtype=np.float32)
        elif np.shape(noise) != shape:
            raise ValueError(f"noise: expected shape {shape}, found {np.shape(noise)}")
        cond = self.networks.condition([history[name][None] for name in self.inputs])
        films = self.networks.film(self.sampler.timesteps, np.repeat(cond, len(self.sampler.timesteps), axis=0))
        x = (np.float32(config.noise_scale) * np.asarray(noise, np.float32))[None]
        x = self.sampler.sample(x, lambda sample, k: self.networks.denoise(sample, films[k:k + 1]))
        chunk = x[0] * self.action_scale + self.action_offset
        self.last_sample_s = time.perf_counter() - start
        if self.latency_budget_s is not None and self.last_sample_s > self.latency_budget_s and not self._over_budget_warned:
            self._over_budget_warned = True
            warnings.warn(f"sampling an action chunk took {self.last_sample_s * 1e3:.1f} ms, over the latency budget "
                          f"of {self.latency_budget_s * 1e3:.1f} ms ({self.backend}, DDIM-{self.steps}); "
                          f"warned once", RuntimeWarning, stacklevel=2)
        return chunk

    def reset(self) -> None:
        """Forget the observation history and the actions left of the current chunk."""
        self._history.clear()
        self._actions.clear()

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The next action (Da,) float32 after `observation` ({"state": (Ds,), camera: (H, W, 3) uint8}).

        Every Ta calls (the first after `reset` included) it samples a chunk conditioned on the
        last To observations, the first repeated while fewer have arrived, as training pads
        episode starts; the actions come from the chunk's steps To-1 … To-1+Ta-1, those of
        `DiffusionPolicy.executed_actions`.
        """
        self._history.append(checked_observations(self.inputs, observation, (), "observation"))
        if not self._actions:
            history = {name: observation_history([[step[name] for step in self._history]], self.config.n_obs_steps)[0]
                       for name in self.inputs}
            first = self.config.n_obs_steps - 1
            self._actions.extend(self.sample_chunk(history)[first:first + self.config.n_action_steps])
        return self._actions.popleft()

