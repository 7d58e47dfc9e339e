"""The official MAR (Jiawei-Yang/DeTok `models/mar.py` + `models/diffloss.py`) converts into detok's `MAR` and
computes what the upstream code computes.

The fixture was written by benchmarks/upstream/make_fixtures.py from the upstream checkout itself (its commit is in
meta.json): a tiny MAR with seeded, perturbed weights, fixed latents, mask and labels, and the upstream's outputs —
MAE encoder and decoder (class and null branch, and every token masked), the DiffLoss network at fixed (x, t, z), its
respaced sampling chain (plain and guided), a seeded DiffLoss sample and a seeded training loss. Tolerance: 1e-5
relative to the largest output value, fp32.
"""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from detok.checkpoint import CheckpointError, load_generator, read_model_config
from detok.convert import convert_checkpoint, export_checkpoint
from detok.convert import mar_official as official
from detok.convert.keymap import Join, join_tensors, split_tensors
from detok.convert.safe_load import load_checkpoint
from detok.generators.mar import MAR
from detok.layers import latents_to_tokens
from detok.objectives.guidance import guide

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
FIXTURE = FIXTURES / "detok_mar"
HEADS = ["model.enc_heads=4", "model.dec_heads=4"]  # tiny widths are not upstream sizes: heads given, as a user would
RTOL = 1e-5


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def meta():
    return json.loads((FIXTURE / "meta.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "mar-tiny"
    convert_checkpoint(FIXTURE / "checkpoint.pth", out, overrides=HEADS)
    return out


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return float((actual - expected).abs().max() / expected.abs().max())


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    err = rel_err(actual, expected)
    assert err <= RTOL, f"{what}: max error {err:.2e} of the largest value"


def network_outputs(model: MAR, io: dict, tag: str) -> dict:
    """detok's counterparts of the fixture's upstream encoder, decoder and DiffLoss-network outputs."""
    x, mask, labels = latents_to_tokens(io["latents"], 1), io["mask"], io["labels"]
    with torch.no_grad():
        h = model.forward_encoder(x, mask, model.condition_buffer(labels))  # (N, B+T_keep, D)
        out = {
            f"{tag}.encoder": h,
            f"{tag}.decoder": model.forward_decoder(h, mask),
            f"{tag}.diffloss_net": model.diffloss.net(io["x"], io["steps"].float(), io["cond"]),
        }
        if tag == "ema":
            null = torch.full_like(labels, model.config.num_classes)  # the null class: upstream's fake_latent
            h = model.forward_encoder(x, mask, model.condition_buffer(null))
            out["ema.null_encoder"] = h
            out["ema.null_decoder"] = model.forward_decoder(h, mask)
            full = torch.ones_like(mask)
            h = model.forward_encoder(x, full, model.condition_buffer(labels))
            out["ema.full_mask_decoder"] = model.forward_decoder(h, full)
    return out


def test_fixture_comes_from_the_upstream_code(meta):
    assert meta["upstream"] == "Jiawei-Yang/DeTok" and meta["commit"] == official.VERIFIED_COMMIT and not meta["dirty"]


def test_converted_config_is_read_off_the_weights_with_upstreams_settings(converted, meta):
    cfg = load_generator(converted).config
    args = meta["args"]
    size = meta["sizes"][args["model_size"]]
    side = args["img_size"] // args["tokenizer_patch_size"]
    assert (cfg.enc_width, cfg.enc_depth, cfg.dec_width, cfg.dec_depth) == (size["width"], size["layers"]) * 2
    assert (cfg.latent_channels, cfg.input_size, cfg.patch_size) == (args["token_channels"], (side, side), 1)
    assert (cfg.num_classes, cfg.buffer_size, cfg.mlp_ratio) == (args["num_classes"], args["buffer_size"], 4.0)
    assert (cfg.diffloss.depth, cfg.diffloss.width) == (args["diffloss_d"], args["diffloss_w"])
    assert cfg.diffloss.batch_mul == meta["diffusion_batch_mul"] and cfg.diffloss.schedule == "cosine"
    # the README's evaluation: 256 AR steps, 100 DiffLoss steps, linear CFG; trained with --no_dropout_in_mlp
    assert (cfg.num_iter, cfg.diffloss.sample_steps, cfg.cfg_schedule) == (256, 100, "linear")
    assert (cfg.dropout, cfg.mlp_dropout) == (0.1, 0.0)
    recorded = read_model_config(converted)[2]["converted_from"]
    assert recorded["format"] == "detok-mar" and recorded["weights"] == "model_ema"


def test_converted_ema_mar_matches_upstream(converted, io):
    model = load_generator(converted)
    for name, value in network_outputs(model, io, "ema").items():
        assert_close(value, io[name], name)


def test_raw_weights_on_request(tmp_path, io):
    out = convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "raw", ema=False, overrides=HEADS)
    model = load_generator(out)
    got = network_outputs(model, io, "raw")
    for name, value in got.items():
        assert_close(value, io[name], name)
    assert rel_err(got["raw.decoder"], io["ema.decoder"]) > 100 * RTOL  # the EMA weights differ
    assert read_model_config(out)[2]["converted_from"]["weights"] == "model"


def test_sampling_chain_is_upstreams(converted, io, meta):
    """p(x_{t−1} | x_t) on the respaced cosine chain, unguided and guided (ε guided, variance of the class half)."""
    head = load_generator(converted).diffloss
    chain = head.diffusion.respaced(int(meta["args"]["num_sampling_steps"]))
    x, cond, c = io["x"], io["cond"], io["x"].shape[1]
    with torch.no_grad():
        for i in meta["respaced_steps"]:
            t = torch.full((x.shape[0],), float(chain.timesteps[i]))
            out = head.net(x, t, cond)
            mean, logvar, x0 = head.diffusion._p_mean_variance(chain, i, x, out)
            assert_close(mean, io[f"ema.step{i}.mean"], f"step {i} mean")
            assert_close(logvar, io[f"ema.step{i}.log_variance"], f"step {i} log-variance")
            assert_close(x0, io[f"ema.step{i}.pred_xstart"], f"step {i} x0")
            guided = guide(out, head.net(x, t, cond.flip(0)), meta["cfg"], channels=c)
            mean, logvar, _ = head.diffusion._p_mean_variance(chain, i, x, guided)
            assert_close(mean, io[f"ema.step{i}.cfg.mean"], f"step {i} guided mean")
            assert_close(logvar, io[f"ema.step{i}.cfg.log_variance"], f"step {i} guided log-variance")


def test_diffloss_sample_matches_upstream_under_the_same_seed(converted, io):
    """Upstream draws the start noise and then one draw per step from the global RNG, as detok from its generator."""
    head = load_generator(converted).diffloss
    got = head.sample(io["cond"], temperature=0.95, generator=torch.Generator().manual_seed(5))
    assert_close(got, io["ema.sample_t0.95"], "DiffLoss sample at temperature 0.95")


def test_diffloss_training_loss_matches_upstream_under_the_same_seed(converted, io):
    head = load_generator(converted).diffloss
    torch.manual_seed(6)  # timesteps, then noise, over the batch_mul-repeated rows, as upstream's MAR.forward_loss
    with torch.no_grad():
        loss = head(io["target"], io["cond"])
    assert_close(loss.reshape(1), io["ema.diffloss_loss"], "DiffLoss training loss")


def test_converted_folder_samples(converted):
    from detok.generate import with_sampling_settings

    model = with_sampling_settings(load_generator(converted), ["num_iter=4", "diffloss.sample_steps=5"])
    z = model.sample(torch.tensor([1, 2]), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 4, 4) and torch.isfinite(z).all()


def test_import_export_import_is_bit_exact(converted, tmp_path):
    written = export_checkpoint(converted, tmp_path / "exported.pth")
    original = load_checkpoint(FIXTURE / "checkpoint.pth")["model_ema"]
    exported = load_checkpoint(written[0])
    assert sorted(exported["model_ema"]) == sorted(original)  # upstream's names, no more, no fewer
    for key, tensor in original.items():
        assert torch.equal(exported["model_ema"][key], tensor), key
    again = convert_checkpoint(written[0], tmp_path / "again", overrides=HEADS)
    first, second = load_generator(converted), load_generator(again)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k
    assert first.config == second.config


def test_the_null_class_is_the_tables_last_row(converted, io):
    """The one layout difference: upstream's separate `fake_latent` is detok's null class, the table's last row.
    Put first instead (the table shifted by one), both the class and the null branch stop matching."""
    model = load_generator(converted)
    shifted = MAR(model.config).eval()
    state = model.state_dict()
    state["class_emb.table.weight"] = state["class_emb.table.weight"].roll(1, dims=0)
    shifted.load_state_dict(state)
    got = network_outputs(shifted, io, "ema")
    for name in ("ema.encoder", "ema.null_encoder", "ema.decoder", "ema.null_decoder"):
        assert rel_err(got[name], io[name]) > 100 * RTOL, name


def test_the_last_step_guidance_is_upstreams(converted):
    """The converted folder keeps upstream's linear CFG count (1 + (s − 1)(L − 1)/L on the last step): detok's
    former 'linear-full' reaches s and is not upstream's (tests/test_upstream_sampling.py checks the schedule)."""
    assert load_generator(converted).config.cfg_schedule == "linear"


def test_upstream_sampling_settings_by_size():
    base, large = (SimpleNamespace(config=SimpleNamespace(enc_width=w)) for w in (768, 1024))
    assert official.upstream_sampling(base) == {"cfg": 3.9, "temperature": 1.0, "temperature_without_cfg": 0.95}
    assert official.upstream_sampling(large)["cfg"] == 3.4
    assert official.upstream_sampling(SimpleNamespace(config=SimpleNamespace(enc_width=32))) == {}


def test_wrong_kind_is_named(tmp_path):
    tokenizer = FIXTURES / "detok_tokenizer" / "checkpoint.pth"
    with pytest.raises(CheckpointError, match="holds a DeTok \\(l-DeTok\\) tokenizer, not detok-mar"):
        convert_checkpoint(tokenizer, tmp_path / "out", fmt="detok-mar")
    with pytest.raises(CheckpointError, match="holds a MAR generator, not detok-tokenizer"):
        convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "out", fmt="detok-tokenizer")
    assert not (tmp_path / "out").exists()


