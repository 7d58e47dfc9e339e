"""Loading checkpoints from outside detok: untrusted pickles, read with an allow-list and nothing else.

The released checkpoints of the upstream repositories are `torch.save` pickles (LTH14/mar's holds an
`argparse.Namespace` of its training arguments) and DeTok's latent statistics are a raw `pickle.dump` of tensors that
lived on a GPU. Neither may run code here: `torch.save` files go through torch's weights-only unpickler with one
extra class allowed (`argparse.Namespace`, rebuilt as plain attributes); raw pickles go through `RestrictedUnpickler`,
which resolves a handful of tensor-rebuilding functions and refuses every other global, naming it. Tensors come back
on the CPU whatever device they were saved from.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from detok.checkpoint import CheckpointError, read_weights

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def _storage_from_bytes(data: bytes) -> Any:
    """What `torch.storage._load_from_bytes` does — a storage saved inside a raw pickle — on the CPU, weights-only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that rebuilds tensors and plain containers and refuses every other global."""

    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only tensors and plain containers are read")


def load_raw_pickle(path: str | Path) -> Any:
    """A raw pickle of tensors and plain containers (DeTok's `stats.pkl`), read without running code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} was refused: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path} is truncated or not a pickle of tensors ({type(e).__name__}: {e})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of an upstream checkpoint file (`.pth`/`.pt`/`.ckpt`/`.bin` or `.safetensors`), on the CPU.

    torch-saved files are read weights-only with `argparse.Namespace` allowed; anything else that a pickle names
    (a class, a function: code) is refused with a `CheckpointError` naming the file and the global.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        return read_weights(path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path}: not a checkpoint file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
    if not zipfile.is_zipfile(path):  # torch.save's legacy format and raw pickles: the same restricted reader
        data = load_raw_pickle(path)
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            lines = [s for s in str(e).splitlines() if "GLOBAL" in s or "Unsupported" in s]
            why = lines[0].strip() if lines else str(e).strip().splitlines()[-1]
            raise CheckpointError(f"{path} was refused: it holds more than tensors and plain data ({why})") from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is truncated or not a torch-saved file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dict of weights")
    return data
