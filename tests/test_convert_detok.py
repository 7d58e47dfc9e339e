"""The official l-DeTok (Jiawei-Yang/DeTok) converts into detok and computes what the upstream code computes.

The fixture was written by benchmarks/upstream/make_fixtures.py from the upstream checkout itself (its commit is in
meta.json): a tiny DeTok with seeded, perturbed weights, fixed inputs, and the upstream's outputs. Tolerance: 1e-5
relative to the largest output value, fp32.
"""

import dataclasses
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detok.checkpoint import CheckpointError, load_tokenizer, read_model_config
from detok.convert import convert_checkpoint, export_checkpoint
from detok.convert import detok_official as official
from detok.convert.safe_load import load_checkpoint, load_raw_pickle
from detok.tokenizers.detok import ARCH_FIELDS, ARCHITECTURES, DeTok

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "detok_tokenizer"
HEADS = ["model.enc_heads=2", "model.dec_heads=4"]  # tiny widths are not upstream sizes: heads given, as a user would
HEADS_ARGS = [x for h in HEADS for x in ("--set", h)]
RTOL = 1e-5


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "detok-tiny"
    convert_checkpoint(FIXTURE / "checkpoint.pth", out, stats=FIXTURE / "stats.pkl", overrides=HEADS)
    return out


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err <= RTOL, f"{what}: max error {err:.2e} of the largest value"


def outputs(model: DeTok, io: dict, tag: str) -> dict:
    """detok's counterparts of the fixture's upstream outputs."""
    x, z, c = io["x"], io["z"], model.config.latent_channels
    with torch.no_grad():
        moments = model.forward_encoder(x)  # (N, T, 2C)
        mean, _ = model.split_moments(moments)
        out = {
            f"{tag}.moments": moments,
            f"{tag}.encode_mean": mean,
            f"{tag}.decode": model.forward_decoder(z),
            f"{tag}.forward": model(x, corrupt=False, sample_posterior=False)["recon"],
        }
        if tag == "ema":
            ids_keep = io["ema.masked_ids_restore"].argsort(dim=1)[:, : io["ema.masked_moments"].shape[1]]
            visible = model.forward_encoder(x, ids_keep)  # upstream's keep order, replayed
            out["ema.masked_moments"] = visible
            out["ema.masked_decode"] = model.forward_decoder(visible[..., :c], ids_keep)
            tokens = model.encode(x, normalize=True)
            out["ema.tokenize"] = tokens
            out["ema.detokenize"] = (model.decode(tokens, normalized=True) * 0.5 + 0.5).clamp(0, 1)
    return out


def test_fixture_comes_from_the_upstream_code():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    assert meta["upstream"] == "Jiawei-Yang/DeTok" and meta["commit"] == official.VERIFIED_COMMIT and not meta["dirty"]


def test_converted_ema_tokenizer_matches_upstream(converted, io):
    model = load_tokenizer(converted)
    assert model.config.architecture == "official"
    for name, value in outputs(model, io, "ema").items():
        assert_close(value, io[name], name)


def test_raw_weights_on_request(tmp_path, io):
    out = convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "raw", ema=False, overrides=HEADS)
    model = load_tokenizer(out)
    for name, value in outputs(model, io, "raw").items():
        assert_close(value, io[name], name)
    assert (model.forward_decoder(io["z"]) - io["ema.decode"]).abs().max() > 1e-3  # the EMA weights differ
    assert read_model_config(out)[2]["converted_from"]["weights"] == "model"


@pytest.mark.parametrize("field", [f for f in ARCH_FIELDS if f != "init"])
def test_each_architecture_difference_is_seen(converted, io, field):
    """detok's round-2 value of any one architecture field breaks the match (or the weights no longer fit)."""
    model = load_tokenizer(converted)
    variant = DeTok(dataclasses.replace(model.config, **{field: ARCHITECTURES["r2"][field]})).eval()
    try:
        variant.load_state_dict(model.state_dict())
    except RuntimeError:
        return  # ln_pre / conv_out / SwiGLU width: the official weights do not fit the variant at all
    with torch.no_grad():
        got = variant.forward_encoder(io["x"]), variant.forward_decoder(io["z"])
    errs = [(a - io[f"ema.{n}"]).abs().max() / io[f"ema.{n}"].abs().max() for a, n in zip(got, ("moments", "decode"))]
    assert max(errs) > 100 * RTOL


