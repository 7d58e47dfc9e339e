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
import functools
import importlib
import importlib.util
import json
import pickle
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


def stand_in(module: str, attrs: dict, reason: str, adaptations: list[str]) -> None:
    """An empty stand-in for a third-party module that is not installed and whose contents the oracle never calls."""
    if importlib.util.find_spec(module.split(".")[0]) is not None:
        return
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        mod = sys.modules.setdefault(name, types.ModuleType(name))
        mod.__path__ = []
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


# --------------------------------------------------------------------------------------------------
# Jiawei-Yang/DeTok: the l-DeTok tokenizer
# --------------------------------------------------------------------------------------------------

DETOK_TINY = {"tiny-enc": {"width": 32, "layers": 2, "heads": 2}, "tiny-dec": {"width": 48, "layers": 2, "heads": 4}}
DETOK_ARGS = {"img_size": 32, "patch_size": 8, "token_channels": 4, "mask_ratio": 0.7, "gamma": 3.0}


def detok_tokenizer(repo: Path, out: Path) -> None:
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, "models", adaptations)
    stand_in("torchvision.datasets.folder", {"default_loader": None}, "utils.loader's image loader", adaptations)
    stand_in("diffusers.models", {"AutoencoderKL": object}, "the SD-VAE backbone class", adaptations)
    model_utils = importlib.import_module("models.model_utils")
    model_utils.SIZE_DICT.update(DETOK_TINY)
    adaptations.append(f"SIZE_DICT gains the tiny sizes {DETOK_TINY}")
    upstream = importlib.import_module("models.detok")

    torch.manual_seed(0)
    model = upstream.DeTok(vit_enc_model_size="tiny-enc", vit_dec_model_size="tiny-dec", **DETOK_ARGS)
    perturb_(model, seed=1)
    ema = upstream.DeTok(vit_enc_model_size="tiny-enc", vit_dec_model_size="tiny-dec", **DETOK_ARGS)
    ema.load_state_dict(model.state_dict())
    perturb_(ema, seed=2, scale=0.01)  # the EMA weights differ from the raw ones, so a test sees which were taken
    model.eval(), ema.eval()

    g = torch.Generator().manual_seed(3)
    n, c, t = 2, DETOK_ARGS["token_channels"], (DETOK_ARGS["img_size"] // DETOK_ARGS["patch_size"]) ** 2
    x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1  # images in [-1, 1], as upstream trains on them
    z = torch.randn(n, t, c, generator=g)
    mean = torch.randn(2 * c, generator=g)  # the channel stats upstream caches: 2C values, the first C used
    std = torch.rand(2 * c, generator=g) + 0.5
    stats = {"tiny-tokenizer": {"single": (mean[:c].mean(), std[:c].mean()), "channel": (mean, std)}}

    outputs = {}
    with torch.no_grad():
        for tag, net in (("ema", ema), ("raw", model)):
            moments = net.encoder(x, mask_ratio=0.0)[0]  # (N, T, 2C)
            outputs[f"{tag}.moments"] = moments
            outputs[f"{tag}.encode_mean"] = net.encode(x, sampling=False, mask_ratio=0.0)[0]  # posterior mean
            outputs[f"{tag}.decode"] = net.decoder(z)  # (N, 3, H, W), unclamped
            outputs[f"{tag}.forward"] = net.decoder(net.encode(x, mask_ratio=0.0)[0])  # corruption off
        # a fixed mask: the encoder's own draw, seeded; its ids_restore is recorded for detok to replay
        torch.manual_seed(4)
        visible, ids_restore = ema.encoder(x, mask_ratio=0.5)
        outputs["ema.masked_moments"] = visible  # (N, T_keep, 2C) in upstream's keep order
        outputs["ema.masked_ids_restore"] = ids_restore
        outputs["ema.masked_decode"] = ema.decoder(visible[..., :c], ids_restore=ids_restore)
        ema.reset_stats(mean[:c], std[:c])
        outputs["ema.tokenize"] = ema.tokenize(x)  # normalised latents (N, C, h, w)
        outputs["ema.detokenize"] = ema.detokenize(outputs["ema.tokenize"])  # images in [0, 1]
    meta = {
        "upstream": "Jiawei-Yang/DeTok",
        **git_state(repo),
        "class": "models.detok.DeTok",
        "args": {"vit_enc_model_size": "tiny-enc", "vit_dec_model_size": "tiny-dec", **DETOK_ARGS},
        "sizes": DETOK_TINY,
        "adaptations": adaptations,
        "stats_key": "tiny-tokenizer",
        "torch": torch.__version__,
    }
    ckpt = {"model": model.state_dict(), "model_ema": ema.state_dict(), "epoch": 0}
    tensors = {"x": x, "z": z, **outputs}
    write(out, "detok_tokenizer", ckpt, tensors, meta, {"stats.pkl": pickle.dumps(stats)})


# --------------------------------------------------------------------------------------------------
# Jiawei-Yang/DeTok: the generators' sampling schedules (LightningDiT's shifted time grid, MAR's CFG schedule)
# --------------------------------------------------------------------------------------------------

MAR_TINY = {"tiny": {"width": 32, "layers": 1, "heads": 2}}
MAR_CASES = [(32, 8, 8), (256, 16, 64)]  # (img_size, tokenizer_patch_size, num_iter): 16 tokens / the paper's 256, 64


def detok_sampling(repo: Path, out: Path) -> None:
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, "models", adaptations)
    transport = importlib.import_module("transport")
    tensors = {}
    for steps in (250, 50):  # the grid models/lightningdit.py builds: sample_ode(euler, num_steps, timestep_shift=0.3)
        sampler = transport.Sampler(transport.create_transport(use_cosine_loss=True, use_lognorm=True))
        sample = sampler.sample_ode(sampling_method="euler", num_steps=steps, timestep_shift=0.3)
        tensors[f"lightningdit.grid{steps}"] = sample.__self__.t.to(torch.float64)

    # MAR.sample_tokens calls .cuda() on fresh tensors; on a CPU machine it becomes a no-op, and DiffLoss.sample is
    # replaced by a recorder of the per-step guidance scale (the schedule is what is checked, not the samples).
    torch.Tensor.cuda = lambda self, *a, **k: self
    adaptations.append("torch.Tensor.cuda made a no-op (MAR.sample_tokens moves fresh tensors to the GPU)")
    adaptations.append("MAR.diffloss.sample replaced by a recorder of (cfg_iter, tokens predicted) returning zeros")
    mar_mod = importlib.import_module("models.mar")
    mar_mod.MAR_SIZE_DICT.update(MAR_TINY)
    adaptations.append(f"MAR_SIZE_DICT gains {MAR_TINY}")
    for img, tok_p, num_iter in MAR_CASES:
        torch.manual_seed(0)
        model = mar_mod.MAR(img_size=img, tokenizer_patch_size=tok_p, model_size="tiny", token_channels=4,
                            diffloss_d=1, diffloss_w=32, num_sampling_steps="10").eval()  # fmt: skip
        record = []

        def recorder(z, temperature, cfg, record=record, dim=model.token_embed_dim):
            record.append((float(cfg), z.shape[0]))
            return torch.zeros(z.shape[0], dim)

        model.diffloss.sample = recorder
        with torch.no_grad():
            model.sample_tokens(2, num_iter=num_iter, cfg=3.0, cfg_schedule="linear", labels=torch.tensor([1, 2]))
        rows = torch.tensor(record, dtype=torch.float64)  # (num_iter, 2): scale, rows (2 × 2 samples × tokens)
        tensors[f"mar.L{model.seq_len}.K{num_iter}.cfg3"] = rows
    meta = {
        "upstream": "Jiawei-Yang/DeTok",
        **git_state(repo),
        "what": {
            "lightningdit.gridN": "transport.Sampler(create_transport(use_cosine_loss=True, use_lognorm=True))"
            ".sample_ode(sampling_method='euler', num_steps=N, timestep_shift=0.3): the ODE's time points, t = 0 "
            "noise, t = 1 data (models/lightningdit.py's sampler)",
            "mar.L{L}.K{K}.cfg3": "models.mar.MAR.sample_tokens(cfg=3.0, cfg_schedule='linear', num_iter=K) on L "
            "tokens: per step, the guidance scale handed to DiffLoss.sample and the number of rows (2 samples, "
            "doubled for CFG, × tokens predicted)",
        },
        "adaptations": adaptations,
        "torch": torch.__version__,
    }
    write(out, "detok_sampling", {}, tensors, meta)


