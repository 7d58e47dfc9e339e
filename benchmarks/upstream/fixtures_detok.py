"""Fixture jobs on Jiawei-Yang/DeTok: the l-DeTok tokenizer, the generators' sampling schedules and the MAR
(make_fixtures.py)."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from pathlib import Path

import torch
from fixture_utils import (
    enter_package,
    git_state,
    raw_and_ema,
    stand_in,
    write,
)

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
    stand_in(  # even where diffusers is installed: its import pulls in transformers/peft for a class never called
        "diffusers.models", {"AutoencoderKL": object}, "the SD-VAE backbone class", adaptations, always=True
    )
    model_utils = importlib.import_module("models.model_utils")
    model_utils.SIZE_DICT.update(DETOK_TINY)
    adaptations.append(f"SIZE_DICT gains the tiny sizes {DETOK_TINY}")
    upstream = importlib.import_module("models.detok")

    model, ema = raw_and_ema(
        lambda: upstream.DeTok(vit_enc_model_size="tiny-enc", vit_dec_model_size="tiny-dec", **DETOK_ARGS)
    )

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

    model, ema = raw_and_ema(build)  # eval: attention and projection dropout (0.1) off

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
