"""Rebuild ``data/fashion_mnist_sample.npz`` from Debian's dataset-fashion-mnist.

Run: ``python -m sktransfer.datasets._make_sample`` (needs
``apt-get install dataset-fashion-mnist``). Draws 100 images per class from the
official train set and 100 per class from the official test set, seed 0.

Fashion-MNIST: Copyright 2017 Zalando SE, MIT (Expat) license; see
``data/LICENSE-fashion-mnist.txt``.
"""

from pathlib import Path

import numpy as np

from ._base import load_fashion_mnist

PER_CLASS = 100
SEED = 0


def _stratified(images, labels, rng):
    idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), PER_CLASS, replace=False)
            for c in range(10)
        ]
    )
    idx = rng.permutation(idx)
    return images[idx], labels[idx].astype(np.uint8)


def main():
    rng = np.random.default_rng(SEED)
    tr = _stratified(*load_fashion_mnist(subset="train", return_X_y=True), rng)
    te = _stratified(*load_fashion_mnist(subset="test", return_X_y=True), rng)
    out = Path(__file__).parent / "data" / "fashion_mnist_sample.npz"
    np.savez_compressed(
        out,
        train_images=tr[0],
        train_labels=tr[1],
        test_images=te[0],
        test_labels=te[1],
    )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
