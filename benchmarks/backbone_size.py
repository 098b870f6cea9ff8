"""What a bigger offline backbone buys on Fashion-MNIST: lite0 vs lite1 vs lite2.

EfficientNet-Lite0 at 224 px (shipped with sktransfer), Lite1 at 240 px and
Lite2 at 260 px (the ``backbones`` extra), each at its weights' own resolution
with its real ImageNet weights. Codes (penultimate, 1280-d) + StandardScaler +
LogisticRegression (the ``codes_logreg`` strategy of ``compare_strategies``):

- 100 images per class: a fixed draw of 1,000 training images (seed 0);
- 20 images per class: 5 draws of 200 from those 1,000 (mean +- sd);
- 1,000 test images: the first 1,000 of the official test set.

Codes of the 2,000 images are extracted once per backbone. Time per image is
measured on one batch of 64 training images, transform only, with the backbones
interleaved (lite0, lite1, lite2, lite0, ...) over ``--repeats`` rounds and the
median taken, so load from other processes hits every backbone alike.

Uses the full data from Debian's ``dataset-fashion-mnist`` package when installed,
otherwise the bundled 2,000-image sample (100 per class, so the test images are
then the sample's own 1,000).

Usage: python benchmarks/backbone_size.py [--models lite0 lite1 lite2]
       [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench import cpu_kind  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from sktransfer import CNNFeatureExtractor, offline_backbones  # noqa: E402
from sktransfer._runtime import cpu_has_fast_bf16  # noqa: E402
from sktransfer.datasets import (  # noqa: E402
    load_fashion_mnist,
    load_fashion_mnist_sample,
)

RESULTS = Path(__file__).resolve().parent / "results" / "backbone_size.txt"
SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


def load_data():
    """``(X_pool, y_pool, X_test, y_test, source)``: 100/class pool, 1,000 test."""
    try:
        X_tr, y_tr = load_fashion_mnist(subset="train", return_X_y=True)
        X_te, y_te = load_fashion_mnist(subset="test", return_X_y=True)
        source = "full Fashion-MNIST (Debian dataset-fashion-mnist)"
    except FileNotFoundError:
        X_tr, y_tr = load_fashion_mnist_sample(subset="train", return_X_y=True)
        X_te, y_te = load_fashion_mnist_sample(subset="test", return_X_y=True)
        source = "bundled Fashion-MNIST sample"
    rng = np.random.default_rng(0)
    pool = np.concatenate(
        [rng.choice(np.flatnonzero(y_tr == c), 100, replace=False) for c in range(10)]
    )
    return X_tr[pool], y_tr[pool], X_te[:1000], y_te[:1000], source


def head():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))


def accuracies(codes_pool, y_pool, codes_test, y_test):
    """``(acc at 100/class, [acc at 20/class per draw])``."""
    with threadpool_limits(1, user_api="blas"):
        full = head().fit(codes_pool, y_pool).score(codes_test, y_test)
        small = []
        for seed in range(5):
            rng = np.random.default_rng(seed)
            idx = np.concatenate(
                [
                    rng.choice(np.flatnonzero(y_pool == c), 20, replace=False)
                    for c in range(10)
                ]
            )
            small.append(
                head().fit(codes_pool[idx], y_pool[idx]).score(codes_test, y_test)
            )
    return full, small


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lite0", "lite1", "lite2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    available = offline_backbones()
    models = [m for m in args.models if f"efficientnet_{m}" in available]
    missing = sorted(set(args.models) - set(models))

    X_pool, y_pool, X_test, y_test, source = load_data()
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    extractors, codes, seconds = {}, {}, {}
    for m in models:
        ext = CNNFeatureExtractor(model=f"efficientnet_{m}", weights="imagenet")
        ts = time.perf_counter()
        ext.fit(X_pool)
        both = ext.transform(np.concatenate([X_pool, X_test]))
        seconds[m] = time.perf_counter() - ts
        extractors[m], codes[m] = ext, (both[:1000], both[1000:])
        print(f"{m}: codes {both.shape} in {seconds[m]:.0f} s", flush=True)

    batch = X_pool[:64]
    times = {m: [] for m in models}
    for _ in range(args.repeats):
        for m in models:
            ts = time.perf_counter()
            extractors[m].transform(batch)
            times[m].append((time.perf_counter() - ts) / len(batch))

    lines = [
        f"# backbone_size  ({cpu_kind()}, {platform.machine()}, torch "
        f"{torch.__version__}, threads={args.threads}, fast bf16 CPU: "
        f"{cpu_has_fast_bf16()}, load average {load_before:.1f} at start / "
        f"{os.getloadavg()[0]:.1f} at end on {os.cpu_count()} cores)",
        f"data: {source}; 1,000 test images; codes + StandardScaler + "
        f"LogisticRegression(C=0.5); precision='auto' (fp32)",
        "time per image: transform of 64 images, backbones interleaved, median of "
        f"{args.repeats}",
        "",
        f"{'backbone':<20} {'px':>4} {'params':>7} {'ms/img':>7} {'vs lite0':>8} "
        f"{'acc 20/class (5 draws)':>24} {'acc 100/class':>13}",
    ]
    base = None
    for m in models:
        pool, test = codes[m]
        full, small = accuracies(pool, y_pool, test, y_test)
        ms = 1000 * statistics.median(times[m])
        base = base or ms
        n_params = sum(p.numel() for p in extractors[m].backbone_.parameters())
        lines.append(
            f"{'efficientnet_' + m:<20} {SIZES[m]:>4} {n_params / 1e6:>6.1f}M "
            f"{ms:>7.1f} {ms / base:>7.2f}x "
            f"{np.mean(small):>15.3f} +- {np.std(small):.3f} {full:>13.3f}"
        )
    if missing:
        lines.append(f'not installed: {missing} (pip install "sktransfer[backbones]")')
    lines.append(f"total {time.perf_counter() - t_start:.0f} s")
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
