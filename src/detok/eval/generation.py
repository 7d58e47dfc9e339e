"""Generation metrics: score a set of samples (gFID, IS, precision/recall) and sweep the CFG scale.

Paper protocol (l-DeTok App. A.2, after DiT/MAR): search the guidance scale on a smaller sample count, then
report the best scale on the full count. Here the final set is drawn with a different seed from the search
sets, so the reported number is not the minimum over noisy estimates of the same samples.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from detok import dist
from detok.checkpoint import write_json
from detok.config import NonNegativeInt, PositiveFloat, PositiveInt, check_fields
from detok.eval.features import FeatureExtractor, ReferenceSet, extract
from detok.eval.metrics import feature_stats, frechet_distance, inception_score, precision_recall
from detok.progress import tqdm


def score_images(
    images: np.ndarray,
    extractor: FeatureExtractor,
    ref: ReferenceSet,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    labels: np.ndarray | None = None,
) -> dict:
    """FID against `ref`, Inception Score, k-NN precision/recall (k=3) and class consistency of uint8 images
    (N, H, W, C).

    Precision/recall are defined for sets of equal size, so the larger of the two sets is subsampled (seeded) to
    the smaller's size; with published statistics only (no reference features) they are None. Class consistency
    is the fraction of images whose class the extractor's classifier reads as their conditioning `labels`; it is
    defined only for an extractor that classifies the dataset's own classes (the reference classifier) and None
    otherwise.
    """
    feats, probs = extract(extractor, images, batch_size, progress)
    return score_features(feats, probs, ref, seed, labels, getattr(extractor, "dataset_classes", False))


def score_features(
    feats: np.ndarray,
    probs: np.ndarray | None,
    ref: ReferenceSet,
    seed: int = 0,
    labels: np.ndarray | None = None,
    dataset_classes: bool = False,
) -> dict:
    """`score_images` from the extracted features (N, D) and probabilities (N, K) of the images."""
    mu, sigma = feature_stats(feats)
    out: dict = {"num": len(feats), "fid": frechet_distance(mu, sigma, ref.mu, ref.sigma)}
    out["class_consistency"] = class_consistency(probs, labels) if dataset_classes else None
    out["is"], out["is_std"] = inception_score(probs, min(10, len(probs))) if probs is not None else (None, None)
    out["precision"] = out["recall"] = None
    if ref.features is not None:
        real, fake = ref.features, feats
        rng = np.random.default_rng(seed)
        if len(real) > len(fake):
            real = real[np.sort(rng.permutation(len(real))[: len(fake)])]
        elif len(fake) > len(real):
            fake = fake[np.sort(rng.permutation(len(fake))[: len(real)])]
        out["precision"], out["recall"] = precision_recall(real, fake)
    return out


def class_consistency(probs: np.ndarray | None, labels: np.ndarray | None) -> float | None:
    """Fraction of samples whose most probable class is their conditioning label (None without both)."""
    if probs is None or labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (len(probs),):
        raise ValueError(f"{len(probs)} samples but labels of shape {labels.shape}")
    return float((probs.argmax(1) == labels).mean())


@dataclass(frozen=True)
class GenerationEvalConfig:
    """A CFG sweep: every scale scored on `num` samples, the best (lowest FID) re-scored on `final_num`.

    `temperatures` (for generators whose sampling is stochastic: MAR's DiffLoss, the SDE samplers) searches every
    scale at each of these temperatures, and the final re-scores the best (scale, temperature) pair; empty: every
    scale at `temperature` only. A short-trained AR model can need a lower temperature *with* guidance than the
    paper's protocol for converged ones (1.0 with CFG) gives it (docs/results.md, "Quality table2, part 3").
    `final_num <= num` reports the best search row itself (no extra samples). `no_cfg_num` > 0 also scores the
    model without guidance (CFG = 1) on that many fresh samples, at each of `no_cfg_temperatures` (the paper sweeps
    the temperature of its AR models when CFG is off, App. A.2; empty: `temperature` only), reporting the best.
    """

    cfg_scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
    num: PositiveInt = 10_000
    final_num: PositiveInt = 50_000
    seed: NonNegativeInt = 0
    batch_size: PositiveInt = 64
    temperature: PositiveFloat = 1.0
    cfg_interval: tuple[float, float] | None = None
    no_cfg_num: NonNegativeInt = 0
    no_cfg_temperatures: tuple[PositiveFloat, ...] = ()
    temperatures: tuple[PositiveFloat, ...] = ()

    def __post_init__(self):
        check_fields(self)
        if self.temperatures and self.temperature != 1.0:
            raise ValueError(
                f"give one temperature ({self.temperature:g}) or temperatures to search ({self.temperatures}), not both"
            )
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"temperatures to search repeat a value: {self.temperatures}")
        if not self.cfg_scales or any(s < 0 for s in self.cfg_scales):
            raise ValueError(f"cfg scales must be a non-empty list of numbers >= 0, got {self.cfg_scales}")
        if self.num < 4:  # precision/recall need more than k = 3 samples
            raise ValueError(f"num must be at least 4, got {self.num}")
        if 0 < self.no_cfg_num < 4:
            raise ValueError(f"no_cfg_num must be 0 (off) or at least 4, got {self.no_cfg_num}")


def _samples_path(out_dir: Path, scale: float, num: int, seed: int, cfg: GenerationEvalConfig) -> Path:
    tag = f"cfg{scale:g}-n{num}-seed{seed}"
    if cfg.temperature != 1.0:
        tag += f"-t{cfg.temperature:g}"
    if cfg.cfg_interval is not None:
        tag += f"-i{cfg.cfg_interval[0]:g},{cfg.cfg_interval[1]:g}"
    return out_dir / f"samples-{tag}.npz"


CHUNK_BATCHES = 8  # batches per kept part of a sample file (`sample_to_file`): the unit each process samples


def _scored_samples(model, tokenizer, extractor, ref, path: Path, scale: float, num: int, seed: int, cfg, progress):
    """Sample (or reuse the .npz at `path`) and score (or reuse its .json sidecar scored by the same evaluator).

    Reuse needs the same models and settings (`sampling_record`): samples made otherwise are refused, not scored
    as this run's. Files from before records were kept are reused with a warning. Under torchrun every process
    samples its share and extracts its features; rank 0 scores the gathered set, which equals a single process's.
    """
    from detok.generate import sample_to_file, sampling_record

    sampling = dict(cfg_scale=scale, cfg_interval=cfg.cfg_interval, temperature=cfg.temperature)
    record = sampling_record(model, tokenizer, num, cfg.batch_size, seed, **sampling)
    made_by = json.dumps(record, sort_keys=True, default=str)
    digest = hashlib.sha256(made_by.encode()).hexdigest()[:16]
    scores_path = path.with_suffix(".json")
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    same_evaluator = scores.get("evaluator") == extractor.name and scores.get("reference") == ref.source
    if same_evaluator and scores.get("made_by") == digest and "class_consistency" in scores:
        return scores
    show = progress and dist.is_main()

    def finish(new_scores: dict) -> dict:
        new_scores = {"cfg": scale, "seed": seed, **new_scores}
        new_scores.update(samples=path.name, evaluator=extractor.name, reference=ref.source, made_by=digest)
        write_json(scores_path, new_scores)
        return new_scores

    if path.is_file():  # kept samples are one file: rank 0 checks and scores them, the others take its outcome
        outcome = None
        if dist.is_main():
            try:
                kept = _score_kept(extractor, ref, path, scores, same_evaluator, made_by, num, seed, show, finish)
                outcome = ("scores", kept)
            except ValueError as e:
                outcome = ("error", str(e))
        kind, value = dist.broadcast_object(outcome)
        if kind == "error":
            raise ValueError(value)
        return value
    images, labels = sample_to_file(
        path, model, tokenizer, num, cfg.batch_size, seed, CHUNK_BATCHES, progress=progress, **sampling
    )  # this process's share of the set
    chunk = cfg.batch_size * CHUNK_BATCHES
    # part by part, so that the extractor sees the same batches whichever process holds a part (a batch of other
    # images can change a network's output in the last bits)
    starts = tqdm(range(0, len(images), chunk), disable=not show, desc="features", unit="part")
    pieces = [extract(extractor, images[i : i + chunk], progress=False) for i in starts]
    feats = np.concatenate([f for f, _ in pieces]) if pieces else None
    probs = np.concatenate([p for _, p in pieces]) if pieces and pieces[0][1] is not None else None
    if dist.is_distributed():  # extractors give float32: sent as such, the gathered features are the same numbers
        feats, probs = (None if a is None else a.astype(np.float32) for a in (feats, probs))
    shares = dist.gather_object((feats, probs, labels))
    result = None
    if dist.is_main():
        feats, probs, labels = _in_order(shares, num, chunk)
        dataset_classes = getattr(extractor, "dataset_classes", False)
        result = finish(score_features(feats, probs, ref, seed, labels, dataset_classes))
    return dist.broadcast_object(result)


def _score_kept(
    extractor, ref, path: Path, scores: dict, same_evaluator: bool, made_by: str, num: int, seed: int, progress, finish
) -> dict:
    """Scores of the samples kept at `path` (after checking they are this evaluation's), written by `finish`."""
    with np.load(path) as f:
        images, stored = f["images"], (str(f["made_by"]) if "made_by" in f.files else None)
        labels = f["labels"] if "labels" in f.files else None
    scores_path = path.with_suffix(".json")
    if stored is not None and stored != made_by:
        raise ValueError(
            f"{path} was sampled by other models or settings than this evaluation; delete it (and "
            f"{scores_path.name}) or evaluate into another --out folder"
        )
    if len(images) != num:
        raise ValueError(f"{path} holds {len(images)} samples, expected {num}; delete it to resample")
    if stored is None:
        warnings.warn(f"{path} records no sampling settings (older detok); reusing it as this run's", stacklevel=3)
        if same_evaluator and "made_by" not in scores and "class_consistency" in scores:
            return scores
    return finish(score_images(images, extractor, ref, seed=seed, progress=progress, labels=labels))


def _in_order(shares: list[tuple], num: int, chunk: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Features (N, D), probabilities (N, K) and labels (N,) of the whole set from each process's share."""
    from detok.generate import share_indices

    parts = [(share_indices(num, chunk, r, len(shares)), *share) for r, share in enumerate(shares)]
    parts = [part for part in parts if part[1] is not None]  # a process with no share extracted nothing
    feats = np.zeros((num, parts[0][1].shape[1]))
    probs = None if parts[0][2] is None else np.zeros((num, parts[0][2].shape[1]))
    labels = np.zeros(num, dtype=np.int64)
    for idx, f, p, y in parts:
        feats[idx], labels[idx] = f, y
        if probs is not None:
            probs[idx] = p
    return feats, probs, labels


def evaluate_generation(
    model: torch.nn.Module,
    tokenizer: torch.nn.Module,
    extractor: FeatureExtractor,
    ref: ReferenceSet,
    out_dir: str | Path,
    cfg: GenerationEvalConfig,
    progress: bool = True,
) -> dict:
    """Run the CFG (× temperature) search and the final evaluation; resumable (samples and scores are kept per
    setting).

    Writes `out_dir/generation.json` (a row per scale and temperature, the best pair, the final row) after every
    step, and the samples of each setting as .npz (uint8 images + labels) + PNG grid, so another evaluator can
    re-score them.
    Under torchrun the processes share the sampling and the feature extraction of every set (`out_dir` must be on a
    file system they all see); the record equals a single process's.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "evaluator": extractor.name,
        "reference": ref.source,
        "settings": asdict(cfg),
        "rows": [],
        "best_cfg": None,
        "best_temperature": None,
        "final": None,
    }

    def scored(scale: float, temperature: float, num: int, seed: int) -> dict:
        """The scores of one setting's samples (made or reused), with the temperature they were drawn at."""
        at = replace(cfg, temperature=temperature, temperatures=())
        path = _samples_path(out_dir, scale, num, seed, at)
        row = _scored_samples(model, tokenizer, extractor, ref, path, scale, num, seed, at, progress)
        return {**row, "temperature": temperature}

    for temperature in cfg.temperatures or (cfg.temperature,):
        for scale in cfg.cfg_scales:
            record["rows"].append(scored(scale, temperature, cfg.num, cfg.seed))
            _write_record(out_dir, record)
    best = min(record["rows"], key=lambda r: r["fid"])
    record["best_cfg"], record["best_temperature"] = best["cfg"], best["temperature"]
    if cfg.final_num > cfg.num:
        record["final"] = scored(best["cfg"], best["temperature"], cfg.final_num, cfg.seed + 1)
    else:
        record["final"] = dict(best)
    _write_record(out_dir, record)
    if cfg.no_cfg_num:
        record["no_cfg_rows"] = []
        for temperature in cfg.no_cfg_temperatures or (cfg.temperature,):
            record["no_cfg_rows"].append(scored(1.0, temperature, cfg.no_cfg_num, cfg.seed + 2))
            _write_record(out_dir, record)
        record["no_cfg"] = min(record["no_cfg_rows"], key=lambda r: r["fid"])
        _write_record(out_dir, record)
    return record


def _write_record(out_dir: Path, record: dict) -> None:
    if dist.is_main():
        write_json(out_dir / "generation.json", record)
