"""The Inception-v3 extractor (torch-fidelity) offline: an untrained network stands in for the real weights, and
FID/IS computed through detok must agree with torch-fidelity's own `calculate_metrics` on the same images.

Needs the `inception` extra (torch-fidelity pulls torchvision); skipped without it.
"""

import urllib.error

import numpy as np
import pytest
import torch

from detok.eval.features import InceptionExtractor, ReferenceSet, build_extractor, extract
from detok.eval.generation import score_images
from detok.eval.metrics import inception_score

tf = pytest.importorskip("torch_fidelity")
inception_module = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised Inception-v3 state dict in torch-fidelity's format."""
    patch = pytest.MonkeyPatch()
    patch.setattr(inception_module, "load_state_dict_from_url", lambda *a, **k: {})
    patch.setattr(inception_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    torch.manual_seed(0)
    net = inception_module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    patch.undo()
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(torch.nn.Module.state_dict(net), path)
    return path


def _images(seed, n=16):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
    return np.clip(base.astype(int) + 40 * seed, 0, 255).astype(np.uint8)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.x = torch.from_numpy(images).permute(0, 3, 1, 2).expand(-1, 3, -1, -1)  # (N, 3, H, W) uint8

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].contiguous()


def test_fid_and_is_agree_with_torch_fidelity(weights):
    ex = build_extractor(f"inception:{weights}")
    assert isinstance(ex, InceptionExtractor) and ex.name.startswith("inception-")
    real, fake = _images(0), _images(2)
    real_feats, _ = extract(ex, real, batch_size=8, progress=False)
    ours = score_images(fake, ex, ReferenceSet.from_features(real_feats, "toy"), progress=False)
    _, probs = extract(ex, fake, batch_size=8, progress=False)
    theirs = tf.calculate_metrics(
        input1=_Images(fake),
        input2=_Images(real),
        fid=True,
        isc=True,
        isc_splits=1,
        feature_extractor_weights_path=str(weights),
        cuda=False,
        verbose=False,
        batch_size=8,
        save_cpu_ram=True,
    )
    assert ours["fid"] > 0
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert inception_score(probs, splits=1)[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)


def test_offline_without_weights_says_how_to_provide_them(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", offline)
    monkeypatch.delenv("DETOK_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(RuntimeError, match="inception:PATH"):
        InceptionExtractor()
    with pytest.raises(FileNotFoundError):
        InceptionExtractor("/nonexistent/weights.pth")