def test_a_mar_is_recognised_without_a_format(tmp_path):
    out = convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "auto", overrides=HEADS)
    assert read_model_config(out)[2]["converted_from"]["format"] == "detok-mar"


def test_stats_belong_to_the_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match="keeps no latent statistics"):
        convert_checkpoint(
            FIXTURE / "checkpoint.pth",
            tmp_path / "out",
            stats=FIXTURES / "detok_tokenizer" / "stats.pkl",
            overrides=HEADS,
        )


def test_heads_of_paper_widths_need_no_flag(tmp_path):
    from detok.convert.keymap import heads_for

    table = official.HEADS_BY_WIDTH
    assert heads_for(768, "enc", {}, table, "") == 12 and heads_for(1024, "dec", {}, table, "") == 16
    with pytest.raises(CheckpointError, match="--set model.enc_heads"):
        convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "out")


def test_no_weight_is_silently_dropped(tmp_path):
    state = load_checkpoint(FIXTURE / "checkpoint.pth")["model_ema"]
    torch.save({"model_ema": {**state, "diffloss.net.extra.weight": torch.zeros(3)}}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="1 weight.*does not know: diffloss.net.extra.weight"):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out", overrides=HEADS)


def test_a_flow_matching_head_is_refused(tmp_path):
    """DeTok's DiffLoss can also be a flow-matching head (use_transport, C outputs): not what detok's head is."""
    state = load_checkpoint(FIXTURE / "checkpoint.pth")["model_ema"]
    c = state["z_proj.weight"].shape[1]
    for key in ("diffloss.net.final_layer.linear.weight", "diffloss.net.final_layer.linear.bias"):
        state[key] = state[key][:c]
    torch.save({"model_ema": state}, tmp_path / "flow.pth")
    with pytest.raises(CheckpointError, match="use_transport"):
        convert_checkpoint(tmp_path / "flow.pth", tmp_path / "out", overrides=HEADS)


