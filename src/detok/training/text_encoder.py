"""Training of detok's offline text encoder (text/offline.py) on a caption set, then its retrieval probe.

CLIP's recipe (Radford et al., arXiv:2103.00020, §2.5: AdamW, warm-up then cosine decay, a large batch of pairs, a
learned temperature) shortened for CPUs. Each step takes a batch of training images that have captions and are not in a
held-out combination, one of each image's captions at random, and random horizontal flips (the caption attributes are
flip-invariant). One process (the loss compares every pair of the batch, so the batch is not split); resuming is
running the same command again. Labels are read only by the probe, after training, which measures the encoder and
never changes it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detok.checkpoint import save_model_folder, save_training_state, write_json
from detok.config import PositiveInt, check_fields, from_dict, to_dict
from detok.data import DataConfig, build_dataset
from detok.optim import EMA, lr_at, param_groups
from detok.progress import tqdm
from detok.registry import get_preset
from detok.runlog import RunLog
from detok.runtime import DivergenceGuard, augment_seed, batch_indices, shard_seed
from detok.text.captions import CaptionSet
from detok.text.offline import words
from detok.training.common import TrainConfig, check_batch_memory, check_finite_weights, resume, start_run

PROBE_FILE = "probe.json"


@dataclass(frozen=True)
class TextEncoderRunConfig:
    """Everything a text-encoder run needs: the preset's model (vocabulary filled from the captions), the caption set,
    the images it describes, the schedule, and the probe's number of test images."""

    preset: str
    model: Any
    captions: str
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe_images: PositiveInt = 2_000

    def __post_init__(self):
        check_batch_memory(self.train, self.data)
        check_fields(self)


def default_run_config(preset: str, captions: str | Path) -> TextEncoderRunConfig:
    """The run recipe of a text-encoder preset on a caption set: the vocabulary is the caption set's words (sorted);
    the images are the caption set's data, with flips; 300,000 images (five Fashion-MNIST epochs) in batches of 256,
    AdamW at 2e-3 after 5% warm-up, cosine decay, weight decay 0.1, EMA 0.99.

    Cost of `text-encoder-fmnist32` (one thread of a 2-core CPU shared with a benchmark, 2026-12): ~2,300 images/s,
    so ~2.2 minutes; one epoch (60,000 images, 26 s) already retrieved an image of the caption's combination for 31% of
    the test captions (29% for held-out combinations; chance 0.7%). Numbers of the full recipe: docs/text-to-image.md.
    """
    p = get_preset(preset)
    if p.kind != "text-encoder":
        raise ValueError(f"{preset!r} is a {p.kind} preset, not a text encoder")
    caption_set = CaptionSet.load(captions)
    if not caption_set.captions or not len(caption_set.trainable("train")):
        raise ValueError(
            f"caption set {captions} has no training image with a caption outside the held-out combinations "
            f"({len(caption_set.captions)} captions): nothing to train on; make one with `detok captions make`"
        )
    vocab = tuple(sorted({w for c in caption_set.captions for w in words(c)}))
    data = dataclasses.replace(from_dict(DataConfig, caption_set.data, "data."), hflip=True)
    model = dataclasses.replace(p.make_config(), vocab=vocab, image_size=data.image_size, channels=data.channels)
    train = TrainConfig(
        images=300_000,
        batch_size=256,
        lr=2e-3,
        warmup_frac=0.05,
        weight_decay=0.1,
        beta2=0.98,
        grad_clip=1.0,
        ema_decay=0.99,
        ckpt_every=200,
        log_every=20,
    )
    return TextEncoderRunConfig(preset=preset, model=model, captions=str(captions), data=data, train=train)


