"""Throughput of CNNFeatureExtractor.transform vs a plain fp32 torch loop.

Both run EfficientNet-Lite0 with its real (offline) ImageNet weights on the same
224x224 images, batch 32, ``torch.set_num_threads(2)``, in one process; repeats are
interleaved (extractor, plain, extractor, plain, ...) and medians compared, so load
from other processes hits both sides alike.

- The plain loop gets ready-made normalized tensors (resizing and normalization are
  done before the clock starts): it is the best a hand-written loop can do.
- ``transform`` gets the same images as a float (n, 224, 224, 3) array in [0, 1]
  and includes its own conversion + normalization in the timing.

Then the accuracy check: codes from ``precision="auto"`` (default ``optimize``) and
from the fp32 eager path (``precision="fp32", optimize=False``) feed a
LogisticRegression trained on the bundled Fashion-MNIST sample (1,000 train images)
and scored on its 1,000 test images. To keep the whole run under ~3 minutes on 2
cores, the accuracy part uses ``--acc-size`` (112 px by default; ``--acc-size 224``
for the full size).

Usage: python benchmarks/extract_throughput.py [--n 128] [--repeats 3] [--acc-size 112]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sktransfer import CNNFeatureExtractor, load_backbone  # noqa: E402
from sktransfer._backbones import strip_head  # noqa: E402
from sktransfer._runtime import (  # noqa: E402
    cpu_has_fast_bf16,
    resolve_device,
    resolve_precision,
)
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "extract_throughput.txt"


def chosen_path(ext):
    """Describe what precision='auto' resolved to for a fitted extractor."""
    engine = ext._get_engine()
    device = resolve_device(ext.device)
    autocast = resolve_precision(ext.precision, device)
    if engine.traced is not None:
        return f"traced+frozen TorchScript fp32 on {device}"
    if autocast is not None:
        dtype = str(autocast).replace("torch.", "")
        return f"eager {dtype} autocast + channels_last on {device}"
    return f"eager fp32 on {device}"


def images_224(n, seed=0):
    """n Fashion-MNIST sample images as float (n, 224, 224, 3) in [0, 1]."""
    X, _ = load_fashion_mnist_sample(subset="all", return_X_y=True)
    X = X[np.random.default_rng(seed).permutation(len(X))[:n]]
    t = torch.from_numpy(X.astype(np.float32) / 255.0)[:, None]
    t = F.interpolate(t, size=(224, 224), mode="bilinear", antialias=True)
    return t.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--acc-size", type=int, default=112)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    lines = []

    def say(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    say(
        f"# extract_throughput  ({platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"fast bf16 CPU: {cpu_has_fast_bf16()}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    Xf = images_224(args.n)
    bs = args.batch_size

    # ---- the extractor, precision="auto", optimize=True (defaults)
    ext = CNNFeatureExtractor(batch_size=bs, device="cpu").fit(Xf[:2])
    say(f"precision='auto' chose: {chosen_path(ext)}")

    # ---- the plain loop: same weights, head removed (penultimate codes), eval mode
    net, prep = load_backbone("efficientnet_lite0", "imagenet")
    net = copy.deepcopy(net).eval()
    strip_head(net)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    batches = [
        (torch.from_numpy(Xf[i : i + bs]).permute(0, 3, 1, 2) - mean) / std
        for i in range(0, len(Xf), bs)
    ]
    batches = [b.contiguous() for b in batches]

    def plain():
        out = []
        with torch.inference_mode():
            for b in batches:
                out.append(net(b))
        return torch.cat(out).numpy()

    def ours():
        return ext.transform(Xf)

    # warm-up both (oneDNN primitive caches, allocator)
    z_plain = plain()
    z_ours = ours()
    max_diff = float(np.abs(z_plain - z_ours).max())
    t_ours, t_plain = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain()
        t_plain.append(time.perf_counter() - t0)
    ips_ours = args.n / statistics.median(t_ours)
    ips_plain = args.n / statistics.median(t_plain)
    say(
        f"lite0 224px batch {bs}, {args.n} images x {args.repeats} interleaved "
        f"repeats (medians)"
    )
    say(f"  plain fp32 inference_mode loop : {ips_plain:7.1f} img/s")
    say(f"  CNNFeatureExtractor (auto)     : {ips_ours:7.1f} img/s")
    ratio = ips_ours / ips_plain
    say(f"  ratio extractor / plain        : {ratio:7.2f}x  (target >= 2.0x)")
    say(f"  max |code difference|          : {max_diff:.2e}")

    # ---- accuracy: auto path vs fp32 eager path on the bundled sample
    Xtr, ytr = load_fashion_mnist_sample(subset="train", return_X_y=True)
    Xte, yte = load_fashion_mnist_sample(subset="test", return_X_y=True)
    s = args.acc_size
    accs = {}
    for name, kw in (
        ("auto", {}),
        ("fp32 eager", {"precision": "fp32", "optimize": False}),
    ):
        fx = CNNFeatureExtractor(input_size=s, batch_size=bs, device="cpu", **kw)
        t0 = time.perf_counter()
        Ztr = fx.fit_transform(Xtr)
        Zte = fx.transform(Xte)
        dt = time.perf_counter() - t0
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        accs[name] = clf.fit(Ztr, ytr).score(Zte, yte)
        say(
            f"  accuracy {name:10s} ({s}px codes, LogisticRegression, 1000 train / "
            f"1000 test): {accs[name]:.4f}  [{dt:.0f} s extraction]"
        )
    diff = abs(accs["auto"] - accs["fp32 eager"]) * 100
    say(f"  accuracy difference            : {diff:.2f} points  (target <= 0.5)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written to {os.path.relpath(RESULTS)}")


if __name__ == "__main__":
    main()
