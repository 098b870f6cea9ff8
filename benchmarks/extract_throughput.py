"""Throughput of the default CNNFeatureExtractor vs a careful plain fp32 torch loop.

Both run EfficientNet-Lite0 with its real (offline) ImageNet weights on the same
224x224 images, batch 32, ``torch.set_num_threads(2)``, in one process; repeats are
interleaved (extractor, plain, extractor, plain, ...) and medians compared, so load
from other processes hits both sides alike.

- The plain loop is what a careful user writes: the network without its head, eval
  mode, ``torch.inference_mode``, channels_last weights and inputs, and
  ready-made normalized tensors (resizing and normalization done before the clock
  starts).
- ``CNNFeatureExtractor()`` runs with its defaults (``engine="auto"``,
  ``precision="auto"``: ONNX Runtime on an exported fp32 graph on the CPU). It gets
  the images as a float (n, 224, 224, 3) array in [0, 1] and includes its own
  conversion and normalization in the timing. The graph export (or its load from
  the on-disk cache) happens in ``transform``'s first call, before the clock.
- ``precision="bf16"`` (explicit opt-in: torch with bf16 autocast + channels_last)
  is timed the same way.

Then the accuracy check on the bundled Fashion-MNIST sample (1,000 train / 1,000
test images): codes of the default extractor, of the fp32 eager torch engine
(``engine="torch", precision="fp32"``) and of ``precision="bf16"`` feed a
StandardScaler + LogisticRegression. ``--acc-size`` sets the image size of that part
(112 px by default to keep the run to a few minutes on 2 cores).

Usage: python benchmarks/extract_throughput.py [--n 128] [--repeats 3] [--acc-size 112]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sktransfer import CNNFeatureExtractor, load_backbone  # noqa: E402
from sktransfer import _engine as engine_mod  # noqa: E402
from sktransfer._backbones import strip_head  # noqa: E402
from sktransfer._runtime import cpu_has_fast_bf16, engine_cache_dir  # noqa: E402
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "extract_throughput.txt"


def images_224(n, seed=0):
    """n Fashion-MNIST sample images as float (n, 224, 224, 3) in [0, 1]."""
    X, _ = load_fashion_mnist_sample(subset="all", return_X_y=True)
    X = X[np.random.default_rng(seed).permutation(len(X))[:n]]
    t = torch.from_numpy(X.astype(np.float32) / 255.0)[:, None]
    t = F.interpolate(t, size=(224, 224), mode="bilinear", antialias=True)
    return t.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()


def rel_max(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--acc-size", type=int, default=112)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    log = Log()
    say = log.say

    say(
        f"# extract_throughput  (CPU: {cpu_kind()}; torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, bf16 detection: {cpu_has_fast_bf16()}, "
        f"load average {os.getloadavg()[0]:.1f} at start on {os.cpu_count()} cores)"
    )
    Xf = images_224(args.n)
    bs = args.batch_size

    # ---- the extractor with its defaults, and explicit bf16
    ext = CNNFeatureExtractor(batch_size=bs, device="cpu").fit(Xf[:2])
    t0 = time.perf_counter()
    n_before = len(engine_mod.EXPORTS)
    engine = ext._get_engine()
    ready = time.perf_counter() - t0
    if len(engine_mod.EXPORTS) > n_before:
        how = f"exported in {list(engine_mod.EXPORTS.values())[-1]:.1f} s"
    else:
        how = "loaded from the on-disk cache"
    say(
        f"engine='auto', precision='auto' chose: {engine.kind} "
        f"(graph {how}; ready in {ready:.1f} s; cache {engine_cache_dir()})"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bf16 emulation warning, if any
        bf16 = CNNFeatureExtractor(batch_size=bs, device="cpu", precision="bf16")
        bf16.fit(Xf[:2])

    # ---- the plain loop: same weights, head removed (penultimate codes), eval mode
    net, prep = load_backbone("efficientnet_lite0", "imagenet")
    net = copy.deepcopy(net).eval()
    strip_head(net)
    net = net.to(memory_format=torch.channels_last)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    batches = [
        (torch.from_numpy(Xf[i : i + bs]).permute(0, 3, 1, 2) - mean) / std
        for i in range(0, len(Xf), bs)
    ]
    batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]

    def plain():
        out = []
        with torch.inference_mode():
            for b in batches:
                out.append(net(b))
        return torch.cat(out).numpy()

    def plain_small():
        # The same loop in batches of 4: on a small CPU the activations of a
        # small batch stay in the caches, so a user who tuned the batch size
        # gets more from the plain loop too (a stronger baseline, reported).
        out = []
        with torch.inference_mode():
            for b in batches:
                out.extend(net(c) for c in b.split(4))
        return torch.cat(out).numpy()

    runs = {
        "plain": plain,
        "plain4": plain_small,
        "auto": lambda: ext.transform(Xf),
        "bf16": lambda: bf16.transform(Xf),
    }
    codes = {name: run() for name, run in runs.items()}  # warm-up
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    ips = {name: args.n / statistics.median(t) for name, t in times.items()}
    say(
        f"lite0 224px batch {bs}, {args.n} images x {args.repeats} interleaved "
        f"repeats (medians)"
    )
    say(
        f"  plain fp32 loop (channels_last, inference_mode) : {ips['plain']:7.1f} img/s"
    )
    auto = f"CNNFeatureExtractor() (auto: {engine.kind})"
    say(f"  {auto:48s}: {ips['auto']:7.1f} img/s")
    say(f"  CNNFeatureExtractor(precision='bf16')           : {ips['bf16']:7.1f} img/s")
    say(f"  {'plain fp32 loop, batches of 4 (tuned)':48s}: {ips['plain4']:7.1f} img/s")
    ratio = ips["auto"] / ips["plain"]
    say(f"  {'ratio auto / plain':48s}: {ratio:7.2f}x  (target >= 3.0x)")
    tuned = ips["auto"] / ips["plain4"]
    say(f"  {'ratio auto / plain in batches of 4':48s}: {tuned:7.2f}x")
    say(f"  {'ratio bf16 / plain':48s}: {ips['bf16'] / ips['plain']:7.2f}x")
    say(
        f"  auto codes vs plain fp32: max |diff| / max |code| = "
        f"{rel_max(codes['auto'], codes['plain']):.1e} (target <= 1e-4), "
        f"relative L2 {rel_l2(codes['auto'], codes['plain']):.1e}"
    )
    say(
        f"  bf16 codes vs plain fp32: max |diff| / max |code| = "
        f"{rel_max(codes['bf16'], codes['plain']):.1e}, relative L2 "
        f"{rel_l2(codes['bf16'], codes['plain']):.1e}"
    )

    # ---- accuracy: auto vs fp32 eager vs bf16 on the bundled sample
    Xtr, ytr = load_fashion_mnist_sample(subset="train", return_X_y=True)
    Xte, yte = load_fashion_mnist_sample(subset="test", return_X_y=True)
    s = args.acc_size
    accs = {}
    for name, kw in (
        ("auto", {}),
        ("fp32 eager", {"precision": "fp32", "engine": "torch"}),
        ("bf16", {"precision": "bf16"}),
    ):
        fx = CNNFeatureExtractor(input_size=s, batch_size=bs, device="cpu", **kw)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Ztr = fx.fit_transform(Xtr)
            Zte = fx.transform(Xte)
        dt = time.perf_counter() - t0
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        accs[name] = clf.fit(Ztr, ytr).score(Zte, yte)
        say(
            f"  accuracy {name:10s} ({s}px codes, LogisticRegression, 1000 train / "
            f"1000 test): {accs[name]:.4f}  [{dt:.0f} s extraction, engine "
            f"{fx._get_engine().kind}]"
        )
    diff = (accs["auto"] - accs["fp32 eager"]) * 100
    say(f"  accuracy auto - fp32 eager : {diff:+.2f} points  (target 0)")
    diff = (accs["bf16"] - accs["fp32 eager"]) * 100
    say(f"  accuracy bf16 - fp32 eager : {diff:+.2f} points")
    say(f"# load average {os.getloadavg()[0]:.1f} at the end")
    log.save(RESULTS.name)
    print(f"written to {os.path.relpath(RESULTS)}")


if __name__ == "__main__":
    main()
