"""`detok bench reproduce`: the l-DeTok paper's claims at small scale, one resumable command per suite.

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), Table 2: tokenizers with
the same architecture and budget — baseline (γ=0, M=0), masking only, noise only, joint — each judged by the
generators trained on its latents (SiT for non-AR, MAR for AR), FID with CFG. Here on Fashion-MNIST-32, with the
project's reference classifier as the evaluator (fixed before any grid run; never tuned on its outcome).

Every step (tokenizer training, statistics, reconstruction metrics, latent cache, generator training, CFG search
and final scoring) records its result and wall-clock time in a `done.json` beside its outputs; a rerun skips the
finished steps and resumes the unfinished one from its checkpoints. An interrupted attempt leaves an
`attempt.json`; the resumed step adds the interrupted attempt's time, counted up to the last file it wrote (a
lower bound: the work after that file was lost and is redone), so the recorded time covers the whole step.

Length (~535 lines): the resumable suite runner — a cell's steps, their restore and their timing share the same
records; the steps themselves live in bench/steps.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from detok.bench.findings import update_findings
from detok.bench.results import environment, repo_relative, repository_of, write_results
from detok.bench.steps import as_stored, find_twin, run_step, share_step
from detok.bench.suites import (
    AR_GENERATORS,
    BUDGETS,
    SECOND_EVALUATOR,
    SUITES,
    T2I_GENERATORS,
    Budget,
    TokenizerVariant,
    cell_generators,
    parse_budget,
    suite_cells,
)
from detok.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_generator, load_tokenizer
from detok.config import apply_overrides, to_dict
from detok.data import DataConfig, build_dataset


def _fill(override: str, ctx: dict) -> str:
    """An override with the suite's teacher filled in: `{teacher}` its folder, `{teacher_dim}` its feature width."""
    if "{teacher" in override and "teacher" not in ctx:
        raise ValueError(f"{override!r} names the suite's teacher, but this suite trains none")
    return override.replace("{teacher}", str(ctx.get("teacher"))).replace("{teacher_dim}", str(ctx.get("teacher_dim")))


def _teacher_step(budget: Budget, work_dir: Path, ctx: dict) -> dict:
    """Train the suite's offline teacher once in `work_dir/teacher` (label-free; its linear probe is recorded)."""
    from detok.checkpoint import read_model_config
    from detok.training.teacher import PROBE_FILE, default_run_config, train_teacher

    run = work_dir / "teacher"
    overrides = [f"train.images={budget.teacher_images}", *(f"data.{o}" for o in budget.data), *budget.train]

    def train() -> dict:
        train_teacher(apply_overrides(default_run_config(budget.teacher), overrides), run)
        return {"overrides": overrides, "probe": json.loads((run / PROBE_FILE).read_text())}

    done = run_step(run / "done.json", {"preset": budget.teacher, "overrides": overrides}, train, ctx["log"])
    ctx["teacher"], ctx["teacher_dim"] = run, read_model_config(run)[1].enc_width
    return done


