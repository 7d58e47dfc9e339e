"""Shared test set-up: one thread, offline hubs, and contract helpers for every registered preset."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Reference statistics and trained evaluators go to a throw-away cache, never the user's ~/.cache/detok.
os.environ["DETOK_CACHE"] = tempfile.mkdtemp(prefix="detok-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def fmnist_available():
    if not os.path.isdir(FMNIST_DIR):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FMNIST_DIR
