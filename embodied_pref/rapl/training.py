"""The training loop the RAPL trainers share: AdamW over minibatches of item indices, optional
CUDA autocast (bfloat16), DistributedDataParallel under `torchrun`, checkpoints and resume.

A trainer supplies `batch_loss(model, indices) -> (loss, metrics)`; the loop draws `indices`
(a (B,) int64 tensor into its N items) with a DistributedSampler when WORLD_SIZE > 1. There
each epoch's metrics are averaged over the processes, and rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm.auto import tqdm

from embodied_pref.distributed import DistributedContext, autocast, distributed_context, mean_across_processes
from embodied_pref.durable import write_atomic

BatchLoss = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
"""(model, indices (B,) int64) -> (scalar loss, metrics for the log)."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimization, hardware and checkpointing of one training run."""

    epochs: int = 50
    """Passes over the items."""
    batch_size: int = 16
    """Items per step (per process under DDP)."""
    learning_rate: float = 1e-3
    """AdamW step size."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    backbone_lr_scale: float = 1.0
    """Step size of parameters under a module named `backbone` (a pretrained encoder's),
    relative to `learning_rate`: fine-tuning moves them less than a fresh head."""
    grad_clip: float = 10.0
    """Max gradient norm (0: no clipping)."""
    seed: int = 0
    """Seeds the initialization-independent randomness: batch order."""
    device: str = "auto"
    """"auto": CUDA (the local rank's GPU under torchrun) when available, else CPU."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU)."""
    checkpoint_dir: Path | None = None
    """Where last.pt is written (None: no checkpoints)."""
    checkpoint_every: int = 1
    """Write last.pt after every checkpoint_every-th epoch and after the last one."""
    resume: bool = True
    """Continue from checkpoint_dir/last.pt when it exists."""
    progress: bool = False
    """Show a progress bar over epochs."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"field '{name}': expected an int >= 1, found {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"field 'learning_rate': expected a positive float, found {self.learning_rate!r}")
        if not self.backbone_lr_scale > 0:
            raise ValueError(f"field 'backbone_lr_scale': expected a positive float, found {self.backbone_lr_scale!r}")


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    history: list[dict], config: OptimConfig) -> None:
    """Atomically writes model, optimizer, finished epochs and history to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "history": history, "config": {k: str(v) for k, v in asdict(config).items()}}, buffer)
    write_atomic(path, buffer.getvalue())


def _batches(n: int, config: OptimConfig, ctx: DistributedContext, epoch: int) -> Iterator[torch.Tensor]:
    dataset = TensorDataset(torch.arange(n))
    if ctx.world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler)
    else:
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)
    for (indices,) in loader:
        yield indices


def fit(model: nn.Module, batch_loss: BatchLoss, n_items: int, config: OptimConfig, desc: str = "train") -> list[dict]:
    """Trains `model` in place on minibatches of its `n_items` items; returns one dict of mean
    metrics per epoch (including the epochs of a resumed checkpoint)."""
    if n_items < 1:
        raise ValueError(f"n_items: expected at least one training item, found {n_items}")
    ctx = distributed_context(config.device)
    model.to(ctx.device)
    wrapped: nn.Module = model
    if ctx.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model: no trainable parameters (is everything frozen?)")
    params = [p for _, p in named]
    in_backbone = [p for name, p in named if "backbone" in name.split(".")]
    rest = [p for name, p in named if "backbone" not in name.split(".")]
    groups = [{"params": group, "lr": config.learning_rate * scale}
              for group, scale in ((rest, 1.0), (in_backbone, config.backbone_lr_scale)) if group]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    history: list[dict] = []
    start = 0
    ckpt = None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / "last.pt"
    if ckpt is not None and config.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=ctx.device, weights_only=False)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(f"{ckpt}: the checkpoint does not fit this model (another model, or an older version "
                             f"wrote it); move it away or choose another checkpoint directory. {error}") from None
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])
    if ctx.world_size > 1:
        torch.distributed.barrier()  # every rank has read last.pt before rank 0 overwrites it
    for epoch in tqdm(range(start, config.epochs), desc=desc, disable=not (config.progress and ctx.is_main), leave=False):
        wrapped.train()
        sums: dict[str, list[float]] = {}
        for indices in _batches(n_items, config, ctx, epoch):
            with autocast(ctx.device, config.amp):
                loss, metrics = batch_loss(wrapped, indices.to(ctx.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            for key, value in {"loss": float(loss.detach()), **metrics}.items():
                sums.setdefault(key, []).append(value)
        means = mean_across_processes([float(np.mean(v)) for v in sums.values()], ctx)  # every rank's batches
        history.append({"epoch": epoch + 1, **dict(zip(sums, means))})
        if ckpt is not None and ctx.is_main and ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs):
            save_checkpoint(ckpt, model, optimizer, epoch + 1, history, config)
    model.eval()
    return history
