"""torchrun / DDP plumbing: gloo on CPU, NCCL on CUDA, multi-node through torchrun's env vars.

``torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port P --nproc_per_node N
npiseg_train/cli.py ...`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
``init_distributed`` reads them (``env://``). Without them training runs single-process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 writes logs, checkpoints and runs validation).
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
        device: torch device of this process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(request: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if CUDA is available, else CPU."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(request)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the torchrun job described by the environment (or run alone without one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(device=resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=local_rank, device=resolved)


def wrap_module(module: nn.Module, context: DistributedContext) -> nn.Module:
    """DDP around ``module`` when distributed (rank 0's weights are broadcast to all).

    ``find_unused_parameters``: a step where no sample has a previous prediction leaves the
    previous-mask encoder without gradient; DDP must not wait for it. Buffers (batch-norm
    running statistics) are averaged by ``average_buffers`` after each step instead of
    DDP's rank-0 broadcast, so every replica ends every step identical.
    """
    if not context.distributed:
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=True,
                                               broadcast_buffers=False)


def average_buffers(module: nn.Module, context: DistributedContext) -> None:
    """Average floating-point buffers (batch-norm running mean / variance) over all ranks."""
    if not context.distributed:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= context.world_size


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


def mean_across(value: float, context: DistributedContext) -> float:
    """Average a Python float over all processes (for logging only)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def shutdown(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