# --------------------------------------------------------------------------------------------------
# Jiawei-Yang/DeTok: the MAR generator (models/mar.py, models/diffloss.py)
# --------------------------------------------------------------------------------------------------

MAR_FIXTURE_SIZE = {"tiny-mar": {"width": 32, "layers": 2, "heads": 4}}
MAR_ARGS = {
    "img_size": 32, "tokenizer_patch_size": 8, "patch_size": 1, "token_channels": 4, "num_classes": 10,
    "buffer_size": 4, "diffloss_d": 2, "diffloss_w": 48, "num_sampling_steps": "100", "no_dropout_in_mlp": True,
}  # fmt: skip
MAR_STEPS = (99, 40, 0)  # respaced chain steps at which p(x_{t-1} | x_t) is recorded
MAR_CFG = 2.5


def detok_mar(repo: Path, out: Path) -> None:
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, "models", adaptations)
    torch.Tensor.cuda = lambda self, *a, **k: self
    adaptations.append("torch.Tensor.cuda made a no-op (DiffLoss.sample moves its fresh noise to the GPU)")
    mar_mod = importlib.import_module("models.mar")
    mar_mod.MAR_SIZE_DICT.update(MAR_FIXTURE_SIZE)
    adaptations.append(f"MAR_SIZE_DICT gains {MAR_FIXTURE_SIZE}")

    def build():
        return mar_mod.MAR(model_size="tiny-mar", **MAR_ARGS)

    torch.manual_seed(0)
    model = build()
    perturb_(model, seed=1)
    ema = build()
    ema.load_state_dict(model.state_dict())
    perturb_(ema, seed=2, scale=0.01)  # the EMA weights differ from the raw ones, so a test sees which were taken
    model.eval(), ema.eval()  # attention and projection dropout (0.1) off

    g = torch.Generator().manual_seed(3)
    n, c, side = 2, MAR_ARGS["token_channels"], MAR_ARGS["img_size"] // MAR_ARGS["tokenizer_patch_size"]
    t = side * side
    latents = torch.randn(n, c, side, side, generator=g)  # (N, C, h, w); p = 1, so a token is one latent pixel
    tokens = ema.patchify(latents)  # (N, T, C)
    order = torch.rand(n, t, generator=g).argsort(dim=1)
    mask = torch.zeros(n, t).scatter(1, order[:, :10], 1.0)  # 10 of 16 tokens masked in each row, 1 = masked
    labels = torch.tensor([3, 7])
    m = 6  # DiffLoss rows
    x = torch.randn(m, c, generator=g)  # noisy tokens
    steps = torch.tensor([0, 1, 250, 500, 999, 37])  # training timesteps
    cond = torch.randn(m, MAR_FIXTURE_SIZE["tiny-mar"]["width"], generator=g)  # decoder outputs z
    target = torch.randn(m, c, generator=g)  # clean tokens for the training loss

    outputs = {}
    with torch.no_grad():
        for tag, net in (("ema", ema), ("raw", model)):
            h = net.forward_mae_encoder(tokens, mask, net.class_emb(labels))  # (N, B+T_keep, D)
            outputs[f"{tag}.encoder"] = h
            outputs[f"{tag}.decoder"] = net.forward_mae_decoder(h, mask)  # (N, T, D)
            outputs[f"{tag}.diffloss_net"] = net.diffloss.net(x, steps, cond)  # (M, 2C)
        null = ema.fake_latent.repeat(n, 1)  # the unconditional branch of guidance
        h = ema.forward_mae_encoder(tokens, mask, null)
        outputs["ema.null_encoder"] = h
        outputs["ema.null_decoder"] = ema.forward_mae_decoder(h, mask)
        full = torch.ones(n, t)  # the first sampling step: every token masked
        outputs["ema.full_mask_decoder"] = ema.forward_mae_decoder(
            ema.forward_mae_encoder(tokens, full, ema.class_emb(labels)), full
        )

        gen = ema.diffloss.gen_diffusion  # the respaced sampling chain (num_sampling_steps of the cosine schedule)
        uncond = cond.flip(0)  # stand-in null-class conditions for the guided rows
        for i in MAR_STEPS:
            step = torch.full((m,), i, dtype=torch.long)
            o = gen.p_mean_variance(ema.diffloss.net, x, step, model_kwargs={"c": cond})
            outputs[f"ema.step{i}.mean"], outputs[f"ema.step{i}.log_variance"] = o["mean"], o["log_variance"]
            outputs[f"ema.step{i}.pred_xstart"] = o["pred_xstart"]
            kwargs = {"c": torch.cat([cond, uncond]), "cfg_scale": MAR_CFG}
            o = gen.p_mean_variance(
                ema.diffloss.net.forward_with_cfg, torch.cat([x, x]), step.repeat(2), model_kwargs=kwargs
            )
            outputs[f"ema.step{i}.cfg.mean"], outputs[f"ema.step{i}.cfg.log_variance"] = (
                o["mean"][:m],
                o["log_variance"][:m],
            )
        torch.manual_seed(5)  # DiffLoss.sample draws its start noise, then one draw per step, from the global RNG
        outputs["ema.sample_t0.95"] = ema.diffloss.sample(cond, temperature=0.95, cfg=1.0)
        torch.manual_seed(6)  # timesteps, then noise, from the global RNG; MAR.forward_loss repeats the rows
        mul = ema.diffusion_batch_mul
        outputs["ema.diffloss_loss"] = ema.diffloss(target.repeat(mul, 1), cond.repeat(mul, 1)).reshape(1)
    meta = {
        "upstream": "Jiawei-Yang/DeTok",
        **git_state(repo),
        "class": "models.mar.MAR",
        "args": {"model_size": "tiny-mar", **MAR_ARGS},
        "sizes": MAR_FIXTURE_SIZE,
        "diffusion_batch_mul": ema.diffusion_batch_mul,
        "respaced_steps": list(MAR_STEPS),
        "cfg": MAR_CFG,
        "what": {
            "TAG.encoder / TAG.decoder": "forward_mae_encoder(patchify(latents), mask, class_emb(labels)) and "
            "forward_mae_decoder of it (eval mode)",
            "ema.null_*": "the same with fake_latent in place of the class embedding (guidance's null branch)",
            "ema.full_mask_decoder": "every token masked (the first sampling step)",
            "TAG.diffloss_net": "diffloss.net(x, steps, cond): SimpleMLPAdaLN's [eps, v]",
            "ema.stepI.*": "diffloss.gen_diffusion.p_mean_variance at respaced step I of num_sampling_steps; "
            ".cfg: through net.forward_with_cfg on [cond; cond.flip(0)] at scale cfg, first half",
            "ema.sample_t0.95": "torch.manual_seed(5); diffloss.sample(cond, temperature=0.95, cfg=1.0)",
            "ema.diffloss_loss": "torch.manual_seed(6); diffloss(target.repeat(mul, 1), cond.repeat(mul, 1))",
        },
        "adaptations": adaptations,
        "torch": torch.__version__,
    }
    ckpt = {"model": model.state_dict(), "model_ema": ema.state_dict(), "epoch": 0}
    tensors = {"latents": latents, "tokens": tokens, "mask": mask, "labels": labels, "x": x, "steps": steps,
               "cond": cond, "target": target, **outputs}  # fmt: skip
    write(out, "detok_mar", ckpt, tensors, meta)


