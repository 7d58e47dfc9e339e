"""How much of a latent cache MAR's DiffLoss clamp touches: the fraction of normalised latent values beyond ±3 and
±5 (`mar-fmnist32` clamps x̂_0 to ±5 while sampling), their largest magnitude and kurtosis, per cache folder.

    python benchmarks/latent_tails.py LATENT_CACHE [LATENT_CACHE ...]

One JSON line per cache (normalised with the cache's own latent_mean / latent_std, as generators see the latents).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def tails(folder: Path) -> dict:
    meta = json.loads((folder / "latents.json").read_text())
    mean = torch.tensor(meta["latent_mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["latent_std"]).view(1, -1, 1, 1)
    n = beyond5 = beyond3 = 0
    largest = fourth = 0.0
    for shard in sorted(folder.glob("shard-*.safetensors")):
        for t in load_file(str(shard)).values():
            if t.dim() != 4:  # grid latents (N, C, h, w) only; labels and the like are skipped
                continue
            z = (t.float() - mean) / std
            n += z.numel()
            beyond5 += int((z.abs() > 5).sum())
            beyond3 += int((z.abs() > 3).sum())
            largest = max(largest, float(z.abs().max()))
            fourth += float(z.pow(4).sum())
    return {"cache": str(folder), "values": n, "frac_abs_gt_3": beyond3 / n, "frac_abs_gt_5": beyond5 / n,
            "max_abs": round(largest, 2), "kurtosis": round(fourth / n, 3)}  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        print(json.dumps(tails(Path(arg))))
