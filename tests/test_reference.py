"""The reference classifier (the offline evaluator for small datasets): learns, is deterministic, loads safely."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from detok import create_model
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.config import apply_overrides
from detok.data import DataConfig
from detok.eval.reference import ReferenceNet, ReferenceNetConfig, ReferenceTrainConfig, load_reference, train_reference


def _squares(rng, n):
    """28×28 images with a bright square in one of three places; the place is the label."""
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for img, y in zip(images, labels):
        r, c = [(2, 2), (2, 16), (16, 9)][y] + rng.integers(0, 4, 2)
        img[r : r + 9, c : c + 9] = 230
    return images, labels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = _squares(rng, 256), _squares(rng, 96)
    path = tmp_path_factory.mktemp("ref") / "squares.npz"
    np.savez(path, images_train=xtr, labels_train=ytr, images_test=xte, labels_test=yte)
    return path


def _cfg(data, *extra):
    base = ReferenceTrainConfig(data=DataConfig(name="npz", root=str(data)))
    tiny = ["model.widths=[4, 8]", "model.feature_dim=16", "batch_size=32", "threads=1", "lr=0.01"]
    return apply_overrides(base, tiny + list(extra))


def test_learns_a_separable_task(data, tmp_path):
    result = train_reference(_cfg(data, "epochs=10", "model.widths=[8, 16]"), tmp_path, progress=False)
    assert result["test_accuracy"] >= 0.9, result
    model = load_reference(tmp_path)
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    assert model.features(x).shape == (5, 16) and model(x).shape == (5, 3)
    assert json.loads((tmp_path / "config.json").read_text())["test_accuracy"] == result["test_accuracy"]


def test_training_is_deterministic_under_a_seed(data, tmp_path):
    train_reference(_cfg(data, "epochs=1"), tmp_path / "a", progress=False)
    train_reference(_cfg(data, "epochs=1"), tmp_path / "b", progress=False)
    train_reference(_cfg(data, "epochs=1", "seed=1"), tmp_path / "c", progress=False)
    a, b, c = (load_file(str(tmp_path / k / "model.safetensors")) for k in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_loading_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-reference"):
        load_reference(tmp_path / "missing")
    save_model_folder(tmp_path / "tok", create_model("detok-fmnist32-tiny"))
    with pytest.raises(ValueError, match="not a reference classifier"):
        load_reference(tmp_path / "tok")


def test_cli_dry_run_and_unknown_dataset(capsys):
    assert cli_main(["eval", "train-reference", "--dry-run", "--set", "epochs=2"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    assert cli_main(["eval", "train-reference", "--dataset", "cifar10", "--dry-run"]) == 2
    assert "fashion-mnist" in capsys.readouterr().err


def test_train_reference_says_whether_it_reproduced_the_shipped_evaluator(tmp_path, capsys, monkeypatch):
    import shutil

    import detok.eval.reference as reference
    from detok.eval.features import SHIPPED_REFERENCE

    def fake(cfg, out, progress=True, weights=SHIPPED_REFERENCE):  # a "retrain" that writes given weights
        shutil.copytree(weights, out, dirs_exist_ok=True)
        return {"test_accuracy": 0.9195}

    monkeypatch.setattr(reference, "train_reference", fake)
    assert cli_main(["eval", "train-reference", "--out", str(tmp_path / "same")]) == 0
    assert "reproduced the shipped evaluator" in capsys.readouterr().out
    other = tmp_path / "other-weights"
    save_model_folder(other, ReferenceNet(ReferenceNetConfig()))
    monkeypatch.setattr(reference, "train_reference", lambda cfg, out, progress=True: fake(cfg, out, weights=other))
    assert cli_main(["eval", "train-reference", "--out", str(tmp_path / "diff")]) == 0
    out = capsys.readouterr().out
    assert "differs from the shipped evaluator (reference-9f94d1b9bf8f)" in out and '"reproduces_shipped": false' in out
    assert cli_main(["eval", "train-reference", "--out", str(SHIPPED_REFERENCE)]) == 2  # never overwritten


def test_cli_if_missing_keeps_a_trained_classifier(tmp_path, capsys, monkeypatch):
    import detok.eval.reference as reference

    monkeypatch.setattr(reference, "train_reference", lambda *a: pytest.fail("--if-missing retrained a classifier"))
    save_model_folder(tmp_path / "ref", ReferenceNet(ReferenceNetConfig(widths=(4, 8), feature_dim=8, num_classes=3)))
    args = ["eval", "train-reference", "--out", str(tmp_path / "ref"), "--if-missing"]
    assert cli_main(args) == 0
    assert "already trained" in capsys.readouterr().out
    # without a classifier there, --if-missing goes on to train (here: to the dry run)
    assert cli_main(["eval", "train-reference", "--out", str(tmp_path / "none"), "--if-missing", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "none")


def test_the_second_evaluator_is_a_resnet_that_learns_and_scores_through_its_own_spec(data, tmp_path, capsys):
    from detok.eval.features import build_extractor
    from detok.eval.reference import ResidualNet, ResidualNetConfig

    cfg = apply_overrides(
        ReferenceTrainConfig(model=ResidualNetConfig(), data=DataConfig(name="npz", root=str(data)), seed=1),
        ["model.stage_widths=[8, 16]", "model.embed_dim=16", "batch_size=32", "threads=1", "lr=0.01", "epochs=10"],
    )
    result = train_reference(cfg, tmp_path / "resnet", progress=False)
    assert result["test_accuracy"] >= 0.9, result
    model = load_reference(tmp_path / "resnet")
    assert isinstance(model, ResidualNet) and not hasattr(model, "trunk")  # not the VGG stack of ReferenceNet
    extractor = build_extractor(f"reference-resnet:{tmp_path / 'resnet'}")
    feats, probs = extractor(torch.zeros(3, 1, 32, 32, dtype=torch.uint8))
    assert feats.shape == (3, 16) and probs.shape == (3, 3)
    assert cli_main(["eval", "train-reference", "--preset", "reference-resnet-fmnist32", "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["seed"] == 1 and "stage_widths" in dry["model"] and dry["out"].endswith("reference-resnet-fmnist32")
    assert cli_main(["eval", "train-reference", "--preset", "nope", "--dry-run"]) == 2


def test_both_shipped_evaluators_load_and_differ_in_architecture_and_seed():
    from detok.eval.features import build_extractor, shipped_evaluator_dir
    from detok.eval.reference import ResidualNet

    first, second = build_extractor("reference"), build_extractor("reference-resnet")
    assert isinstance(second.model, ResidualNet) and not isinstance(first.model, ResidualNet)
    config = json.loads((shipped_evaluator_dir("reference-resnet-fmnist32") / "config.json").read_text())
    assert config["training"]["seed"] == 1 and config["test_accuracy"] >= 0.9
    x = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    assert first(x)[0].shape[1] != second(x)[0].shape[1] or first.name != second.name