# --------------------------------------------------------------------------------------------------
# LDM's KL autoencoder as LTH14/mar (KL-16) and hustvl/LightningDiT (VA-VAE) release it
# --------------------------------------------------------------------------------------------------

# Tiny LDM autoencoders through the upstream's own Encoder/Decoder: width 32 (GroupNorm's 32 groups), two levels,
# 16-px images (an 8×8 latent grid), attention where each upstream puts it (at the lowest level). KL-16's levels are
# 64 then 32 wide (the wider level first keeps the mid-blocks narrow, and its 1×1 skips appear); VA-VAE's 32 and 32.
LDM_TINY = {"ch": 32, "num_res_blocks": 1, "resolution": 16, "z_channels": 4, "dropout": 0.0}
LDM_JOBS = {  # name: (package, module, ch_mult, attn at the lowest level in encoder, decoder)
    "mar_kl16": ("models", "models.vae", (2, 1), (8,), ()),
    "vavae": ("tokenizer", "tokenizer.autoencoder", (1, 1), (8,), (8,)),  # 1×1 skips are the KL-16 fixture's
}


def _ldm(repo: Path, out: Path, name: str) -> None:
    package, module_name, ch_mult, enc_attn, dec_attn = LDM_JOBS[name]
    tiny = {**LDM_TINY, "ch_mult": ch_mult}
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, package, adaptations)
    stand_in("torchvision", {"transforms": None}, "an image transform import no model here calls", adaptations)
    upstream = importlib.import_module(module_name)
    torch.manual_seed(0)
    vae = upstream.AutoencoderKL(embed_dim=4, ch_mult=ch_mult)  # its own quant convs for 4 channels
    vae.encoder = upstream.Encoder(attn_resolutions=enc_attn, **tiny)
    vae.decoder = upstream.Decoder(attn_resolutions=dec_attn, **tiny)
    adaptations.append(
        f"encoder/decoder rebuilt at tiny size with the upstream classes: {tiny}, attn {enc_attn}/{dec_attn}"
    )
    perturb_(vae, seed=1)
    vae.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    z = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        posterior = vae.encode(x)
        outputs = {"mean": posterior.mean, "logvar": posterior.logvar, "decode": vae.decode(z)}
        outputs["forward"] = vae.decode(posterior.mean)
    meta = {
        "upstream": {"mar_kl16": "LTH14/mar", "vavae": "hustvl/LightningDiT"}[name],
        **git_state(repo),
        "class": f"{module_name}.AutoencoderKL",
        "args": {**tiny, "embed_dim": 4, "enc_attn_resolutions": enc_attn, "dec_attn_resolutions": dec_attn},
        "adaptations": adaptations,
        "torch": torch.__version__,
    }
    ckpt = {"model": vae.state_dict()} if name == "mar_kl16" else {"state_dict": vae.state_dict()}
    write(out, name, ckpt, {"x": x, "z": z, **outputs}, meta)


