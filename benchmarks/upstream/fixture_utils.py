"""Helpers of the upstream fixture jobs (make_fixtures.py): importing a checkout, seeding, writing a fixture."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "upstream"

# --------------------------------------------------------------------------------------------------
# Importing an upstream checkout
# --------------------------------------------------------------------------------------------------


def git_state(repo: Path) -> dict:
    """The checkout's commit and whether its tracked Python files differ from it (a dirty oracle is recorded as such;
    untracked __pycache__ folders, and large data files a mirror may lack, do not count)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    try:
        return {
            "commit": git("rev-parse", "HEAD").strip(),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "*.py").strip()),
        }
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None}


def enter_package(repo: Path, name: str, adaptations: list[str]) -> None:
    """Make `import name.x` load repo/name/x.py without running repo/name/__init__.py."""
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(repo / name)]
    sys.modules[name] = pkg
    adaptations.append(f"package `{name}` entered without running its __init__.py (it imports every model family)")


def stand_in(module: str, attrs: dict, reason: str, adaptations: list[str], always: bool = False) -> None:
    """An empty stand-in for a third-party module that is not installed and whose contents the oracle never calls."""
    if not always and importlib.util.find_spec(module.split(".")[0]) is not None:
        return
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        mod = sys.modules.setdefault(name, types.ModuleType(name))
        mod.__path__ = []
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)  # what find_spec asks of it
    for key, value in attrs.items():
        setattr(sys.modules[module], key, value)
    adaptations.append(f"`{module}` stood in by an empty module ({reason})")


def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every parameter off its initial value (norm gains off 1, biases off 0) so every weight's mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def write(out: Path, name: str, checkpoint: dict, tensors: dict, meta: dict, extra_files: dict | None = None) -> None:
    from safetensors.torch import save_file

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / "checkpoint.pth")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / "io.safetensors"))
    for fname, data in (extra_files or {}).items():
        (folder / fname).write_bytes(data)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"wrote {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder} ({size / 1e3:.0f} kB)")


def raw_and_ema(build, seed: int = 1) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two copies of `build()` in eval mode, seeded: raw weights moved off their init (`perturb_`), and EMA weights a
    little off the raw ones, so that a test sees which of the two a conversion took."""
    torch.manual_seed(0)
    model = build()
    perturb_(model, seed=seed)
    ema = build()
    ema.load_state_dict(model.state_dict())
    perturb_(ema, seed=seed + 1, scale=0.01)
    return model.eval(), ema.eval()


# --------------------------------------------------------------------------------------------------
# The DiT family's generator networks: facebookresearch/DiT, willisma/SiT, hustvl/LightningDiT
# --------------------------------------------------------------------------------------------------


class _AnyAttribute(type):
    """Classes whose every attribute is another such class: what a stood-in package hands out on import."""

    def __getattr__(cls, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _AnyAttribute(attr, (), {})


def stand_in_package(name: str, reason: str, adaptations: list[str]) -> None:
    """Stand in a whole package that is not installed: `import name.any.sub` gives an empty module whose every
    attribute is a placeholder class (for import-time names the oracle never calls, e.g. timm's torchvision imports)."""
    if importlib.util.find_spec(name) is not None:
        return
    from importlib import abc, machinery

    class Finder(abc.MetaPathFinder, abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname == name or fullname.startswith(name + "."):
                return machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            module = types.ModuleType(spec.name)
            module.__path__ = []
            module.__getattr__ = lambda attr: getattr(_AnyAttribute(spec.name, (), {}), attr)
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())
    adaptations.append(f"`{name}` (every submodule) stood in by placeholders ({reason})")


def timm_without_torchvision(adaptations: list[str]) -> None:
    """DiT and SiT take PatchEmbed, Attention and Mlp from timm, which imports torchvision at `import timm`."""
    stand_in_package(
        "torchvision", "timm imports it at import time; PatchEmbed/Attention/Mlp never call it", adaptations
    )
    timm = importlib.import_module("timm")
    adaptations.append(f"timm {timm.__version__} (installed with --no-deps)")
