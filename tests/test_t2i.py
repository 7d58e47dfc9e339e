"""Text-to-image (l-DeTok Sec. 5.4, App. C): what the T2I generators change, caption sets made from measured
attributes, the text-encoder interface (a local Hugging Face model; detok's offline encoder), the offline encoder's
training and caching, and the alignment score. The generator contract itself (shapes, gradients, CFG, overfit) runs on
the T2I twins in test_generator_contract.py; the suite and the CLI in test_bench_reproduce.py."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from detok import create_model
from detok.cli import main as cli_main
from detok.eval.t2i import text_alignment
from detok.registry import list_models, preset_config
from detok.text.captions import ATTRIBUTES, CaptionRecipe, CaptionSet, fit_recipe, make_attribute_captions, measure
from detok.text.encoders import caption_embeddings, load_text_encoder, read_captions_file


@torch.no_grad()
def _perturbed(name: str, **overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    for p in model.parameters():  # move zero-initialised (adaLN-Zero) layers off zero
        p.add_(torch.randn_like(p) * 0.05)
    return model


# --------------------------------------------------------------------------------------------------
# Generators (App. C)
# --------------------------------------------------------------------------------------------------


def test_paper_presets_are_sit_b_and_mar_b_over_clip_l_text():
    sit, mar = preset_config("t2i-sit-b"), preset_config("t2i-mar-b")
    assert (sit.width, sit.depth, sit.heads, sit.qk_norm) == (768, 12, 12, True)
    assert (sit.flow.sampler, sit.flow.sample_steps) == ("sde", 250)
    assert (mar.enc_width, mar.enc_depth, mar.dec_depth, mar.mlp_dropout) == (768, 12, 12, 0.0)
    assert (mar.diffloss.depth, mar.diffloss.width) == (3, 1024)
    for cfg in (sit, mar):
        assert (cfg.text_dim, cfg.text_len, cfg.latent_channels, cfg.input_size) == (768, 77, 16, (16, 16))
    assert mar.buffer_size == 77  # the buffer holds CLIP-L's 77 tokens where MAR's held 64 class embeddings
    names = list_models("t2i-*", kind="generator")
    for base in ("t2i-sit-b", "t2i-mar-b", "t2i-sit-fmnist32", "t2i-mar-fmnist32"):
        assert base in names and f"{base}-tiny" in names


def test_t2i_sit_is_modulated_by_the_timestep_alone_and_predicts_from_image_tokens():
    model = _perturbed("t2i-sit-fmnist32-tiny")
    cfg, net = model.config, model.net
    modulation, final = [], []
    net.blocks[0].adaLN_modulation.register_forward_hook(lambda m, i, o: modulation.append(i[0]))
    net.final_layer.register_forward_hook(lambda m, i, o: final.append(i[0].shape))
    x, t = torch.randn(2, cfg.latent_channels, *cfg.input_size), torch.tensor([0.3, 0.7]) * 1000
    a = net(x, t, torch.randn(2, cfg.text_len, cfg.text_dim))
    b = net(x, t, torch.randn(2, cfg.text_len, cfg.text_dim))
    assert torch.equal(modulation[0], modulation[1])  # the captions differ, the adaLN input does not
    assert not torch.allclose(a, b)  # the text reaches the prediction through attention
    tokens = (cfg.input_size[0] // cfg.patch_size) * (cfg.input_size[1] // cfg.patch_size)
    assert final[0][1] == tokens and a.shape == x.shape  # only image tokens are decoded (and carry the loss)


def test_t2i_mar_buffer_holds_the_caption_tokens():
    model = _perturbed("t2i-mar-fmnist32-tiny")
    cfg = model.config
    text = torch.randn(2, cfg.text_len, cfg.text_dim)
    buffer = model.condition_buffer(text, with_null=True)
    assert buffer.shape == (4, cfg.text_len, cfg.enc_width) and cfg.buffer_size == cfg.text_len
    assert torch.allclose(buffer[:2], model.text_emb.proj(text))
    assert torch.allclose(buffer[2:], model.text_emb.proj(model.text_emb.null.expand(2, -1, -1)))
    x, mask = torch.randn(2, cfg.num_tokens, cfg.token_dim), torch.ones(2, cfg.num_tokens)  # all masked
    with torch.no_grad():
        cond = [model.forward_decoder(model.forward_encoder(x, mask, model.condition_buffer(t)), mask)
                for t in (text, torch.cat([text[:1], -text[1:]]))]  # fmt: skip
    assert torch.equal(cond[0][0], cond[1][0]) and not torch.allclose(cond[0][1], cond[1][1])


@pytest.mark.parametrize("name", ["t2i-sit-fmnist32-tiny", "t2i-mar-fmnist32-tiny"])
def test_text_of_another_encoder_is_refused(name):
    model = create_model(name)
    cfg = model.config
    z = torch.randn(2, cfg.latent_channels, *cfg.input_size)
    with pytest.raises(ValueError, match="token embeddings .text_len, text_dim.: use the text encoder"):
        model(z, torch.randn(2, cfg.text_len + 1, cfg.text_dim))


# --------------------------------------------------------------------------------------------------
# Captions from measured attributes
# --------------------------------------------------------------------------------------------------


def test_measurements_are_exact_and_flip_invariant():
    images = np.zeros((3, 32, 32), np.uint8)
    images[0, 8:24, 10:14] = 200  # a plain bar, 4 px wide
    images[1, 8:24, 4:28] = 100  # a plain block, 24 px wide
    images[2, 8:24, 8:24] = 120
    images[2, 8:24:2, 8:24] = 220  # horizontal stripes: vertical neighbours differ by 100, horizontal ones by 0
    m = measure(images)
    assert np.allclose(m["brightness"], [200, 100, 170]) and np.allclose(m["width"], [4, 24, 16])
    assert np.allclose(m["texture"], [0, 0, 50])
    flipped = measure(images[:, :, ::-1])
    assert all(np.allclose(m[k], flipped[k]) for k in m)
    assert all(np.allclose(m[k], measure(images[..., None])[k]) for k in m)  # (N, H, W, C) as in sample files


def _dataset(n: int = 90, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 32, 32), np.uint8)
    for i in range(n):  # objects of random width, brightness and texture
        w = int(rng.integers(4, 28))
        images[i, 6:26, 16 - w // 2 : 16 - w // 2 + w] = rng.integers(40, 255 - 60) + rng.integers(0, 60, (20, w))
    return images, np.arange(n) % classes


def test_recipe_cuts_per_class_holds_out_combinations_and_phrases_them():
    images, labels = _dataset()
    recipe = fit_recipe(images, labels, ["Bag", "Sandal", "Widget"], held_out_per_class=2, per_image=2)
    combos = recipe.levels(images, labels)
    for c in range(3):  # per-class terciles: each brightness level holds a third of every class
        assert np.bincount(combos[labels == c, 1], minlength=3).tolist() == [10, 10, 10]
    assert sorted(h[0] for h in recipe.held_out) == [0, 0, 1, 1, 2, 2] and len(set(recipe.held_out)) == 6
    held = recipe.is_held_out(combos)
    assert held.tolist() == [tuple(c) in set(recipe.held_out) for c in combos.tolist()]
    rng = np.random.default_rng(0)
    caption = recipe.phrase(np.array([0, 2, 0, 1]), rng)
    assert any(w in caption for w in ("bag", "handbag")) and "widget" not in caption
    assert any(w in caption.split() for w in ATTRIBUTES[0].phrases[2])  # bright
    assert any(w in caption.replace(",", "").split() for w in ATTRIBUTES[1].phrases[0])  # narrow
    assert any(w in caption.split() for w in ATTRIBUTES[2].phrases[1])  # patterned
    assert CaptionRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert recipe.levels(images[:, :, ::-1], labels).tolist() == combos.tolist()  # flips keep the captions


def test_caption_sets_round_trip_and_leave_held_out_images_untrained(tmp_path):
    from detok.data import DataConfig

    images, labels = _dataset(60, 3)
    np.savez(tmp_path / "d.npz", images_train=images[:45], labels_train=labels[:45], images_test=images[45:],
             labels_test=labels[45:])  # fmt: skip
    made = make_attribute_captions(DataConfig(name="npz", root=str(tmp_path / "d.npz")), per_image=3)
    made.save(tmp_path / "caps")
    loaded = CaptionSet.load(tmp_path / "caps")
    assert loaded.captions == made.captions and loaded.recipe == made.recipe and loaded.digest == made.digest
    assert loaded.ids["train"].shape == (45, 3) and loaded.ids["test"].shape == (15, 3)
    trainable = loaded.trainable("train")
    assert set(trainable.tolist()) == set(np.flatnonzero(~loaded.held_out["train"]).tolist())
    user = CaptionSet.from_lists({"train": [["a cat", "a small cat"], ["a dog"]]}, {"name": "image-folder"})
    assert user.captions == ["a cat", "a small cat", "a dog"] and user.ids["train"].tolist() == [[0, 1], [2, -1]]
    with pytest.raises(FileNotFoundError, match="not a caption set"):
        CaptionSet.load(tmp_path)


@pytest.mark.slow
def test_fashion_mnist_captions_cover_every_combination(fmnist_available):
    from detok.data import DataConfig

    made = make_attribute_captions(DataConfig(name="fashion-mnist"))
    combos = {tuple(c) for c in made.combos["train"].tolist()}
    assert len(combos) == 10 * 18  # every class × level combination has training images
    share = made.held_out["train"].mean()
    assert 0.08 < share < 0.15 and len(made.recipe.held_out) == 20  # 2 of 18 combinations per class held out


def test_alignment_needs_the_class_and_every_attribute():
    images, labels = _dataset()
    recipe = fit_recipe(images, labels, ["a", "b", "c"])
    combos = recipe.levels(images, labels)
    probs = np.eye(3)[labels]
    held = recipe.is_held_out(combos)
    perfect = text_alignment(images, combos, held, recipe, probs)
    assert perfect["all"]["alignment"] == 1.0 and perfect["seen"]["num"] + perfect["held_out"]["num"] == 90
    wrong = combos.copy()
    wrong[:30, 3] = 1 - wrong[:30, 3]  # another pattern level named for a third of the images
    scores = text_alignment(images, wrong, held, recipe, probs)
    assert scores["all"]["class"] == 1.0 and scores["all"]["pattern"] == pytest.approx(2 / 3)
    assert scores["all"]["alignment"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------------
# Text encoders
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised 1-block CLIP text model (width 32, context 16) and a character-level CLIP tokenizer,
    saved as `save_pretrained` would save CLIP-L's text tower."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in map(chr, range(33, 127)):
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    try:  # transformers ≥ 5 builds its tokenizers from data, older ones from files
        tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    except TypeError:
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                               model_max_length=16)  # fmt: skip
    tokenizer.save_pretrained(folder)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(folder)
    return folder


def test_a_local_clip_text_model_gives_frozen_token_outputs_and_truncates_at_the_end(tiny_clip):
    encoder = load_text_encoder(f"hf:{tiny_clip}")
    assert (encoder.max_length, encoder.dim) == (16, 32) and load_text_encoder(tiny_clip).name == encoder.name
    assert not any(p.requires_grad for p in encoder.model.parameters()) and not encoder.model.training
    long = "a caption much longer than sixteen character tokens"
    with pytest.warns(UserWarning, match=r"1 of 2 captions .* truncated at the end \(the first 14 word pieces kept"):
        out = encoder.encode(["a cat", long])
    assert out.tokens.shape == (2, 16, 32) and out.truncated == 1 and out.lengths[1] > 16
    ids, mask, _ = encoder.tokenize([long])
    full = encoder.tokenizer(long)["input_ids"]
    assert ids[0, :15].tolist() == full[:15] and int(ids[0, 15]) == full[-1]  # the first tokens, then the end token
    with torch.no_grad():
        direct = encoder.model(input_ids=ids).last_hidden_state  # CLIP as U-ViT runs it: no attention mask
    assert torch.allclose(out.tokens[1], direct[0], atol=1e-5)


def test_a_text_encoder_folder_without_a_tokenizer_is_refused(tiny_clip, tmp_path):
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_clip / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="has no tokenizer .* save it beside the model"):
        load_text_encoder(tmp_path)


def test_without_transformers_the_error_says_how_to_install(tiny_clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'detok\[text\]'"):
        load_text_encoder(f"hf:{tiny_clip}")


def test_caption_files_one_per_line(tmp_path):
    (tmp_path / "ok.txt").write_text("a dark bag\n a wide coat \n\n")
    assert read_captions_file(tmp_path / "ok.txt") == ["a dark bag", "a wide coat"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="is empty: write one caption per line"):
        read_captions_file(tmp_path / "empty.txt")
    (tmp_path / "gap.txt").write_text("a bag\n\na coat\n")
    with pytest.raises(ValueError, match="line 2 is blank"):
        read_captions_file(tmp_path / "gap.txt")


# --------------------------------------------------------------------------------------------------
# detok's offline text encoder
# --------------------------------------------------------------------------------------------------


def test_word_encoder_keeps_the_first_words_and_reads_unknown_ones_as_unk():
    model = create_model("text-encoder-fmnist32-tiny", vocab=("a", "bag", "dark", "wide"))
    ids, mask, lengths, unknown = model.tokenize(["A dark bag.", "a purple bag" + " wide" * 20])
    assert ids[0, :4].tolist() == [2, 4, 3, 0] and mask[0].sum() == 3  # ids 2… are the vocabulary, 0 pads
    assert lengths.tolist() == [3, 23] and mask[1].all() and unknown == 1  # cut to 12 words; "purple" → [unk]
    with pytest.raises(ValueError, match="has no words"):
        model.tokenize(["a bag", " , "])
    out = model.forward_text(ids, mask)
    assert out.shape == (2, 12, 16)
    padded = ids.clone()
    padded[0, 5] = 5  # another word at a padding position changes nothing the caption's words see
    assert torch.allclose(model.forward_text(padded, mask)[0, :3], out[0, :3], atol=1e-6)


def test_word_encoder_overfits_a_batch_of_image_caption_pairs():
    """150 Adam steps on 8 images and 8 distinct captions: the contrastive loss must fall by 10× (measured 2026-12:
    2.97 → 0.0035)."""
    torch.manual_seed(0)
    vocab = tuple(f"w{i}" for i in range(8))
    model = create_model("text-encoder-fmnist32-tiny", vocab=vocab).train()
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    ids, mask, _, _ = model.tokenize([f"w{i} w{(i + 3) % 8}" for i in range(8)])

    def evaluate() -> float:
        with torch.no_grad():
            return float(model(x, ids, mask))

    before = evaluate()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(x, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after * 10 <= before, (before, after)


def test_text_encoder_train_caches_itself_and_its_caption_embeddings(tmp_path, monkeypatch):
    """`detok captions make` + `detok text-encoder train` at the tiny preset on a 3-class .npz: the encoder lands in
    the cache folder its preset name resolves to, label-free and probed; caption-set embeddings are computed once."""
    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "cache"))
    images, labels = _dataset(60, 3)
    np.savez(tmp_path / "d.npz", images_train=images[:45], labels_train=labels[:45], images_test=images[45:],
             labels_test=labels[45:])  # fmt: skip
    data = ["--set", "name=npz", "--set", f"root={tmp_path / 'd.npz'}"]
    assert cli_main(["captions", "make", "--out", str(tmp_path / "caps"), *data]) == 0
    with pytest.raises(FileNotFoundError, match="not trained yet: run `detok text-encoder train"):
        load_text_encoder("text-encoder-fmnist32-tiny")
    train = ["train.images=64", "train.batch_size=16", "train.progress=false", "train.threads=1", "probe_images=15"]
    args = ["text-encoder", "train", "--preset", "text-encoder-fmnist32-tiny", "--captions", str(tmp_path / "caps")]
    assert cli_main([*args, *(a for t in train for a in ("--set", t))]) == 0
    folder = tmp_path / "cache" / "text-encoders" / "text-encoder-fmnist32-tiny"
    record = json.loads((folder / "config.json").read_text())
    assert record["finished"] and record["trained_with_labels"] is False and record["probe"]["images"] == 15
    encoder = load_text_encoder("text-encoder-fmnist32-tiny")
    captions = CaptionSet.load(tmp_path / "caps")
    tokens = caption_embeddings(captions, tmp_path / "caps", encoder)
    assert tokens.shape == (len(captions.captions), encoder.max_length, encoder.dim)
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: pytest.fail("embedded twice"))
    assert torch.equal(caption_embeddings(captions, tmp_path / "caps", encoder), tokens)
