"""Fixture jobs on the DiT family: facebookresearch/DiT, willisma/SiT, hustvl/LightningDiT (make_fixtures.py)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from fixture_utils import (
    enter_package,
    git_state,
    perturb_,
    raw_and_ema,
    stand_in_package,
    timm_without_torchvision,
    write,
)

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
    timm_without_torchvision(adaptations)
    models = importlib.import_module("models")
    cls_name = {"dit": "DiT", "sit": "SiT"}[name]
    args = {**DIT_TINY, "patch_size": 2, "learn_sigma": True}  # SiT's release carries learn-sigma rows too

    def build():
        return getattr(models, cls_name)(**args)

    model, ema = raw_and_ema(build)
    with torch.no_grad():  # pos_embed is a frozen parameter: give it back the sin-cos table the perturbation moved
        model.pos_embed.copy_(ema.pos_embed.copy_(build().pos_embed))
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
    timm_without_torchvision(adaptations)
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
