"""Where a trainer runs: the process's rank under `torchrun` (DDP, gloo on CPU, nccl on CUDA),
its device, averaging across the processes, and bfloat16 autocast on CUDA."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(device: str = "auto") -> DistributedContext:
    """Joins the process group when WORLD_SIZE > 1 (as set by torchrun); picks the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    return DistributedContext(rank, world_size, dev)


def is_main_process() -> bool:
    """Whether this process is rank 0 of its run (or runs alone); joins no process group, so
    that writers of results may ask before any trainer has."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def average_gradients(parameters: Iterable[torch.nn.Parameter], ctx: DistributedContext) -> None:
    """Replaces each gradient with its mean over the processes, in one all-reduce.
    A parameter without a gradient on this process counts as zeros there, so that every
    process ends with the same gradients and takes the same optimizer step."""
    params = list(parameters)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    torch.distributed.all_reduce(flat)
    flat /= ctx.world_size
    for p, mean in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(mean.view_as(p.grad))


def mean_across_processes(values: Sequence[float], ctx: DistributedContext) -> list[float]:
    """The mean over the processes of each of `values` (the same length on every process);
    `values` themselves when the process runs alone."""
    if ctx.world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(tensor)
    return (tensor / ctx.world_size).tolist()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when enabled, else a no-op."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
