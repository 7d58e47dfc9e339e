"""Text-to-image evaluation: FID of caption-conditioned samples against the test images, and text alignment.

The l-DeTok paper (Sec. 5.4, Table 7; App. C) reports FID and CLIP score on MS-COCO's validation captions. At the
Fashion-MNIST scale there is no CLIP to score with; the alignment score here is what the captions promise: the share of
samples whose class, as the reference classifier reads it, AND whose measured attribute levels (text/captions.py's
measurements, cut at the caption class's training-split quantiles) are those their caption names. It is reported
separately for captions of combinations seen in training and of held-out combinations (never captioned for training:
compositional generalisation), with each part's hit rate and the chance level of the attributes (1/18). The test
images themselves, scored by the same rule against their own captions, give the ceiling (their attributes match by
construction, so it is the classifier's accuracy on them).

Protocol, as `eval generation`'s: the guidance scale is searched on the captions of the first `num` test images, and
the best (lowest FID) is scored again on `final_num` fresh samples (another seed), each sample conditioned on the first
caption of test image i. Sample sets are kept as .npz (images, the captions, `caption_index`) and reused when rerun.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from detok.checkpoint import write_json
from detok.config import NonNegativeInt, PositiveFloat, PositiveInt, check_fields, from_dict
from detok.eval.features import FeatureExtractor, ReferenceSet, extract
from detok.eval.generation import CHUNK_BATCHES, score_features
from detok.text.captions import ATTRIBUTES, CaptionRecipe, CaptionSet

CHANCE_ATTRIBUTES = 1.0 / float(np.prod([len(a.levels) for a in ATTRIBUTES]))


@dataclass(frozen=True)
class T2IEvalConfig:
    """A CFG sweep on the captions of the first `num` test images, the best scale re-scored on `final_num` fresh
    samples (`final_num <= num` reports the best search row itself)."""

    cfg_scales: tuple[float, ...] = (1.0, 2.0, 3.0)
    num: PositiveInt = 1_000
    final_num: PositiveInt = 5_000
    seed: NonNegativeInt = 0
    batch_size: PositiveInt = 64
    temperature: PositiveFloat = 1.0
    cfg_interval: tuple[float, float] | None = None

    def __post_init__(self):
        check_fields(self)
        if not self.cfg_scales or any(s < 0 for s in self.cfg_scales):
            raise ValueError(f"cfg scales must be a non-empty list of numbers >= 0, got {self.cfg_scales}")
        if self.num < 4:
            raise ValueError(f"num must be at least 4, got {self.num}")


def evaluation_prompts(captions: CaptionSet, num: int) -> tuple[np.ndarray, ...]:
    """The test images 0, 1, … with a caption (cycling) (num,), the id of each one's first caption (num,), and, for
    made captions, their combinations (num, 1 + A) and held-out flags (num,) (else None)."""
    if "test" not in captions.ids:
        raise ValueError("the caption set has no captions of the test split to sample from")
    ids = captions.ids["test"]
    has = np.flatnonzero(ids[:, 0] >= 0)
    if not len(has):
        raise ValueError("no test image of the caption set has a caption")
    images = has[np.arange(num) % len(has)]
    if "test" not in captions.combos:
        return images, ids[images, 0], None, None
    return images, ids[images, 0], captions.combos["test"][images], captions.held_out["test"][images]


def text_alignment(
    images: np.ndarray, combos: np.ndarray, held_out: np.ndarray, recipe: CaptionRecipe, probs: np.ndarray
) -> dict:
    """Hit rates of uint8 images (N, H, W, C) against the combinations (N, 1 + A) their captions name: the class (the
    classifier's most probable one), each attribute level (measured with the caption class's cut points) and all of
    them at once ("alignment"), over all samples and over the seen and held-out combinations."""
    measured = recipe.levels(images, combos[:, 0])  # (N, 1 + A)
    hits = {"class": probs.argmax(1) == combos[:, 0]}
    for a, attr in enumerate(ATTRIBUTES):
        hits[attr.name] = measured[:, 1 + a] == combos[:, 1 + a]
    hits["alignment"] = np.all(np.stack(list(hits.values())), axis=0)

    def part(sel: np.ndarray) -> dict:
        return {"num": int(sel.sum()), **{k: (float(v[sel].mean()) if sel.any() else None) for k, v in hits.items()}}

    held_out = np.asarray(held_out, dtype=bool)
    return {"all": part(np.ones(len(images), dtype=bool)), "seen": part(~held_out), "held_out": part(held_out)}


def _made_by(model, tokenizer, num: int, seed: int, text: torch.Tensor, labels: torch.Tensor, cfg, sampling) -> str:
    from detok.generate import conditions_digest, sampling_record

    record = sampling_record(model, tokenizer, num, cfg.batch_size, seed, **sampling)
    record["conditions"] = conditions_digest(text, labels)
    return json.dumps(record, sort_keys=True, default=str)


def _samples(model, tokenizer, captions: CaptionSet, tokens, path: Path, scale, num, seed, cfg, progress):
    """The images of one setting (sampled, or the .npz at `path` if it holds this setting's), with the test prompts."""
    from detok.generate import sample_to_file

    _, ids, combos, held = evaluation_prompts(captions, num)
    used, index = np.unique(ids, return_inverse=True)  # the .npz stores the distinct captions it used
    labels, text = torch.from_numpy(index).long(), tokens[torch.from_numpy(ids).long()]
    sampling = dict(cfg_scale=scale, cfg_interval=cfg.cfg_interval, temperature=cfg.temperature)
    if path.is_file():
        with np.load(path) as f:
            if "made_by" in f.files and str(f["made_by"]) == _made_by(
                model, tokenizer, num, seed, text, labels, cfg, sampling
            ):
                return f["images"], combos, held
        raise ValueError(f"{path} was sampled by other models or settings than this evaluation; delete it to resample")
    images, _ = sample_to_file(
        path, model, tokenizer, num, cfg.batch_size, seed, CHUNK_BATCHES, progress, text=text, labels=labels,
        captions=[captions.captions[i] for i in used], **sampling,
    )  # fmt: skip
    return images, combos, held


def _score(images, combos, held, extractor, classifier, ref, recipe, seed) -> dict:
    feats, probs = extract(extractor, images, progress=False)
    if not getattr(extractor, "dataset_classes", False):
        probs = None if classifier is None else extract(classifier, images, progress=False)[1]
    classes = None if combos is None else combos[:, 0]
    out = score_features(feats, probs, ref, seed, classes, dataset_classes=probs is not None and classes is not None)
    if combos is not None and recipe is not None and probs is not None:
        out["alignment"] = text_alignment(images, combos, held, recipe, probs)
        out["alignment_seen"] = out["alignment"]["seen"]["alignment"]
        out["alignment_held_out"] = out["alignment"]["held_out"]["alignment"]
    return out


def evaluate_t2i(
    model: torch.nn.Module,
    tokenizer: torch.nn.Module,
    captions: CaptionSet,
    tokens: torch.Tensor,
    extractor: FeatureExtractor,
    ref: ReferenceSet,
    out_dir: str | Path,
    cfg: T2IEvalConfig,
    classifier: FeatureExtractor | None = None,
    progress: bool = True,
) -> dict:
    """Run the CFG sweep and the final evaluation of a text-conditioned generator; resumable (sample sets are kept).

    Args:
        captions, tokens: the caption set and its token embeddings (M, L, D) under the generator's text encoder.
        extractor, ref: the FID features and the test images' reference set.
        classifier: reads the class of a sample for the alignment score when `extractor` does not (the reference
            classifier does both).

    Writes `out_dir/t2i.json` (rows per scale, best scale, final row, the real test images' ceiling) after every step.
    """
    from detok.data import DataConfig, build_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"evaluator": extractor.name, "reference": ref.source, "settings": asdict(cfg), "rows": []}
    record.update(best_cfg=None, final=None, chance_attributes=CHANCE_ATTRIBUTES)
    recipe = captions.recipe

    def scored(scale: float, num: int, seed: int) -> dict:
        tag = f"cfg{scale:g}-n{num}-seed{seed}" + (f"-t{cfg.temperature:g}" if cfg.temperature != 1.0 else "")
        path = out_dir / f"samples-{tag}.npz"
        images, combos, held = _samples(model, tokenizer, captions, tokens, path, scale, num, seed, cfg, progress)
        scores = _score(images, combos, held, extractor, classifier, ref, recipe, seed)
        return {"cfg": scale, "seed": seed, "samples": path.name, **scores}

    for scale in cfg.cfg_scales:
        record["rows"].append(scored(scale, cfg.num, cfg.seed))
        write_json(out_dir / "t2i.json", record)
    best = min(record["rows"], key=lambda r: r["fid"])
    record["best_cfg"] = best["cfg"]
    record["final"] = scored(best["cfg"], cfg.final_num, cfg.seed + 1) if cfg.final_num > cfg.num else dict(best)
    if recipe is not None and "test" in captions.combos:  # the ceiling: the test images against their own captions
        n = record["final"]["num"]
        data = dataclasses.replace(from_dict(DataConfig, captions.data, "data."), hflip=False)
        test = build_dataset(data, "test")
        which, _, combos, held = evaluation_prompts(captions, n)
        images = test.images[torch.from_numpy(which)].permute(0, 2, 3, 1).numpy()  # (n, H, W, C) uint8
        reader = extractor if getattr(extractor, "dataset_classes", False) else classifier
        if reader is not None:
            probs = extract(reader, images, progress=False)[1]
            record["real"] = text_alignment(images, combos, held, recipe, probs)
    write_json(out_dir / "t2i.json", record)
    return record