def test_stats_come_from_the_cache(converted):
    cache = load_raw_pickle(FIXTURE / "stats.pkl")
    mean, std = cache["tiny-tokenizer"]["channel"]
    cfg = load_tokenizer(converted).config
    assert cfg.latent_mean == pytest.approx(mean[:4].tolist()) and cfg.latent_std == pytest.approx(std[:4].tolist())


def test_import_export_import_is_bit_exact(converted, tmp_path):
    written = export_checkpoint(converted, tmp_path / "exported.pth", stats_key="tiny-tokenizer")
    original = load_checkpoint(FIXTURE / "checkpoint.pth")["model_ema"]
    exported = load_checkpoint(written[0])
    assert sorted(exported["model_ema"]) == sorted(original)  # upstream's names, no more, no fewer
    for key, tensor in original.items():
        assert torch.equal(exported["model_ema"][key], tensor), key
    again = convert_checkpoint(written[0], tmp_path / "again", stats=written[1], overrides=HEADS)
    first, second = load_tokenizer(converted), load_tokenizer(again)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k
    assert first.config == second.config


def test_only_the_official_architecture_exports(tmp_path):
    from detok import create_model
    from detok.checkpoint import save_model_folder

    save_model_folder(tmp_path / "r2", create_model("detok-bb-r2-tiny"))
    with pytest.raises(ValueError, match="'r2'"):
        export_checkpoint(tmp_path / "r2", tmp_path / "x.pth")