def mar_kl16(repo: Path, out: Path) -> None:
    _ldm(repo, out, "mar_kl16")


def vavae(repo: Path, out: Path) -> None:
    _ldm(repo, out, "vavae")


# --------------------------------------------------------------------------------------------------
# diffusers' AutoencoderKL: the SD-VAE (KL-8) that DiT and SiT load with from_pretrained
# --------------------------------------------------------------------------------------------------

SD_TINY = {"block_out_channels": (32, 64), "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32}


def sd_vae(_: Path | None, out: Path) -> None:
    import diffusers

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16,
        **SD_TINY,
    )
    perturb_(vae, seed=1)
    vae.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    z = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        outputs = {"mean": posterior.mean, "logvar": posterior.logvar, "decode": vae.decode(z).sample}
    meta = {
        "upstream": "huggingface/diffusers",
        "commit": None,
        "dirty": None,
        "diffusers": diffusers.__version__,
        "class": "diffusers.AutoencoderKL",
        "args": {**SD_TINY, "sample_size": 16},
        "adaptations": [],
        "torch": torch.__version__,
    }
    write(out, "sd_vae", {}, {"x": x, "z": z, **outputs}, meta)
    from safetensors.torch import save_file  # the release's own file format: a bare safetensors state dict

    save_file(
        {k: v.contiguous() for k, v in vae.state_dict().items()},
        str(out / "sd_vae" / "diffusion_pytorch_model.safetensors"),
    )
    (out / "sd_vae" / "checkpoint.pth").unlink()


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


