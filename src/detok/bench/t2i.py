"""The `t2i` suite's own steps (`detok bench reproduce --suite t2i`, l-DeTok Sec. 5.4 / App. C at FMNIST scale): the
caption set and the offline text encoder, made once per --work, and the training and scoring of a text-conditioned
generator in a cell. Recorded and resumed through `steps.run_step`, like every other step."""

from __future__ import annotations

import json
from pathlib import Path

from detok.bench.steps import run_step
from detok.bench.suites import Budget
from detok.checkpoint import load_generator, load_tokenizer
from detok.config import apply_overrides, to_dict
from detok.data import build_dataset


def text_steps(budget: Budget, work_dir: Path, ctx: dict) -> dict:
    """The t2i suite's caption set (attribute captions of the suite's data, `work_dir/captions`) and its offline text
    encoder (`work_dir/text-encoder`, label-free, with its retrieval probe), each made once per --work; and the test
    images' reference set that T2I FIDs are computed against."""
    from detok.eval.features import dataset_key, reference_set
    from detok.text.captions import describe, make_attribute_captions
    from detok.training.text_encoder import PROBE_FILE, default_run_config, train_text_encoder

    captions, encoder, data = work_dir / "captions", work_dir / "text-encoder", ctx["data"]

    def make() -> dict:
        made = make_attribute_captions(data)
        made.save(captions)
        return describe(made)

    done = {"captions": run_step(captions / "done.json", {"data": to_dict(data)}, make, ctx["log"])}
    overrides = [f"train.images={budget.text_encoder_images}", *budget.train]

    def train() -> dict:
        train_text_encoder(apply_overrides(default_run_config(budget.text_encoder, captions), overrides), encoder)
        return {"overrides": overrides, "probe": json.loads((encoder / PROBE_FILE).read_text())}

    spec = {"preset": budget.text_encoder, "overrides": overrides}
    done["text_encoder"] = run_step(encoder / "done.json", spec, train, ctx["log"])
    ctx["captions"], ctx["text_encoder"] = captions, encoder
    ctx["ref_test"] = reference_set(ctx["extractor"], build_dataset(data, "test"), dataset_key(data, "test"))
    return done


def t2i_generator_steps(name: str, budget: Budget, cell: Path, ctx: dict) -> dict:
    """Train text-conditioned generator `name` on the cell's latents and the suite's captions; score its samples of the
    test captions (FID against the test images, text alignment on seen and held-out combinations: eval/t2i.py)."""
    from detok.eval.t2i import T2IEvalConfig, evaluate_t2i
    from detok.generate import with_sampling_settings
    from detok.text.captions import CaptionSet
    from detok.text.encoders import caption_embeddings, load_text_encoder
    from detok.training.generator import default_run_config, train_generator

    preset, images = getattr(budget, name), getattr(budget, f"{name}_images")
    sampling = getattr(budget, f"{name}_sampling")
    run, tok_dir, device, log = cell / name, cell / "tokenizer", ctx["device"], ctx["log"]
    overrides = [f"train.images={images}", *(f"data.{o}" for o in budget.data), *budget.train]
    text = {"captions": str(ctx["captions"]), "text_encoder": str(ctx["text_encoder"])}

    def train() -> dict:
        train_generator(default_run_config(preset, str(tok_dir), str(cell / "latents"), overrides, **text), run)
        return {"overrides": overrides}

    trained = run_step(run / "done.json", {"preset": preset, "overrides": overrides, **text}, train, log)

    def evaluate() -> dict:
        model = with_sampling_settings(load_generator(run, device), list(sampling))
        captions = CaptionSet.load(ctx["captions"])
        tokens = caption_embeddings(captions, ctx["captions"], load_text_encoder(ctx["text_encoder"], device))
        cfg = T2IEvalConfig(budget.search_cfgs, budget.t2i_search_num, budget.t2i_final_num,
                            batch_size=budget.sample_batch)  # fmt: skip
        tok = load_tokenizer(tok_dir, device)
        record = evaluate_t2i(model, tok, captions, tokens, ctx["extractor"], ctx["ref_test"], run / "eval", cfg,
                              progress=False)  # fmt: skip
        return {"sampling": list(sampling), **record}

    spec = {"sampling": sampling, "cfg_scales": budget.search_cfgs, "num": budget.t2i_search_num,
            "final_num": budget.t2i_final_num, "batch": budget.sample_batch, "evaluator": ctx["extractor"].name,
            "reference": ctx["ref_test"].source}  # fmt: skip
    return {"train": trained, "eval": run_step(run / "eval" / "done.json", spec, evaluate, log)}
