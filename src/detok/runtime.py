"""Runtime helpers every training and evaluation loop shares: device and threads, the seeded data order, autocast,
block compilation, and the guard that stops a loop when its loss or gradients stop being finite."""

from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path

import torch

from detok import dist
from detok.checkpoint import checkpoints_newest_first


def resolve_device(name: str) -> torch.device:
    """ "auto" → the local CUDA device when there is one, else CPU; "cuda" without CUDA raises."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda was requested but no CUDA device is available")
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


_PROCESS_THREADS = 0  # a command's --threads: what threads=0 means in every loop the process runs (0: usable cores)


def set_threads(threads: int, for_process: bool = False) -> int:
    """Set torch's intra-op threads: `threads`, or (0) the process's own number (`for_process`) if one was given,
    else the usable cores divided among local processes.

    Usable cores are those of this process's CPU affinity where the OS reports it (a container or `taskset` limit),
    not all of the host's: oversubscribed threads cost orders of magnitude on small machines.

    `for_process`: `threads` is also what 0 means from now on in this process — a command's `--threads`, which the
    training and evaluation loops it runs would otherwise replace by their configs' default 0 (two suites started
    with `--threads 1` side by side each ran two threads on a 2-core machine). 0 with it clears that number.
    """
    global _PROCESS_THREADS
    if for_process:
        _PROCESS_THREADS = max(0, threads)
    if threads <= 0 and _PROCESS_THREADS:
        threads = _PROCESS_THREADS
    if threads <= 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // local)
    torch.set_num_threads(threads)
    return threads


def forget_process_threads() -> None:
    """Forget the process's own thread number (`set_threads(..., for_process=True)`): 0 means the usable cores again.
    Torch's current thread count is left as it is."""
    global _PROCESS_THREADS
    _PROCESS_THREADS = 0


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. For timing."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str, dtype: torch.dtype = torch.float32, n: int | None = None, reps: int = 20):
    """Best rate in FLOP/s of `reps` square n×n GEMMs in `dtype` on `device` (n: 8192 on CUDA, 2048 on the CPU),
    best of 3 timed runs after 3 warm-up products: the measured peak that benchmarks state utilisation against."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t))
    return best


def batch_indices(step: int, batch_size: int, dataset_len: int, seed: int) -> torch.Tensor:
    """The dataset indices of global batch `step`: consecutive slices of seeded per-epoch permutations.

    A pure function of (step, seed), so a resumed run sees exactly the data an uninterrupted one would.
    """
    start = step * batch_size
    out, need = [], batch_size
    while need > 0:
        epoch, offset = divmod(start, dataset_len)
        take = _epoch_permutation(dataset_len, seed, epoch)[offset : offset + need]
        out.append(take)
        need -= len(take)
        start += len(take)
    return torch.cat(out)


@functools.lru_cache(maxsize=2)
def _epoch_permutation(dataset_len: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded order of one epoch (kept: drawing it anew for every batch of ImageNet costs ~10 ms a step)."""
    return torch.randperm(dataset_len, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def shard_seed(seed: int, step: int, shard: int) -> int:
    """Seed of the per-image randomness of one data shard (rank × accumulation slice) at one step."""
    return (seed * 1_000_003 + step * 1_009 + shard) % (2**63)


def augment_seed(seed: int, step: int, shard: int) -> int:
    """Seed of one data shard's augmentation (flips) at one step: a stream apart from `shard_seed`'s.

    With one seed for both, the flips used the very uniforms that the model's randomness drew next (label dropout,
    timesteps, mask scores): e.g. a generator's dropped labels (u < 0.1) all fell on flipped images (u < 0.5).
    """
    return (shard_seed(seed, step, shard) + 0x5DEECE66D) % (2**63)


def autocast(device: torch.device, precision: str):
    """Autocast context for `precision` ("fp32" disables it)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compile_blocks(model: torch.nn.Module) -> int:
    """`torch.compile` each block of the model's block stacks (children of its `nn.ModuleList`s), in place.

    Compiling the whole model instead specialises on values drawn per batch in Python (a tokenizer's mask ratio,
    MAR's number of masked tokens): every step recompiles until dynamo's recompile limit, then runs eagerly.
    Blocks see only tensors; a sequence length that varies with masking becomes dynamic after one recompile.
    Parameter names, and so checkpoints, are unchanged. Returns the number of blocks compiled.
    """
    blocks = [block for stack in model.modules() if isinstance(stack, torch.nn.ModuleList) for block in stack]
    for block in blocks:
        block.compile()
    return len(blocks)


class TrainingDivergedError(RuntimeError):
    """A loss or gradient norm became NaN or infinite; the step was not applied and nothing more was saved."""


class DivergenceGuard:
    """Stops a training loop at the first non-finite loss term or gradient norm, before the optimiser step.

    Keeps the last finite values so that the message can say where training was before it diverged.
    """

    def __init__(self, run_dir: Path | None = None):
        self.run_dir = run_dir
        self.last: tuple[int, dict[str, float]] | None = None

    def check(self, step: int, **values: torch.Tensor | float) -> None:
        """Raise `TrainingDivergedError` if any of `values` (scalars) at 1-based `step` is not finite."""
        names = list(values)
        numbers = torch.stack([torch.as_tensor(v, dtype=torch.float32).detach().cpu() for v in values.values()])
        floats = numbers.tolist()  # one device sync per step
        bad = [f"{k} = {v}" for k, v in zip(names, floats) if not math.isfinite(v)]
        if not bad:
            self.last = (step, dict(zip(names, floats)))
            return
        if self.last is None:
            before = "no step before it was finite"
        else:
            last_step, last = self.last
            before = f"last finite values (step {last_step}): " + ", ".join(f"{k} {v:.6g}" for k, v in last.items())
        ckpts = checkpoints_newest_first(self.run_dir) if self.run_dir is not None else []
        kept = f"the newest checkpoint ({ckpts[0].name}) is intact" if ckpts else "no checkpoint was written"
        raise TrainingDivergedError(
            f"training diverged at step {step}: {', '.join(bad)}; {before}; the step was not applied and {kept}. "
            "Lower the learning rate (train.blr / train.lr) or check the data"
        )
