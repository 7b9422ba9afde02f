"""Data-parallel training through torch.distributed, started by torchrun:

    torchrun --nproc_per_node=2 -m gearsight train DATA --out RUN

gloo on CPU, NCCL on GPUs (``--device``, resolved by gearsight.devices: each process takes
cuda:LOCAL_RANK). Every process runs the same fit loop on its slice of each global batch
(data/loader.py); gradients are averaged by DistributedDataParallel; only rank 0 writes files.
BatchNorm statistics stay per process: SyncBatchNorm only runs on GPUs. NCCL only reduces tensors
that live on the process's GPU, so collectives here build their tensors on ``DistInfo.device``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gearsight.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where this process computes (and NCCL reduces)
    joined: bool = False  # in a torch.distributed process group (launched by torchrun), even one of 1
    launched: bool = False  # started by torchrun (whether or not it has joined the group yet)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """What torchrun's environment says of this process (RANK, WORLD_SIZE, LOCAL_RANK), before or
        without joining a group: the one place they are parsed. A plain process is rank 0 of 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if not (world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ):  # torchrun sets it, whatever the size
            return cls()
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=world_size,
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")), launched=True)


def init_from_env(device: str | None = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process joins nothing.

    ``device`` is a gearsight.devices name; under torchrun "auto"/"cuda" become cuda:LOCAL_RANK.
    The backend follows the device: NCCL on a GPU, gloo on the CPU. torchrun with one process
    (``--nproc_per_node=1``) joins a group of one too, so its collectives run for real (the one-GPU
    check of the NCCL path, bench/gpu_check.py).
    """
    env = DistInfo.from_env()
    where = resolve_device(device, env.local_rank)
    if not env.launched:
        return DistInfo(device=where)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), env.local_rank, where, joined=True, launched=True)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum ``values`` over all processes. The tensor lives on ``info.device``: NCCL refuses CPU tensors."""
    if not info.joined:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def shutdown(info: DistInfo) -> None:
    if info.joined and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
