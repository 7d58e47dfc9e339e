"""Fixture job on LTH14/mar's original MAR (timm blocks; make_fixtures.py)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from fixture_utils import (
    enter_package,
    git_state,
    raw_and_ema,
    stand_in_package,
    write,
)

# --------------------------------------------------------------------------------------------------
# LTH14/mar: the original MAR (timm blocks; DiffLoss whose final norm has no gain)
# --------------------------------------------------------------------------------------------------

LTH14_MAR_ARGS = {
    "img_size": 32, "vae_stride": 8, "patch_size": 1, "vae_embed_dim": 4, "class_num": 10, "buffer_size": 4,
    "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 4,
    "decoder_embed_dim": 32, "decoder_depth": 2, "decoder_num_heads": 4,
    "diffloss_d": 2, "diffloss_w": 48, "num_sampling_steps": "100", "diffusion_batch_mul": 4,
}  # fmt: skip


def lth14_mar(repo: Path, out: Path) -> None:
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, "models", adaptations)
    if importlib.util.find_spec("timm") is None:
        raise SystemExit("LTH14/mar's MAR imports timm: pip install --no-deps --target DIR timm; PYTHONPATH=DIR")
    stand_in_package("torchvision", "timm imports it at `import timm`; MAR's Block never calls it", adaptations)
    mar_mod = importlib.import_module("models.mar")
    # the norm layer of the released sizes (mar_base/large/huge: LayerNorm eps 1e-6; the class default is 1e-5)
    norm = functools.partial(torch.nn.LayerNorm, eps=1e-6)
    model, ema = raw_and_ema(lambda: mar_mod.MAR(norm_layer=norm, **LTH14_MAR_ARGS))
    g = torch.Generator().manual_seed(3)
    n, c, side = 2, LTH14_MAR_ARGS["vae_embed_dim"], LTH14_MAR_ARGS["img_size"] // LTH14_MAR_ARGS["vae_stride"]
    t = side * side
    tokens = ema.patchify(torch.randn(n, c, side, side, generator=g))  # (N, T, C)
    order = torch.rand(n, t, generator=g).argsort(dim=1)
    mask = torch.zeros(n, t).scatter(1, order[:, :10], 1.0)
    labels = torch.tensor([3, 7])
    m = 6
    x, cond = torch.randn(m, c, generator=g), torch.randn(m, LTH14_MAR_ARGS["decoder_embed_dim"], generator=g)
    steps = torch.tensor([0, 1, 250, 500, 999, 37])
    outputs = {}
    with torch.no_grad():
        for tag, net in (("ema", ema), ("raw", model)):
            h = net.forward_mae_encoder(tokens, mask, net.class_emb(labels))
            outputs[f"{tag}.encoder"], outputs[f"{tag}.decoder"] = h, net.forward_mae_decoder(h, mask)
            outputs[f"{tag}.diffloss_net"] = net.diffloss.net(x, steps, cond)
        h = ema.forward_mae_encoder(tokens, mask, ema.fake_latent.repeat(n, 1))
        outputs["ema.null_encoder"], outputs["ema.null_decoder"] = h, ema.forward_mae_decoder(h, mask)
    meta = {
        "upstream": "LTH14/mar",
        **git_state(repo),
        "class": "models.mar.MAR",
        "args": {**LTH14_MAR_ARGS, "norm_layer": "LayerNorm(eps=1e-6), as mar_base/large/huge"},
        "adaptations": adaptations,
        "timm": importlib.import_module("timm").__version__,
        "torch": torch.__version__,
    }
    tensors = {"tokens": tokens, "mask": mask, "labels": labels, "x": x, "steps": steps, "cond": cond, **outputs}
    write(out, "lth14_mar", {"model": model.state_dict(), "model_ema": ema.state_dict(), "epoch": 0}, tensors, meta)
