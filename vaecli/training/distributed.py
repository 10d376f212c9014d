"""Data-parallel training under torchrun: process-group set-up, shards, and reductions."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vaecli.runtime.device import resolve_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process when not under torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE_PROCESS = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_name: str) -> tuple[World, torch.device]:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) and pick this rank's device."""
    device = resolve_device(device_name)
    if not launched_by_torchrun():
        return World(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), device


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def exit_at_once(code: int) -> None:
    """End a process that torchrun started without interpreter finalization, its output flushed first."""
    # destroy_process_group leaves gloo's worker threads running, and one may still drop a tensor from the
    # last collective; a thread that takes the GIL during finalization is killed in a way C++ answers with
    # std::terminate (rank 1 aborted once so, while rank 0 drew the report). No finalization, no window.
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe was already reported; nothing is left to say
            pass
    os._exit(code)


def shard(rows: torch.Tensor, world: World) -> slice:
    """This rank's contiguous part of a global batch of `rows` rows."""
    n = rows.shape[0]
    start = n * world.rank // world.size
    stop = n * (world.rank + 1) // world.size
    return slice(start, stop)


def sum_across(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
