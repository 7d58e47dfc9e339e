"""Choose the linear probe's learning rate and epochs on a validation slice of the training images.

Usage: python benchmarks/probe_selection.py [--threads 2] [--fit 5000] [--val 1000]

`linear_probe`'s defaults (lr, epochs) must not be picked on the test images it reports on. This script splits the
first `--fit` + `--val` Fashion-MNIST-32 *training* images into a fitting and a validation part, and prints the
validation accuracy of every (lr, epochs) in the grid for two kinds of features: pixels, and the latents of an
untrained (seeded) `detok-fmnist32`. The test split is never read.
"""

import argparse
import time

import torch

from detok import create_model
from detok.data import DataConfig, build_dataset
from detok.eval.latent_analysis import latent_features, linear_probe

LRS = (0.005, 0.01, 0.02, 0.05, 0.1)
EPOCHS = (10, 30, 100)


def _pixels(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = dataset.get_batch(torch.arange(n))
    return x.flatten(1), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fit", type=int, default=5000)
    parser.add_argument("--val", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.fit + args.val
    train = build_dataset(DataConfig(), "train")
    torch.manual_seed(0)
    tokenizer = create_model("detok-fmnist32").eval()
    features = {
        "pixels": _pixels(train, n),
        "untrained detok-fmnist32 latents": latent_features(tokenizer, train, n, progress=False),
    }
    print(f"fit on training images 0..{args.fit - 1}, validate on {args.fit}..{n - 1} (test split not read)")
    for name, (feats, labels) in features.items():
        fit, val = (feats[: args.fit], labels[: args.fit]), (feats[args.fit :], labels[args.fit :])
        start, rows = time.perf_counter(), []
        for lr in LRS:
            for epochs in EPOCHS:
                acc = linear_probe(*fit, *val, epochs=epochs, lr=lr)["test_accuracy"]
                rows.append((acc, lr, epochs))
        print(f"\n{name} ({feats.shape[1]}-d), {time.perf_counter() - start:.0f} s:")
        print("lr     " + "".join(f"{e:>8} ep" for e in EPOCHS))
        for lr in LRS:
            print(f"{lr:<7}" + "".join(f"{acc:>11.4f}" for acc, r, _ in rows if r == lr))
        best = max(rows)
        print(f"best: {best[0]:.4f} at lr {best[1]}, {best[2]} epochs")


if __name__ == "__main__":
    main()