def _tokenizer_steps(variant: TokenizerVariant, seed: int, budget: Budget, cell: Path, ctx: dict) -> dict:
    from detok.eval.recon import evaluate_reconstruction
    from detok.latents import cache_latents, compute_latent_stats, store_latent_stats
    from detok.training.tokenizer import default_run_config, resolution_base, train_tokenizer

    tok_dir, data, device, log = cell / "tokenizer", ctx["data"], ctx["device"], ctx["log"]
    common = [f"train.seed={seed}", *(f"data.{o}" for o in budget.data), *budget.train, *budget.tokenizer_train]

    preset = budget.tokenizer_for(variant)
    base_preset = resolution_base(preset) or preset  # the preset of the `finetune_from` tokenizer

    def trainer(run: Path, overrides: list[str], preset: str = preset) -> Callable[[], dict]:
        def train() -> dict:
            cfg = default_run_config(preset, overrides)
            train_tokenizer(cfg, run)
            tok = load_tokenizer(run, device)
            if tok.latent_layout.kind != "discrete":  # code indices are not normalised
                train_set = build_dataset(cfg.data, "train")  # the run's own images (a base at its own size)
                mean, std = compute_latent_stats(tok, train_set, 256, budget.stats_images, device, False)
                store_latent_stats(run, mean, std)
            return {"overrides": overrides}

        return train

    images = variant.tokenizer_scale * budget.tokenizer_images
    variant_overrides = [_fill(o, ctx) for o in variant.overrides]
    overrides = [*variant_overrides, f"train.images={images}", *common]
    base_dir = cell.parent / f"{variant.finetune_from}-seed{seed}" / "tokenizer" if variant.finetune_from else tok_dir
    twin = None  # another cell of the work folder whose steps this one shares (steps.find_twin)
    if (source := budget.tokenizer_dir(variant, seed)) is not None:  # trained elsewhere: copied, statistics redone
        spec = {"imported": str(source), "digest": _imported_digest(source), "stats_images": budget.stats_images}
        result = {"train": run_step(tok_dir / "done.json", spec, _importer(source, tok_dir, budget, ctx), log)}
    elif variant.stages:  # one run per stage, each from the previous one's weights; the last is the tokenizer
        result, previous = {"stages": []}, None
        for i, (share, extra) in enumerate(variant.stages):
            run = tok_dir if i == len(variant.stages) - 1 else cell / f"stage{i + 1}"
            stage = [*overrides, *map(lambda o: _fill(o, ctx), extra), f"train.images={max(1, round(share * images))}"]
            stage += [f"init_from={previous}"] if previous is not None else []
            spec = {"preset": preset, "overrides": stage, "stats_images": budget.stats_images}
            result["stages"].append(run_step(run / "done.json", spec, trainer(run, stage), log))
            previous = run
        result["train"] = result["stages"][-1]
    else:
        spec = {"preset": base_preset, "overrides": overrides, "stats_images": budget.stats_images}
        twin = None if variant.finetune_from else _tokenizer_twin(cell, spec, log)
        result = {"train": run_step(base_dir / "done.json", spec, trainer(base_dir, overrides, base_preset), log)}
    if twin is not None:
        result["shared_from"] = result["train"]["shared_from"] = twin.name
    trained = result["train"]
    if variant.finetune_from:
        ft = [*variant_overrides, *(_fill(o, ctx) for o in variant.finetune_overrides), f"init_from={base_dir}"]
        ft += ["decoder_finetune=true"] if variant.finetune == "decoder" else []
        # at another image size, 1/8 of the base's images (App. A.3: 25 epochs after 200)
        ft_images = budget.finetune_images if base_preset == preset else max(1, images // 8)
        ft += [f"train.images={ft_images}", *common]
        spec = {"preset": preset, "overrides": ft, "stats_images": budget.stats_images}
        result = {"base": trained, "train": run_step(tok_dir / "done.json", spec, trainer(tok_dir, ft), log)}

    def recon() -> dict:
        tok = load_tokenizer(tok_dir, device)
        test = build_dataset(data, "test")
        return evaluate_reconstruction(tok, test, 256, budget.recon_images, device, False, extractor=ctx["extractor"])

    spec = {"images": budget.recon_images, "evaluator": ctx["extractor"].name}
    shared = share_step(cell / "recon", twin, {"done.json": spec}, log)
    metrics = _mark(run_step(cell / "recon" / "done.json", spec, recon, log), shared, twin)
    if ctx.get("second") is not None:  # the same reconstructions in the second evaluator's features

        def recon_second() -> dict:
            tok, test = load_tokenizer(tok_dir, device), build_dataset(data, "test")
            extractor = ctx["second"][0]
            return evaluate_reconstruction(tok, test, 256, budget.recon_images, device, False, extractor=extractor)

        spec = {"images": budget.recon_images, "evaluator": ctx["second"][0].name}
        shared = share_step(cell / "recon-2", twin, {"done.json": spec}, log)
        metrics["second"] = _mark(run_step(cell / "recon-2" / "done.json", spec, recon_second, log), shared, twin)

    def cache() -> dict:
        tok = load_tokenizer(tok_dir, device)
        cache_latents(tok, build_dataset(data, "train"), cell / "latents", str(tok_dir), max_images=budget.cache_images)
        return {"images": budget.cache_images}

    shared = share_step(cell / "latents", twin, {"done.json": {"images": budget.cache_images}}, log)
    cached = _mark(run_step(cell / "latents" / "done.json", {"images": budget.cache_images}, cache, log), shared, twin)
    # the weights' digest: a cell completed in a later session on a retrained tokenizer says whether it is the same
    digest = hashlib.sha256((tok_dir / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
    return {**result, "recon": metrics, "cache": cached, "digest": digest}


def _imported_digest(source: Path) -> str:
    """The weights' digest of an imported tokenizer folder (refused when it is not one)."""
    if not (source / CONFIG_FILE).is_file() or not (source / WEIGHTS_FILE).is_file():
        raise ValueError(
            f"budget tokenizer_dirs: {source} is not a tokenizer folder (it needs {CONFIG_FILE} and {WEIGHTS_FILE}, "
            "as `detok tokenizer train` and `detok convert` write them)"
        )
    return hashlib.sha256((source / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]


def _importer(source: Path, tok_dir: Path, budget: Budget, ctx: dict) -> Callable[[], dict]:
    """The step that takes the already-trained tokenizer `source` as the cell's: its config and weights are copied
    into `tok_dir` and its latent statistics recomputed on the suite's training images, as a trained cell's are."""
    from detok.latents import compute_latent_stats, store_latent_stats

    def run() -> dict:
        tok = load_tokenizer(source, ctx["device"], check_stats=False)
        data = ctx["data"]
        if (tok.config.channels, tok.config.image_size) != (data.channels, data.image_size):
            raise ValueError(
                f"budget tokenizer_dirs: {source} takes {tok.config.channels}-channel {tok.config.image_size}-px "
                f"images, the suite's data are {data.channels}-channel {data.image_size}-px"
            )
        tok_dir.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copyfile(source / name, tok_dir / name)
        tok = load_tokenizer(tok_dir, ctx["device"], check_stats=False)
        train_set = build_dataset(data, "train")
        mean, std = compute_latent_stats(tok, train_set, 256, budget.stats_images, ctx["device"], False)
        store_latent_stats(tok_dir, mean, std)
        return {"imported_from": str(source), "architecture": getattr(tok.config, "architecture", None)}

    return run


def _tokenizer_twin(cell: Path, spec: dict, log: Callable[[str], None]) -> Path | None:
    """The cell whose tokenizer this cell's `tokenizer` folder links to (linked now if another cell of the work
    folder is done with exactly `spec`), or None when this cell trains its own."""
    tok_dir = cell / "tokenizer"
    if tok_dir.is_symlink():  # linked by an earlier run
        return tok_dir.resolve().parent
    twin = find_twin(cell.parent, cell, spec)
    return twin if share_step(tok_dir, twin, {"done.json": spec}, log) else None


def _mark(done: dict, shared: bool, twin: Path | None) -> dict:
    """A step's record, naming the cell it is shared with (its time was spent there, not in this cell)."""
    return {**done, "shared_from": twin.name} if shared else done


def _generator_steps(
    name: str, budget: Budget, cell: Path, ctx: dict, init_from: Path | None = None, twin: Path | None = None
) -> dict:
    """Train generator `name` of the budget on the cell's latents (from the trained generator `init_from`, if given)
    and evaluate it; share both with cell `twin` (whose tokenizer this cell shares) where it has them done alike."""
    from detok.eval.generation import GenerationEvalConfig, evaluate_generation
    from detok.generate import with_sampling_settings
    from detok.training.generator import default_run_config, train_generator

    if name in T2I_GENERATORS:
        from detok.bench.t2i import t2i_generator_steps

        return t2i_generator_steps(name, budget, cell, ctx)
    preset, images, sampling = (
        getattr(budget, name),
        getattr(budget, f"{name}_images"),
        getattr(budget, f"{name}_sampling"),
    )
    run, tok_dir, device, log = cell / name, cell / "tokenizer", ctx["device"], ctx["log"]

    overrides = [f"train.images={images}", *(f"data.{o}" for o in budget.data), *budget.train]
    if init_from is not None:
        if not (init_from / "done.json").is_file():
            raise ValueError(f"{run} starts from the generator {init_from}, which is not trained: run its cell first")
        overrides.append(f"init_from={init_from}")

    def train() -> dict:
        cfg = default_run_config(preset, str(tok_dir), str(cell / "latents"), overrides)
        train_generator(cfg, run)
        return {"overrides": overrides}

    temperatures = budget.ar_search_temperatures if name in AR_GENERATORS else ()

    def evaluate() -> dict:
        model = with_sampling_settings(load_generator(run, device), list(sampling))
        cfg = GenerationEvalConfig(
            cfg_scales=budget.search_cfgs,
            num=budget.search_num,
            final_num=budget.final_num,
            batch_size=budget.sample_batch,
            no_cfg_num=budget.no_cfg_num,
            no_cfg_temperatures=budget.no_cfg_temperatures if name in AR_GENERATORS else (),
            temperatures=temperatures,
        )
        record = evaluate_generation(
            model, load_tokenizer(tok_dir, device), ctx["extractor"], ctx["ref"], run / "eval", cfg, progress=False
        )
        return {"sampling": list(sampling), **record}

    spec = {
        "sampling": sampling,
        "cfg_scales": budget.search_cfgs,
        "num": budget.search_num,
        "final_num": budget.final_num,
        "batch": budget.sample_batch,
        "evaluator": ctx["extractor"].name,
        "reference": ctx["ref"].source,
    }
    if budget.no_cfg_num:  # a finished evaluation from before the no-CFG columns keeps its spec (and is reused)
        spec["no_cfg"] = [budget.no_cfg_num, budget.no_cfg_temperatures if name in AR_GENERATORS else ()]
    if temperatures:  # likewise one from before the temperature search
        spec["temperatures"] = temperatures
    train_spec = {"preset": preset, "overrides": overrides}
    shared = share_step(run, twin, {"done.json": train_spec, "eval/done.json": spec}, log)
    trained = _mark(run_step(run / "done.json", train_spec, train, log), shared, twin)
    evaluated = _mark(run_step(run / "eval" / "done.json", spec, evaluate, log), shared, twin)
    if ctx.get("second") is not None:
        marker = run / "eval-2" / "done.json"
        made_there = shared and marker.is_file()  # else rescored now (in the shared folder, if shared)
        rescored = run_step(
            marker,
            {"evaluator": ctx["second"][0].name, "reference": ctx["second"][1].source},
            lambda: _rescore(run / "eval", evaluated, *ctx["second"]),
            log,
        )
        evaluated["second"] = _mark(rescored, made_there, twin)
    return {"train": trained, "eval": evaluated}


def _rescore(eval_dir: Path, evaluated: dict, extractor, ref) -> dict:
    """The final (best-CFG) samples and the no-CFG samples of a generator evaluation, scored again by another
    evaluator: the same images, so a ranking that changes is the evaluator's doing. The CFG scale stays the one the
    first evaluator chose (the search is not redone)."""
    import numpy as np

    from detok.eval.generation import score_images

    out = {}
    for key in ("final", "no_cfg"):
        row = evaluated.get(key)
        if not row or not row.get("samples"):
            continue
        with np.load(eval_dir / row["samples"]) as f:
            images, labels = f["images"], (f["labels"] if "labels" in f.files else None)
        out[key] = {"cfg": row.get("cfg"), **score_images(images, extractor, ref, progress=False, labels=labels)}
    return out


def _sized_context(ctx: dict, preset: str, budget: Budget) -> dict:
    """`ctx` for a cell whose tokenizer preset takes images of another size than the suite's (detok-fmnist64): the
    data as that preset frames them (the budget's data overrides on top), scored by the evaluator(s) on images
    resized to the suite's size (`ResizedExtractor`), against reference sets of the cell's data made the same way."""
    from detok.eval.features import ResizedExtractor, dataset_key, reference_set
    from detok.registry import get_preset
    from detok.training.tokenizer import default_run_config

    size = get_preset(preset).make_config().image_size
    if size == ctx["data"].image_size:
        return ctx
    if size not in ctx.setdefault("sized", {}):
        data = apply_overrides(default_run_config(preset).data, list(budget.data))
        train, key, suite_size = build_dataset(data, "train"), dataset_key(data, "train"), ctx["data"].image_size
        sized = {**ctx, "data": data, "extractor": ResizedExtractor(ctx["extractor"], suite_size)}
        sized["ref"] = reference_set(sized["extractor"], train, key)
        if ctx.get("second") is not None:
            second = ResizedExtractor(ctx["second"][0], suite_size)
            sized["second"] = (second, reference_set(second, train, key))
        ctx["sized"][size] = sized
    return ctx["sized"][size]


def _unfinished(variant: TokenizerVariant, seeds: list[int], budget: Budget, finished: dict) -> set[str] | None:
    """The generators `budget` runs for `variant` that a cell of `seeds` lacks in `finished` (keyed by (variant,
    seed)); a cell not in `finished` lacks them all. None when every cell is finished; an empty set when a cell is
    still to run but the budget runs no generator for it (a tokenizer-only run)."""
    wanted = set(cell_generators(variant, budget))
    left: set[str] = set()
    pending = False
    for seed in seeds:
        cell = finished.get((variant.name, seed))
        missing = wanted if cell is None else {g for g in wanted if g not in cell}
        pending |= cell is None or bool(missing)
        left |= missing
    return left if pending else None


def unfinished_cells(suite: str, budget: Budget, cells: list[dict]) -> list[str]:
    """What `budget` has still to run of `suite` beside the finished `cells` of a results.json: "baseline-seed0" for a
    cell not run, "joint-seed0: mar" for a cell that lacks some of the generators the budget runs (scripts/bench-queue
    uses it to tell a finished table from one to resume)."""
    finished = {(c["variant"], c["seed"]): c for c in cells}
    left = []
    for variant, seeds in suite_cells(suite, budget):
        for seed in seeds:
            cell = finished.get((variant.name, seed))
            if cell is None:
                left.append(f"{variant.name}-seed{seed}")
            elif gens := [g for g in cell_generators(variant, budget) if g not in cell]:
                left.append(f"{variant.name}-seed{seed}: {', '.join(gens)}")
    return left


# Budget fields that choose which cells run, not what a cell computes: a restored table may differ in them.
_SELECTION = ("rows", "max_seeds", "generators")


def _cell_settings(budget: dict | None) -> dict | None:
    """A stored budget without its cell selection, with the fields added since it was stored at their defaults (a
    field added later, at its default, computes what the code computed before it existed)."""
    if budget is None:
        return None
    defaults = as_stored(to_dict(Budget()))
    return {k: v for k, v in {**defaults, **budget}.items() if k not in _SELECTION}


def _overrides_of(variant: TokenizerVariant) -> list[str]:
    """Every tokenizer override a variant names, its stages' and fine-tuning's included."""
    return [*variant.overrides, *variant.finetune_overrides, *(x for _, extra in variant.stages for x in extra)]


def _difference(then: dict | None, now: dict) -> str:
    """The fields in which two budgets' cell settings differ, e.g. "mar_images: 16 then, 24 now"."""
    if then is None:
        return "none recorded then"
    return "; ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in sorted({*then, *now})
                     if then.get(k) != now.get(k))  # fmt: skip


def _read_results_json(path: Path) -> dict:
    """The record in a `results.json` given to --restore; anything else is refused naming the file."""
    if not path.is_file():
        raise ValueError(f"--restore {path}: no such file (give the results.json of an earlier run of this suite)")
    try:
        earlier = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--restore {path} is not a results.json: it is not valid JSON ({e})") from None
    if not isinstance(earlier, dict) or not isinstance(earlier.get("cells", []), list):
        raise ValueError(
            f"--restore {path} is not a results.json: it holds a JSON {type(earlier).__name__}, not the object with "
            "'suite', 'budget' and 'cells' that `detok bench reproduce` writes"
        )
    return earlier


def read_restore(path: str | Path, record: dict) -> dict:
    """The record of an earlier run (`results.json` at `path`) whose finished cells this run keeps, after checking
    that it ran the suite, budget, evaluator and reference set of `record` (the run about to start): a table must
    not mix settings, so any difference is an error rather than a cell silently re-run or reused."""
    path = Path(path)
    earlier = _read_results_json(path)
    for key in ("suite", "budget", "evaluator", "reference", "second_evaluator"):
        if key == "budget":
            then, now = _cell_settings(earlier.get(key)), _cell_settings(as_stored(record[key]))
            if then != now:
                raise ValueError(
                    f"--restore {path} was made with another budget ({_difference(then, now)}); "
                    "its cells cannot join this table"
                )
        elif earlier.get(key) != as_stored(record.get(key)):
            raise ValueError(
                f"--restore {path} was made with {key} {earlier.get(key)!r}, but this run has {record.get(key)!r}; "
                "its cells cannot join this table"
            )
    return earlier


# --------------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------------


def run_suite(
    suite: str,
    budget: Budget,
    work_dir: str | Path,
    out_dir: str | Path,
    evaluator: str = "reference",
    command: str = "",
    log: Callable[[str], None] = print,
    second_evaluator: str | None = None,
    restore: str | Path | None = None,
) -> dict:
    """Run (or resume) every cell of `suite` under `budget`; write the results table after each cell.

    `second_evaluator` replaces the suite's own independent evaluator (SECOND_EVALUATOR), for suites that have one.
    `restore` names the `results.json` of an earlier run of the same suite, budget and evaluators whose work folder
    is gone: its finished cells are taken as they were recorded (`restored_from`), the others are run.

    Returns the results record also written to `out_dir/results.json`.
    """
    from detok.eval.features import build_extractor, dataset_key, reference_set
    from detok.runtime import resolve_device

    cells = suite_cells(suite, budget)
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    if restore is not None:
        _read_results_json(Path(restore))  # a file that is not one is refused before the evaluator is built
    device = resolve_device("auto")
    data = apply_overrides(DataConfig(name="fashion-mnist"), list(budget.data))
    extractor = build_extractor(evaluator, device, data.name)
    ref = reference_set(extractor, build_dataset(data, "train"), dataset_key(data, "train"))
    ctx = {"data": data, "device": device, "extractor": extractor, "ref": ref, "log": log}
    if second_evaluator is not None and suite not in SECOND_EVALUATOR:
        raise ValueError(f"the {suite} suite has no second evaluator; only {', '.join(SECOND_EVALUATOR)} do")
    if suite in SECOND_EVALUATOR:
        second = build_extractor(second_evaluator or SECOND_EVALUATOR[suite], device, data.name)
        ctx["second"] = (second, reference_set(second, build_dataset(data, "train"), dataset_key(data, "train")))
    record = {
        "suite": suite,
        "budget": to_dict(budget),
        "evaluator": extractor.name,
        "reference": ref.source,
        "command": command,
        "environment": environment(),
        "planned_cells": sum(len(seeds) for _, seeds in cells),
        "second_evaluator": ctx["second"][0].name if "second" in ctx else None,
        "cells": [],
    }
    earlier = {} if restore is None else read_restore(restore, record)
    restored = {(c["variant"], c["seed"]): c for c in earlier.get("cells", [])}
    # what is left to run: (variant, the generators of it some seed still lacks) for every variant with such a seed
    to_run = [(v, gens) for v, seeds in cells if (gens := _unfinished(v, seeds, budget, restored)) is not None]
    # finished cells of the earlier run outside this budget's rows/seeds (same cell settings): kept, listed first
    selected = {(v.name, s) for v, seeds in cells for s in seeds}
    extra = [c for key, c in restored.items() if key not in selected]
    record["planned_cells"] += len(extra)
    named = [o for v, _ in to_run for o in _overrides_of(v)]
    for key in ("teacher", "text"):  # made once per work folder: kept from the earlier run unless a cell needs it
        if key in earlier:
            record[key] = {**earlier[key], "restored_from": str(restore)}
    if any("{teacher" in o for o in named):
        record["teacher"] = _teacher_step(budget, work_dir, ctx)
    if any(g in T2I_GENERATORS for _, gens in to_run for g in gens):
        from detok.bench.t2i import text_steps

        record["text"] = text_steps(budget, work_dir, ctx)
    # The models the suite trains once per work folder, by the digest of their weights: a cell restored from a lost
    # work folder used the earlier folder's, retrained here with the same settings and seed but not bitwise the same
    # on another machine; the table says so when a suite's cells differ in them.
    shared_models = {
        key: hashlib.sha256((ctx[key] / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
        for key in ("teacher", "text_encoder")
        if key in ctx
    }
    # Every table written from here on holds every restored cell (a session that ends mid-run must not leave a
    # results.json without them): those outside the selection first, the rest in the suite's order with the new ones.
    for cell in extra:
        log(f"↺ {cell['variant']}-seed{cell['seed']} restored from {restore} (outside this budget's rows/seeds)")
    # the paper's numbers are the suite's reference, not a measurement: a restored cell shows the suite's current ones
    paper = {v.name: v.paper for v, _ in cells}
    done = {
        key: {"restored_from": str(restore), **cell, "paper": paper[key[0]]}
        for key, cell in restored.items()
        if key in selected
    }
    for variant, seed in done:  # a cell restored once already keeps naming the file it first came from (**cell)
        log(f"↺ {variant}-seed{seed} restored from {restore}")
    order = [(v.name, s) for v, seeds in cells for s in seeds]
    root = repository_of(out_dir)

    def write() -> None:
        record["cells"] = [{"restored_from": str(restore), **c} for c in extra] + [done[k] for k in order if k in done]
        write_results(record, out_dir)
        update_findings(record, out_dir)  # its block in docs/results/README.md, when out_dir sits beside that index

    if restored:
        write()
    for variant, seeds in cells:
        wanted = cell_generators(variant, budget)
        for seed in seeds:
            earlier_cell = done.get((variant.name, seed))
            missing = [g for g in wanted if earlier_cell is None or g not in earlier_cell]
            if earlier_cell is not None and not missing:
                continue
            cell = work_dir / f"{variant.name}-seed{seed}"
            preset = budget.tokenizer_for(variant)
            tokenizer = _tokenizer_steps(variant, seed, budget, cell, _sized_context(ctx, preset, budget))
            if earlier_cell is None:
                result = {"variant": variant.name, "seed": seed, "run_dir": str(cell), "paper": variant.paper}
                shown = preset if budget.tokenizer_dir(variant, seed) is None else "imported"  # trained elsewhere
                result.update(preset=shown, generators=list(variant.generators), tokenizer=tokenizer)
            else:  # a cell finished in part: the rest runs on its tokenizer (retrained if the work folder is gone)
                result = {**earlier_cell, "tokenizer": dict(earlier_cell["tokenizer"])}
                log(f"↻ {variant.name}-seed{seed}: adding {', '.join(missing)}")
            uses = {"teacher": any("{teacher" in o for o in _overrides_of(variant)),
                    "text_encoder": any(g in T2I_GENERATORS for g in missing)}  # fmt: skip
            used = {k: v for k, v in shared_models.items() if uses[k]}
            if earlier_cell is None:
                result["shared_models"] = used
            elif repo_relative(as_stored(tokenizer["train"]), root) not in [
                repo_relative(as_stored(t["train"]), root)  # results.json names paths relative to the checkout
                for t in (earlier_cell["tokenizer"], *earlier_cell["tokenizer"].get("retrained", []))
            ]:
                # trained again (the work folder was gone): its record says what it and the generators added now
                # were made with, and its digest whether its weights are the first training's
                result["tokenizer"]["retrained"] = [*earlier_cell["tokenizer"].get("retrained", []),
                                                    {**tokenizer, "for": missing, "shared_models": used}]  # fmt: skip
            shared_from = tokenizer.get("shared_from")
            twin = None if shared_from is None else work_dir / shared_from
            cell_ctx = _sized_context(ctx, preset, budget)
            for name in missing:
                base = dict(variant.generator_init).get(name)
                init = None if base is None else work_dir / f"{variant.finetune_from}-seed{seed}" / base
                result[name] = _generator_steps(name, budget, cell, cell_ctx, init, twin)
            done[variant.name, seed] = result
            write()
    return record


__all__ = [
    "BUDGETS",
    "SUITES",
    "Budget",
    "TokenizerVariant",
    "parse_budget",
    "read_restore",
    "run_suite",
    "unfinished_cells",
]