def train_text_encoder(cfg: TextEncoderRunConfig, run_dir: str | Path) -> Path:
    """Train (or resume) a text encoder in `run_dir`, then probe it; returns the run directory, which then holds the
    EMA model (config.json: `finished`, `trained_with_labels: false`, the probe) and `probe.json`."""
    tc = cfg.train
    run_dir = Path(run_dir)
    device, shards = start_run(tc, run_dir, "text-encoder")
    if shards != 1:
        raise ValueError("the contrastive loss compares every pair of a batch: train in one process, grad_accum=1")
    captions = CaptionSet.load(cfg.captions)
    dataset = build_dataset(cfg.data, "train")
    if len(captions.ids["train"]) != len(dataset):
        raise ValueError(f"caption set {cfg.captions} describes {len(captions.ids['train'])} training images, the data "
                         f"has {len(dataset)}: make the captions from the same data")  # fmt: skip
    pool = torch.from_numpy(captions.trainable("train"))  # images with a caption, not held out
    image_ids = torch.from_numpy(captions.ids["train"]).long()  # (N, K)

    torch.manual_seed(tc.seed)
    model = get_preset(cfg.preset).model_cls(cfg.model).to(device)
    ids_all, mask_all, _, _ = model.tokenize(captions.captions)  # (M, L) each: every caption, tokenised once
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.peak_lr(), betas=(tc.beta1, tc.beta2))
    modules, optimizers = {"model": model, "ema": ema.model}, {"opt": opt}
    run = to_dict(cfg)
    step, images_seen = resume(run_dir, modules, optimizers, ema, run)
    write_json(run_dir / "run_config.json", {"run": run, "world_size": 1, "effective_batch": tc.batch_size})

    total, warmup = tc.total_steps, int(tc.warmup_frac * tc.total_steps)
    log = RunLog(run_dir, enabled=True, tensorboard=tc.tensorboard, start_step=step)
    guard = DivergenceGuard(run_dir)
    bar = tqdm(total=total, initial=step, disable=not tc.progress, desc="text encoder", unit="step")
    t_last, imgs_last = time.perf_counter(), images_seen
    model.train()
    while step < total:
        lr = lr_at(step, total, tc.peak_lr(), warmup, tc.min_lr, tc.lr_schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = pool[batch_indices(step, tc.batch_size, len(pool), tc.seed)]  # (B,) image indices
        gen = torch.Generator().manual_seed(augment_seed(tc.seed, step, 0))
        x, _ = dataset.get_batch(rows, gen)  # flips from `gen`; the labels are not used
        choices = image_ids[rows]  # (B, K)
        k = (torch.rand(len(rows), generator=gen) * (choices >= 0).sum(1)).long()  # one of each image's captions
        cap = choices[torch.arange(len(rows)), k]  # (B,)
        torch.manual_seed(shard_seed(tc.seed, step, 0))
        loss = model(x.to(device), ids_all[cap].to(device), mask_all[cap].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        guard.check(step + 1, loss=loss.detach(), grad_norm=grad_norm)
        opt.step()
        ema.update(model)
        step += 1
        images_seen += tc.batch_size
        bar.update(1)
        if step % tc.log_every == 0 or step == total:
            now = time.perf_counter()
            ips = (images_seen - imgs_last) / max(now - t_last, 1e-9)
            t_last, imgs_last = now, images_seen
            log.log(step, images=images_seen, lr=lr, loss=round(float(loss.detach()), 5), grad_norm=float(grad_norm),
                    temperature=round(float(model.logit_scale.detach().exp()), 3), img_per_s=round(ips, 2))  # fmt: skip
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{ips:.0f}")
        if step % tc.ckpt_every == 0 or step == total:
            check_finite_weights(modules, step)
            meta = {"step": step, "images_seen": images_seen, "ema_updates": ema.updates}
            save_training_state(run_dir, step, modules, optimizers, meta, tc.keep_checkpoints)
    bar.close()
    log.close()

    probe = run_dir / PROBE_FILE
    if not probe.is_file():
        t0 = time.perf_counter()
        result = probe_text_encoder(ema.model, captions, cfg.data, cfg.probe_images, device)
        write_json(probe, {**result, "seconds": round(time.perf_counter() - t0, 1)})
    extra = {"preset": cfg.preset, "captions": cfg.captions, "finished": True, "trained_with_labels": False}
    save_model_folder(run_dir, ema.model, {**extra, "probe": json.loads(probe.read_text()), "step": step})
    return run_dir


@torch.no_grad()
def probe_text_encoder(model, captions: CaptionSet, data: DataConfig, num: int, device) -> dict:
    """Caption → image retrieval on the first `num` test images, each with its first caption: how often the nearest
    image (cosine, in the shared space) has the caption's combination of class and attribute levels, overall and for
    held-out combinations; chance is the share of the images with that combination. Needs made captions (combos)."""
    if "test" not in captions.combos:
        return {"note": "no combinations recorded in the caption set: retrieval probe skipped"}
    model.eval()
    test = build_dataset(dataclasses.replace(data, hflip=False), "test")
    n = min(num, len(test), len(captions.ids["test"]))
    x, _ = test.get_batch(torch.arange(n))
    img = torch.cat([model.image_embedding(x[i : i + 500].to(device)) for i in range(0, n, 500)])  # (n, E)
    first = captions.ids["test"][:n, 0]
    ids, mask, _, _ = model.tokenize([captions.captions[i] for i in first])
    txt = model.text_embedding(ids.to(device), mask.to(device))  # (n, E)
    nearest = (txt @ img.T).argmax(1).cpu().numpy()  # (n,)
    combos, held = captions.combos["test"][:n], captions.held_out["test"][:n]
    same = (combos[nearest] == combos).all(1)
    chance = np.array([(combos == c).all(1).mean() for c in combos])
    out = {"images": n, "retrieval_same_combination": float(same.mean()), "chance": float(chance.mean())}
    if held.any():
        out["held_out"] = {"images": int(held.sum()), "retrieval_same_combination": float(same[held].mean()),
                           "chance": float(chance[held].mean())}  # fmt: skip
    return out
