"""Write the upstream-parity fixtures: the official code, run from its own checkout, at tiny size with seeded weights.

    python benchmarks/upstream/make_fixtures.py --detok-repo ../upstream/DeTok   # a local clone of Jiawei-Yang/DeTok

The upstream code is the oracle, never a source: this script imports the upstream classes from the checkout given on
the command line (nothing of it is copied into detok), builds each model at a tiny size with seeded random weights,
runs deterministic forwards on fixed inputs and writes, per model, under tests/fixtures/upstream/<name>/:

- `checkpoint.pth` — the state dicts in the layout the upstream's own training saves ({"model", "model_ema"}),
- `io.safetensors` — the fixed inputs and the upstream outputs,
- `meta.json` — the upstream repository, commit and dirty state, the constructor arguments, and every run-time
  adaptation this script made to import the upstream code on a CPU machine (each listed with its reason).

tests/test_convert_*.py convert each checkpoint with `detok convert` and compare detok's outputs with these, in fp32.
Each upstream runs in a subprocess of its own (the repositories all call their package `models`).

Run-time adaptations, all recorded in meta.json: the package `models` is entered without executing its
`__init__.py` (which imports every model family and diffusers); `utils.loader` imports torchvision for an image
loader no model here calls, and `models.autoencoder` imports diffusers for the SD-VAE backbone no model here builds:
those two imports get empty stand-ins when the packages are missing; the tiny sizes are added to the upstream's
SIZE_DICT in memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from fixture_utils import DEFAULT_OUT
from fixtures_detok import detok_mar, detok_sampling, detok_tokenizer
from fixtures_dit import dit, lightningdit, sit
from fixtures_lth14 import lth14_mar
from fixtures_vae import mar_kl16, sd_vae, vavae

# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------

JOBS = {
    "detok_tokenizer": ("detok_repo", detok_tokenizer),
    "detok_sampling": ("detok_repo", detok_sampling),
    "detok_mar": ("detok_repo", detok_mar),
    "mar_kl16": ("mar_repo", mar_kl16),
    "vavae": ("lightningdit_repo", vavae),
    "dit": ("dit_repo", dit),
    "sit": ("sit_repo", sit),
    "lightningdit": ("lightningdit_repo", lightningdit),
    "sd_vae": ("diffusers", sd_vae),
    "lth14_mar": ("mar_repo", lth14_mar),  # the installed diffusers package is the oracle: no checkout
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detok-repo", type=Path, help="local checkout of Jiawei-Yang/DeTok")
    parser.add_argument("--mar-repo", type=Path, help="local checkout of LTH14/mar")
    parser.add_argument("--lightningdit-repo", type=Path, help="local checkout of hustvl/LightningDiT")
    parser.add_argument("--dit-repo", type=Path, help="local checkout of facebookresearch/DiT")
    parser.add_argument("--sit-repo", type=Path, help="local checkout of willisma/SiT")
    parser.add_argument("--diffusers", action="store_true", help="the SD-VAE fixture, from the installed diffusers")
    parser.add_argument("--jobs", nargs="+", choices=sorted(JOBS), help="only these fixtures (default: every one "
                        "whose checkout is given)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", choices=sorted(JOBS), help=argparse.SUPPRESS)  # one job, in this process
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only:
        repo_arg, job = JOBS[args.only]
        repo = getattr(args, repo_arg)
        job(repo.resolve() if isinstance(repo, Path) else None, args.out)
        return
    ran = 0
    for name, (repo_arg, _) in JOBS.items():
        if args.jobs and name not in args.jobs:
            continue
        repo = getattr(args, repo_arg)
        if repo is None or repo is False:
            print(f"skipped {name}: no --{repo_arg.replace('_', '-')}")
            continue
        flag = [f"--{repo_arg.replace('_', '-')}"] + ([] if repo is True else [str(repo)])
        cmd = [sys.executable, __file__, "--only", name, *flag]
        subprocess.run([*cmd, "--out", str(args.out)], check=True)
        ran += 1
    if not ran:
        parser.error("give at least one upstream checkout")


if __name__ == "__main__":
    main()
