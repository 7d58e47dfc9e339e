"""Shared test set-up: one thread, offline hubs, and contract helpers for every registered preset."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def fmnist_available():
    if not os.path.isdir(FMNIST_DIR):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FMNIST_DIR
