"""What every diffusion-policy trainer shares (BC, RWR, DPO, DPPO): AdamW with a cosine
schedule after warmup, EMA weights updated after every batch (Diffusion Policy's power 0.75),
gradients averaged across `torchrun` processes, bfloat16 autocast on CUDA, TensorBoard,
resumable training state and top-k checkpoints by a named metric."""

from __future__ import annotations

import copy
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from embodied_pref.distributed import autocast, average_gradients, distributed_context
from embodied_pref.durable import write_atomic
from policies.diffusion.policy import DiffusionPolicy

STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class TrainerConfig:
    """Optimization and hardware shared by the diffusion-policy trainers."""

    learning_rate: float = 1e-4
    """AdamW step size (Diffusion Policy's)."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    warmup_steps: int = 500
    """Linear warmup before the cosine decay."""
    ema_power: float = 0.75
    """EMA decay 1 - (1 + step) ** -power, updated after every batch."""
    grad_clip: float = 1.0
    """Max gradient norm (0: no clipping)."""
    batch_size: int = 256
    """Windows per optimizer step (per process under torchrun)."""
    device: str = "auto"
    """"auto": CUDA (the local rank's GPU under torchrun) when available, else CPU."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU)."""

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected > 0, found {self.learning_rate}")
        if self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError(f"batch_size/warmup_steps: expected >= 1 / >= 0, found {self.batch_size}/{self.warmup_steps}")


class PolicyTrainer:
    """Owns the optimizer, schedule and EMA of `policy` for a run of `total_steps` updates.

    `update(loss)` takes one step; `averaged()` is the EMA policy (what is evaluated and
    saved); `save_state`/`load_state` make the run resumable. Only the main process
    (rank 0) writes logs and files. Without `parameters`, every weight of `policy` trains.
    """

    def __init__(self, policy: DiffusionPolicy, config: TrainerConfig, total_steps: int,
                 log_dir: Path | None = None, parameters: list[nn.Parameter] | None = None) -> None:
        self.ctx = distributed_context(config.device)
        self.config = config
        self.policy = policy.to(self.ctx.device).train()
        # A policy handed over from another run (e.g. a frozen EMA copy) trains all its weights.
        self.parameters = parameters if parameters is not None else list(policy.requires_grad_(True).parameters())
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, betas=(0.95, 0.999),
                                           weight_decay=config.weight_decay)
        self.schedule = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, max(total_steps, 1))
        self.ema = EMAModel(self.parameters, decay=0.9999, min_decay=0.0, use_ema_warmup=True,
                            inv_gamma=1.0, power=config.ema_power)
        self._ema_policy = copy.deepcopy(policy).eval().requires_grad_(False)
        self._ema_parameters = self._matching(self._ema_policy)
        self.step = 0
        self.writer = SummaryWriter(str(log_dir)) if log_dir is not None and self.ctx.is_main else None

    def _matching(self, other: DiffusionPolicy) -> list[nn.Parameter]:
        """`other`'s parameters in the order of the trained ones."""
        names = {id(p): n for n, p in self.policy.named_parameters()}
        others = dict(other.named_parameters())
        return [others[names[id(p)]] for p in self.parameters]

    def autocast(self):
        return autocast(self.ctx.device, self.config.amp)

    def update(self, loss: torch.Tensor, metrics: dict[str, float] | None = None) -> None:
        """Backpropagate `loss`, average gradients across processes, step, update the EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.ctx.world_size > 1:
            average_gradients(self.parameters, self.ctx)
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.ema.step(self.parameters)
        self.step += 1
        self.log({"loss": float(loss.detach()), "lr": self.schedule.get_last_lr()[0], **(metrics or {})}, "train")

    def log(self, metrics: dict[str, float], prefix: str) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, self.step)

    def averaged(self) -> DiffusionPolicy:
        """The EMA weights as a policy in eval mode (its buffers, e.g. the normalizer, copied too)."""
        self.ema.copy_to(self._ema_parameters)
        for name, buffer in self.policy.named_buffers():
            self._ema_policy.get_buffer(name).copy_(buffer)
        return self._ema_policy

    def save_state(self, directory: Path, extra: dict[str, Any] | None = None) -> None:
        """Everything needed to resume, written atomically to `directory`/train_state.pt."""
        if not self.ctx.is_main:
            return
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"policy": self.policy.state_dict(), "ema": self.ema.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                    "step": self.step, "extra": json.dumps(extra or {})}, buffer)
        write_atomic(directory / STATE_FILE, buffer.getvalue())

    def load_state(self, directory: Path) -> dict[str, Any] | None:
        """Restore a state saved by `save_state`; returns its `extra`, or None when there is none."""
        path = directory / STATE_FILE
        if not path.exists():
            return None
        state = torch.load(path, map_location=self.ctx.device, weights_only=True)
        self.policy.load_state_dict(state["policy"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])
        return json.loads(state["extra"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class TopKCheckpoints:
    """Keeps the `k` best policies by `metric` under `directory`, named step-N-metric=value,
    with an index in best.json; `best` is the path of the best one."""

    def __init__(self, directory: Path, metric: str, mode: str, k: int = 3) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', found {mode!r}")
        self.directory, self.metric, self.mode, self.k = directory, metric, mode, k
        index = directory / "best.json"
        self.entries: list[dict[str, Any]] = json.loads(index.read_text()) if index.exists() else []

    def consider(self, value: float, step: int, save: Callable[[Path], None]) -> bool:
        """Save with `save(path)` if `value` is among the k best; returns whether it was kept."""
        sign = 1.0 if self.mode == "min" else -1.0
        ranked = sorted(self.entries, key=lambda e: sign * e["value"])
        if len(ranked) >= self.k and sign * value >= sign * ranked[-1]["value"]:
            return False
        path = self.directory / f"step-{step:07d}-{self.metric}={value:.4f}"
        save(path)
        ranked = sorted([*ranked, {"value": float(value), "step": step, "path": path.name}], key=lambda e: sign * e["value"])
        for dropped in ranked[self.k:]:
            shutil.rmtree(self.directory / dropped["path"], ignore_errors=True)
        self.entries = ranked[:self.k]
        write_atomic(self.directory / "best.json", json.dumps(self.entries, indent=2).encode())
        return True

    @property
    def best(self) -> Path | None:
        return self.directory / self.entries[0]["path"] if self.entries else None
