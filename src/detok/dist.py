"""Distributed helpers that also work as a single process.

Under `torchrun` (env RANK/WORLD_SIZE set) `init()` starts a process group: gloo on CPU, NCCL on CUDA.
Without it every function degrades to the single-process answer, so callers never branch on it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: torch.device) -> None:
    """Join the process group if launched by torchrun; no-op otherwise (or if already joined)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives (barrier included) use the current device
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks (a copy; `x` itself is unchanged)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


def gather_object(obj):
    """[obj of rank 0, obj of rank 1, …] on rank 0, None elsewhere ([obj] in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (the others' argument is ignored)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