def _timm(adaptations: list[str]) -> None:
    """DiT and SiT take PatchEmbed, Attention and Mlp from timm, which imports torchvision at `import timm`."""
    stand_in_package(
        "torchvision", "timm imports it at import time; PatchEmbed/Attention/Mlp never call it", adaptations
    )
    timm = importlib.import_module("timm")
    adaptations.append(f"timm {timm.__version__} (installed with --no-deps)")


# Tiny networks through each upstream's own constructor: 8×8 latents of 4 channels, width 32, two blocks, 2 heads
# (head size 16: LightningDiT's RoPE needs 4 | head size), 10 classes (+ the null class of guidance).
DIT_TINY = {"input_size": 8, "in_channels": 4, "hidden_size": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
DIT_T = (0.0, 1.0, 37.0, 999.0)  # DDPM timesteps (DiT) — for SiT and LightningDiT the times below
FLOW_T = (0.0, 0.05, 0.5, 0.97)  # t in [0, 1], t = 0 noise, t = 1 data (their transports' convention)
DIT_CFG = 4.0  # sample.py's scale
DIT_CHAIN, DIT_STEPS = 250, (249, 100, 0)  # create_diffusion(str(num_sampling_steps)); respaced steps recorded


def _dit_inputs(t_values: tuple[float, ...], c: int = 4, side: int = 8, classes: int = 10) -> dict:
    g = torch.Generator().manual_seed(3)
    n = len(t_values)
    x = torch.randn(n, c, side, side, generator=g)
    return {"x": x, "t": torch.tensor(t_values), "y": torch.tensor([3, 7, 0, 9][:n]), "null": torch.full((n,), classes)}


def _network_outputs(net, io: dict, tag: str, cfg_kwargs: dict | None = None) -> dict:
    """forward(x, t, y), forward(x, t, null) and forward_with_cfg on [x; x], [y; null] (its first half)."""
    x, t, y, null = io["x"], io["t"], io["y"], io["null"]
    out = {f"{tag}.forward": net(x, t, y), f"{tag}.forward_null": net(x, t, null)}
    for i in range(len(t)):  # one time per call: LightningDiT's guidance interval reads t[0] for the whole batch
        xx, tt = torch.cat([x[i : i + 1]] * 2), t[i : i + 1].repeat(2)
        yy = torch.stack([y[i], null[i]])
        out[f"{tag}.cfg.{i}"] = net.forward_with_cfg(xx, tt, yy, DIT_CFG, **(cfg_kwargs or {}))[:1]
    return out


def _dit_family(repo: Path, out: Path, name: str) -> None:
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    _timm(adaptations)
    models = importlib.import_module("models")
    cls_name = {"dit": "DiT", "sit": "SiT"}[name]
    args = {**DIT_TINY, "patch_size": 2, "learn_sigma": True}  # SiT's release carries learn-sigma rows too

    def build():
        return getattr(models, cls_name)(**args)

    torch.manual_seed(0)
    model = build()
    perturb_(model, seed=1)
    ema = build()
    ema.load_state_dict(model.state_dict())
    perturb_(ema, seed=2, scale=0.01)  # the EMA weights differ from the raw ones, so a test sees which were taken
    with torch.no_grad():  # pos_embed is a frozen parameter: give it back the sin-cos table the perturbation moved
        model.pos_embed.copy_(ema.pos_embed.copy_(build().pos_embed))
    model.eval(), ema.eval()
    io = _dit_inputs(DIT_T if name == "dit" else FLOW_T)
    with torch.no_grad():
        outputs = {**_network_outputs(ema, io, "ema"), **_network_outputs(model, io, "raw")}
        if name == "dit":  # p(x_{t-1} | x_t) on sample.py's respaced chain, plain and through forward_with_cfg
            chain = importlib.import_module("diffusion").create_diffusion(str(DIT_CHAIN))
            x, y = io["x"][:2], io["y"][:2]
            null = torch.full_like(y, DIT_TINY["num_classes"])
            for i in DIT_STEPS:
                step = torch.full((2,), i)
                o = chain.p_mean_variance(ema, x, step, clip_denoised=False, model_kwargs={"y": y})  # as sample.py
                outputs[f"step{i}.mean"], outputs[f"step{i}.log_variance"] = o["mean"], o["log_variance"]
                kwargs = {"y": torch.cat([y, null]), "cfg_scale": DIT_CFG}
                o = chain.p_mean_variance(
                    ema.forward_with_cfg, torch.cat([x, x]), step.repeat(2), False, model_kwargs=kwargs
                )
                outputs[f"step{i}.cfg.mean"], outputs[f"step{i}.cfg.log_variance"] = (
                    o["mean"][:2],
                    o["log_variance"][:2],
                )
        if name == "sit":  # an Euler ODE through SiT's own sampler and CFG forward: times, guidance and channels
            transport = importlib.import_module("transport")
            sampler = transport.Sampler(transport.create_transport("Linear", "velocity"))
            sample = sampler.sample_ode(sampling_method="euler", num_steps=6)
            z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
            y = torch.tensor([3, 7])
            xs = sample(torch.cat([z, z]), ema.forward_with_cfg, y=torch.cat([y, torch.full_like(y, 10)]),
                        cfg_scale=DIT_CFG)  # fmt: skip
            outputs.update({"sample.noise": z, "sample.y": y, "sample.euler5": xs[-1][:2]})
    meta = {
        "upstream": {"dit": "facebookresearch/DiT", "sit": "willisma/SiT"}[name],
        **git_state(repo),
        "class": f"models.{cls_name}",
        "args": args,
        "cfg_scale": DIT_CFG,
        "what": {
            "TAG.forward / TAG.forward_null": "net(x, t, y) / net(x, t, null class), eval mode",
            "TAG.cfg.I": "net.forward_with_cfg([x_I; x_I], [t_I; t_I], [y_I; null], cfg_scale)[:1]",
            "sample.euler5": "SiT only: transport.Sampler(create_transport('Linear', 'velocity')).sample_ode("
            "sampling_method='euler', num_steps=6) from [noise; noise] with ema.forward_with_cfg, y and null, "
            "cfg_scale; the last time point's first half",
            "stepI.*": "DiT only: diffusion.create_diffusion(str(DIT_CHAIN)).p_mean_variance at respaced step I with "
            "ema (y) and with ema.forward_with_cfg ([x; x], [y; null], cfg_scale: first half), the first 2 rows",
        },
        "respaced": {"steps": DIT_CHAIN, "recorded": list(DIT_STEPS)},
        "adaptations": adaptations,
        "torch": torch.__version__,
    }
    ckpt = {"model": model.state_dict(), "ema": ema.state_dict()}  # train.py's layout, without "opt" and "args"
    write(out, name, ckpt, {**io, **outputs}, meta)


def dit(repo: Path, out: Path) -> None:
    _dit_family(repo, out, "dit")


def sit(repo: Path, out: Path) -> None:
    _dit_family(repo, out, "sit")


# The released LightningDiT-XL/1's flags (configs/lightningdit_xl_vavae_f16d32.yaml: SwiGLU, RoPE, RMSNorm, no QK-norm,
# p = 1), and a second network with QK-norm and p = 2 so that every weight name the class can hold is exercised.
LDIT_VARIANTS = {
    "released": {"patch_size": 1, "use_qknorm": False},
    "qknorm": {"patch_size": 2, "use_qknorm": True},
}
LDIT_FLAGS = {"use_swiglu": True, "use_rope": True, "use_rmsnorm": True, "wo_shift": False, "learn_sigma": False}
LDIT_SAMPLE = {"num_steps": 6, "timestep_shift": 0.3, "cfg_interval_start": 0.11}


def lightningdit(repo: Path, out: Path) -> None:
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, "models", adaptations)
    _timm(adaptations)
    stand_in_package("fairscale", "models/rmsnorm.py imports it; its RMSNorm does not use it", adaptations)
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    adaptations.append("torch.compile made the identity (the oracle runs eagerly; inductor needs a C++ compiler)")
    upstream = importlib.import_module("models.lightningdit")
    io = _dit_inputs(FLOW_T)
    ckpt, outputs, args = {}, {}, {}
    for variant, extra in LDIT_VARIANTS.items():
        args[variant] = {**DIT_TINY, **LDIT_FLAGS, **extra}
        torch.manual_seed(0)
        model = upstream.LightningDiT(**args[variant])
        perturb_(model, seed=1)
        with torch.no_grad():  # the frozen sin-cos table back to its value (the RoPE tables are buffers, untouched)
            model.pos_embed.copy_(upstream.LightningDiT(**args[variant]).pos_embed)
        model.eval()
        ckpt[variant] = {"ema": model.state_dict()}  # train.py saves {"model", "ema", "opt", "config"}
        kwargs = {"cfg_interval": True, "cfg_interval_start": LDIT_SAMPLE["cfg_interval_start"]}
        with torch.no_grad():
            outputs.update(_network_outputs(model, io, variant, kwargs))
    # the released network sampled as inference.py samples: the Euler ODE on the shifted grid, guidance interval
    transport = importlib.import_module("transport")
    sampler = transport.Sampler(
        transport.create_transport("Linear", "velocity", use_cosine_loss=True, use_lognorm=True)
    )
    sample = sampler.sample_ode(sampling_method="euler", num_steps=LDIT_SAMPLE["num_steps"], atol=1e-6, rtol=1e-3,
                                timestep_shift=LDIT_SAMPLE["timestep_shift"])  # fmt: skip
    torch.manual_seed(0)
    model = upstream.LightningDiT(**args["released"])
    model.load_state_dict(ckpt["released"]["ema"])
    model.eval()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([3, 7])
    with torch.no_grad():
        guidance = {"cfg_scale": DIT_CFG, "cfg_interval": True, "cfg_interval_start": LDIT_SAMPLE["cfg_interval_start"]}
        xs = sample(torch.cat([z, z]), model.forward_with_cfg, y=torch.cat([y, torch.full_like(y, 10)]), **guidance)
    outputs.update({"sample.noise": z, "sample.y": y, "sample.euler": xs[-1][:2]})
    meta = {
        "upstream": "hustvl/LightningDiT",
        **git_state(repo),
        "class": "models.lightningdit.LightningDiT",
        "args": args,
        "cfg_scale": DIT_CFG,
        "sample": LDIT_SAMPLE,
        "what": {
            "VARIANT.forward / VARIANT.forward_null": "net(x, t, y) / net(x, t, null class), eval mode",
            "VARIANT.cfg.I": "net.forward_with_cfg([x_I; x_I], [t_I; t_I], [y_I; null], cfg_scale, cfg_interval=True, "
            "cfg_interval_start)[:1]",
            "sample.euler": "transport.Sampler(create_transport('Linear', 'velocity', use_cosine_loss=True, "
            "use_lognorm=True)).sample_ode(sampling_method='euler', num_steps, timestep_shift) from [noise; noise] "
            "with the released variant's forward_with_cfg (cfg_interval=True); the last time point's first half",
            "released.pth / qknorm.pth": "{'ema': state dict} of each variant",
        },
        "adaptations": adaptations,
        "torch": torch.__version__,
    }
    write(out, "lightningdit", ckpt["released"], {**io, **outputs}, meta)
    torch.save(ckpt["qknorm"], out / "lightningdit" / "qknorm.pth")


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
    torch.manual_seed(0)
    model = mar_mod.MAR(norm_layer=norm, **LTH14_MAR_ARGS)
    perturb_(model, seed=1)
    ema = mar_mod.MAR(norm_layer=norm, **LTH14_MAR_ARGS)
    ema.load_state_dict(model.state_dict())
    perturb_(ema, seed=2, scale=0.01)
    model.eval(), ema.eval()
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
