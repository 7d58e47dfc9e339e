"""Datasets: Fashion-MNIST geometry, image folders, CIFAR-10 batches, npz arrays, and their error messages."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detok import data as data_mod
from detok.data import DataConfig, DatasetNotFoundError, build_dataset


def test_fashion_mnist_padded_to_32(fmnist_available):
    train = build_dataset(DataConfig(root=fmnist_available), "train")
    test = build_dataset(DataConfig(root=fmnist_available), "test")
    assert len(train) == 60_000 and len(test) == 10_000 and train.num_classes == 10
    x, y = test.get_batch(torch.arange(256))
    assert x.shape == (256, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.9
    border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten(), x[..., :, :2].flatten()])
    assert torch.equal(border, torch.full_like(border, -1.0))  # the 2-pixel pad is background
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) == 10
    rgb = build_dataset(DataConfig(root=fmnist_available, channels=3), "test").get_batch(torch.arange(4))[0]
    assert rgb.shape == (4, 3, 32, 32) and torch.equal(rgb[:, 0], x[:4, 0]) and torch.equal(rgb[:, 2], x[:4, 0])


def test_flips_follow_the_generator(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (16, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=imgs)
    ds = build_dataset(DataConfig(name="npz", root=str(tmp_path / "a.npz"), image_size=8, hflip=True))
    idx = torch.arange(16)
    a = ds.get_batch(idx, torch.Generator().manual_seed(1))[0]
    b = ds.get_batch(idx, torch.Generator().manual_seed(1))[0]
    plain = torch.from_numpy(imgs).float().div(127.5).sub(1).unsqueeze(1)
    assert torch.equal(a, b)
    flipped = [not torch.equal(a[i], plain[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16
    assert all(torch.equal(a[i], plain[i].flip(-1)) for i in range(16) if flipped[i])


def test_dataset_not_found_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DEBIAN_FMNIST", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DETOK_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        build_dataset(DataConfig())
    assert "data.download=true" in str(e.value) and "DETOK_DATA" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_dataset(DataConfig(root=str(tmp_path / "empty")))
    with pytest.raises(DatasetNotFoundError, match="cifar"):
        build_dataset(DataConfig(name="cifar10", root=str(tmp_path), channels=3))
    with pytest.raises(DatasetNotFoundError, match="npz"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "x.npz")))
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset(DataConfig(), "validation")


def test_fmnist_found_through_detok_data(fmnist_available, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DEBIAN_FMNIST", str(tmp_path / "nowhere"))
    sub = tmp_path / "fashion-mnist"
    sub.mkdir()
    for name in data_mod.FMNIST_FILES["test"]:
        (sub / name).symlink_to(f"{fmnist_available}/{name}")
    monkeypatch.setenv("DETOK_DATA", str(tmp_path))
    assert len(build_dataset(DataConfig(), "test")) == 10_000


def test_corrupt_idx_file_is_named(tmp_path):
    import gzip

    for name in data_mod.FMNIST_FILES["test"]:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03garbage")
    with pytest.raises(ValueError, match="truncated|IDX"):
        build_dataset(DataConfig(root=str(tmp_path)), "test")


def test_image_folder_and_unreadable_image(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = build_dataset(DataConfig(name="image-folder", root=str(tmp_path), image_size=16, channels=3, resize="resize"))
    assert len(ds) == 6 and ds.class_names == ["cats", "dogs"]
    x, y = ds.get_batch(torch.tensor([0, 5]))
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 1]
    with pytest.warns(UserWarning, match="no test/ or val/ folder"):
        build_dataset(DataConfig(name="image-folder", root=str(tmp_path), image_size=16, channels=3), "test")
    grey = build_dataset(DataConfig(name="image-folder", root=str(tmp_path), image_size=16, channels=1))
    assert grey.get_batch(torch.tensor([1]))[0].shape == (1, 1, 16, 16)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png.*data.verify=false"):  # small folders are scanned up front
        build_dataset(DataConfig(name="image-folder", root=str(tmp_path), image_size=16, channels=3))
    ds = build_dataset(DataConfig(name="image-folder", root=str(tmp_path), image_size=16, channels=3, verify=False))
    bad = ds.files.index(tmp_path / "dogs" / "broken.png")
    with pytest.raises(ValueError, match="broken.png"):
        ds.get_batch(torch.tensor([bad]))
    with pytest.raises(DatasetNotFoundError, match="no images"):
        (tmp_path / "empty").mkdir()
        build_dataset(DataConfig(name="image-folder", root=str(tmp_path / "empty")))


def test_cifar10_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 4))}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    ds = build_dataset(DataConfig(name="cifar10", root=str(tmp_path), channels=3), "train")
    assert len(ds) == 20 and ds.class_names[3] == "c3"
    with open(root / "data_batch_1", "rb") as f:
        first = pickle.load(f)[b"data"][0].reshape(3, 32, 32)
    assert torch.equal(ds.get_batch(torch.tensor([0]))[0][0], torch.from_numpy(first).float() / 127.5 - 1)
    grey = build_dataset(DataConfig(name="cifar10", root=str(tmp_path), channels=1), "test")
    assert grey.get_batch(torch.arange(2))[0].shape == (2, 1, 32, 32)


def test_npz_layouts_and_errors(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    np.savez(tmp_path / "hwc.npz", images=imgs, labels=np.arange(5))
    ds = build_dataset(DataConfig(name="npz", root=str(tmp_path / "hwc.npz"), channels=3))
    x, y = ds.get_batch(torch.arange(5))
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(x[:, :, 2:30, 2:30], torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    with pytest.warns(UserWarning, match="no 'images_test'.*training images"):  # never silently test on train
        assert len(build_dataset(DataConfig(name="npz", root=str(tmp_path / "hwc.npz"), channels=3), "test")) == 5
    np.savez(tmp_path / "split.npz", images_train=imgs[:3], images_test=imgs[3:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_dataset(DataConfig(name="npz", root=str(tmp_path / "split.npz"), channels=3), "test")) == 2
    np.savez(tmp_path / "nokey.npz", pictures=imgs)
    with pytest.raises(ValueError, match="no 'images'"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "nokey.npz")))
    np.savez(tmp_path / "float.npz", images=imgs.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "float.npz")))


def test_bad_data_config():
    with pytest.raises(ValueError, match="channels"):
        DataConfig(channels=2)


def test_evaluation_batches_refuse_randomly_flipped_datasets(tmp_path):
    from detok.data import iter_batches

    np.savez(tmp_path / "d.npz", images=np.zeros((4, 28, 28), dtype=np.uint8))
    flipped = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz"), hflip=True))
    with pytest.raises(ValueError, match="hflip=False"):
        next(iter_batches(flipped, 2, progress=False))
    plain = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")))
    assert len(list(iter_batches(plain, 3, progress=False))) == 2


def test_adm_center_crop_is_guided_diffusions_preprocessing(tmp_path):
    """Box-halve while the short side is >= 2x the target, bicubic to the target, centre crop; in image folders and
    in-memory sets alike."""
    from detok.images import adm_center_crop

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))  # (H, W) = (300, 500)
    out = adm_center_crop(big, 64)
    halved = big.resize((250, 150), resample=Image.BOX).resize((125, 75), resample=Image.BOX)  # 150 >= 128: twice
    scaled = np.asarray(halved.resize((round(125 * 64 / 75), 64), resample=Image.BICUBIC))  # (64, 107)
    assert out.shape == (64, 64, 3) and np.array_equal(out, scaled[:, (107 - 64) // 2 : (107 - 64) // 2 + 64])
    (tmp_path / "a").mkdir()
    big.save(tmp_path / "a" / "x.png")
    cfg = DataConfig(name="image-folder", root=str(tmp_path), image_size=64, channels=3, resize="adm-center-crop")
    x = build_dataset(cfg).get_batch(torch.tensor([0]))[0]
    assert torch.equal(x[0], torch.from_numpy(out).permute(2, 0, 1).float() / 127.5 - 1)
    np.savez(tmp_path / "d.npz", images=np.asarray(big)[None])
    npz = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz"), image_size=64, channels=3,
                                   resize="adm-center-crop"))  # fmt: skip
    assert torch.equal(npz.get_batch(torch.tensor([0]))[0], x)