def test_only_the_class_conditional_mar_exports(tmp_path):
    from detok import create_model
    from detok.checkpoint import save_model_folder

    save_model_folder(tmp_path / "t2i", create_model("t2i-mar-b-tiny"))
    with pytest.raises(ValueError, match="only the class-conditional MAR"):
        export_checkpoint(tmp_path / "t2i", tmp_path / "x.pth")
    patched = create_model("mar-b-tiny")
    patched = MAR(dataclasses.replace(patched.config, input_size=(4, 4), patch_size=2))
    save_model_folder(tmp_path / "p2", patched)
    with pytest.raises(ValueError, match="only p = 1"):
        export_checkpoint(tmp_path / "p2", tmp_path / "y.pth")


def test_join_round_trip_and_half_joins():
    joins = [Join(parts=("a", "b"), rows=(None, 1))]
    state = {"x": torch.zeros(1), "a": torch.randn(3, 2), "y": torch.ones(1), "b": torch.randn(1, 2)}
    joined = join_tensors(state, joins, "t")
    assert list(joined) == ["x", "a+b", "y"] and joined["a+b"].shape == (4, 2)
    back = split_tensors(joined, joins)
    assert list(back) == ["x", "a", "b", "y"] and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(CheckpointError, match="a without b"):
        join_tensors({"a": state["a"]}, joins, "t")
    with pytest.raises(CheckpointError, match="b has 2 rows, expected 1"):
        join_tensors({"a": state["a"], "b": torch.zeros(2, 2)}, joins, "t")
