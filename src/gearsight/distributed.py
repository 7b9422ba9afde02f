"""Data-parallel training through torch.distributed, started by torchrun:

    torchrun --nproc_per_node=2 -m gearsight train DATA --out RUN

gloo on CPU, NCCL on GPUs. Every process runs the same fit loop on its slice of each global batch
(data/loader.py); gradients are averaged by DistributedDataParallel; only rank 0 writes files.
BatchNorm statistics stay per process: SyncBatchNorm only runs on GPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env() -> DistInfo:
    """Join the process group torchrun describes in the environment; a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if info.world_size <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shutdown(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