class _Marker:
    """A pickled object that, if ever unpickled, creates a file: the test that loading runs no code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    state = load_checkpoint(FIXTURE / "checkpoint.pth")
    torch.save({**state, "args": _Marker(marker)}, tmp_path / "evil.pth")
    (tmp_path / "stats.pkl").write_bytes(pickle.dumps({"k": {"channel": _Marker(marker)}}))
    with pytest.raises(CheckpointError, match="evil.pth was refused"):
        convert_checkpoint(tmp_path / "evil.pth", tmp_path / "out", overrides=HEADS)
    with pytest.raises(CheckpointError, match="refused global"):
        convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "out2", stats=tmp_path / "stats.pkl", overrides=HEADS)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_namespace_in_a_checkpoint_is_plain_data(tmp_path):
    import argparse

    state = load_checkpoint(FIXTURE / "checkpoint.pth")
    torch.save({**state, "args": argparse.Namespace(lr=1e-4, model="detok_BB")}, tmp_path / "with-args.pth")
    assert load_checkpoint(tmp_path / "with-args.pth")["args"].model == "detok_BB"


def test_wrong_kind_is_named(tmp_path):
    mar_like = {"diffloss.net.input_proj.weight": torch.zeros(2, 2), "encoder_blocks.0.norm1.weight": torch.zeros(2)}
    torch.save({"model_ema": mar_like}, tmp_path / "mar.pth")
    with pytest.raises(CheckpointError, match="holds a MAR generator, not detok-tokenizer"):
        convert_checkpoint(tmp_path / "mar.pth", tmp_path / "out", fmt="detok-tokenizer")
    dit_like = {"x_embedder.proj.weight": torch.zeros(2, 2), "t_embedder.mlp.0.weight": torch.zeros(2, 2)}
    torch.save(dit_like, tmp_path / "dit.pt")  # a bare state dict, as DiT's release
    with pytest.raises(CheckpointError, match="holds a LightningDiT / DiT / SiT generator; detok converts"):
        convert_checkpoint(tmp_path / "dit.pt", tmp_path / "out")


def test_missing_ema_names_the_flag(tmp_path):
    state = load_checkpoint(FIXTURE / "checkpoint.pth")
    torch.save({"model": state["model"], "epoch": 3}, tmp_path / "raw-only.pth")
    with pytest.raises(CheckpointError, match="no EMA weights.*convert with --raw"):
        convert_checkpoint(tmp_path / "raw-only.pth", tmp_path / "out", overrides=HEADS)


def test_no_weight_is_silently_dropped(tmp_path):
    state = load_checkpoint(FIXTURE / "checkpoint.pth")["model_ema"]
    torch.save({"model_ema": {**state, "decoder.extra_head.weight": torch.zeros(3)}}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="1 weight.*does not know: decoder.extra_head.weight"):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out", overrides=HEADS)


def test_heads_of_paper_widths_need_no_flag():
    from detok.convert.keymap import heads_for

    table = official.HEADS_BY_WIDTH
    assert heads_for(768, "enc", {}, table, "") == 12 and heads_for(1024, "dec", {}, table, "") == 16
    with pytest.raises(CheckpointError, match="--set model.dec_heads"):
        heads_for(96, "dec", {}, table, "")


def test_corruption_read_from_the_released_name():
    c = official.corruption_from_name("detok-BB-gamm3.0-m0.7-decoder_tuned.pth")
    assert (c.noise_gamma, c.mask_max) == (3.0, 0.7)
    c = official.corruption_from_name("detok-BB-gamma0.0-m0.0.pth")
    assert (c.noise_gamma, c.mask_max) == (0.0, 0.0)


def test_a_config_saved_before_the_architecture_fields_is_round_2(tmp_path):
    """config.json files written before this option existed describe detok's round-2 architecture."""
    from detok import create_model
    from detok.checkpoint import save_model_folder

    save_model_folder(tmp_path / "old", create_model("detok-fmnist32-tiny"))
    raw = json.loads((tmp_path / "old" / "config.json").read_text())
    for field in ARCH_FIELDS:
        raw["model"].pop(field)
    (tmp_path / "old" / "config.json").write_text(json.dumps(raw))
    assert load_tokenizer(tmp_path / "old").config.architecture == "r2"


def test_cli_converts_and_exports(tmp_path, capsys):
    from detok.cli import main

    folder, exported = tmp_path / "tok", tmp_path / "up" / "detok.pth"
    args = ["convert", str(FIXTURE / "checkpoint.pth"), "--out", str(folder), "--stats", str(FIXTURE / "stats.pkl")]
    assert main([*args, *(x for h in HEADS for x in ("--set", h))]) == 0
    assert "architecture official; latent statistics from stats.pkl['tiny-tokenizer']" in capsys.readouterr().out
    assert main(["convert", str(folder), "--out", str(exported), "--stats-key", "k"]) == 0
    assert sorted(p.name for p in exported.parent.iterdir()) == ["detok.pth", "stats.pkl"]
    assert load_raw_pickle(exported.parent / "stats.pkl")["k"]["channel"][0][:4].tolist() == pytest.approx(
        load_tokenizer(folder).config.latent_mean
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "number of attention heads is not stored in the weights: give it with --set model.enc_heads=N"),
        (["--stats-key", "x", *HEADS_ARGS], "--stats-key names an entry of --stats"),
        (
            ["--set", "model.enc_width=8"],
            "--set model.enc_width=8: a detok-tokenizer conversion takes only model.enc_heads",
        ),
    ],
)
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    from detok.cli import main

    assert main(["convert", str(FIXTURE / "checkpoint.pth"), "--out", str(tmp_path / "tok"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("detok: error:") and message in " ".join(err.split())
    assert not (tmp_path / "tok").exists()


def test_cli_never_overwrites(tmp_path, capsys):
    from detok.cli import main

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "config.json").write_text("{}")
    assert main(["convert", str(FIXTURE / "checkpoint.pth"), "--out", str(tmp_path / "tok"), *HEADS_ARGS]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "tok" / "config.json").read_text() == "{}"
