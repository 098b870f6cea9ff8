"""What fine-tuning costs, in forward passes: codes+LR, defaults, recipe, a grid.

Fashion-MNIST, 20 training images per class (200 images, drawn with seed 0),
the first 1,000 test images, EfficientNet-Lite0 ImageNet weights at 224 px.
Every cost is a wall time divided by the *unit*: one
``CNNFeatureExtractor(input_size=224).fit_transform`` pass over the same 200
images, measured in the same run (the median of the passes timed between the
other rows, so that a change of machine load shows in the unit too).

Rows (the targets of issue 13 in brackets):

- CNN codes + LogisticRegression (1 pass);
- ``FineTunedClassifier()`` with every default [>= 0.82, <= 15 passes], with
  its calibration (log-loss and expected calibration error of
  ``predict_proba``) and its accuracy and predict time with test-time
  augmentation (``tta="flip"``, ``tta=4``) beside ``tta=None``;
- the defaults with ``early_stopping=True``: temperature scaling fit on the
  validation split (calibration before / after);
- the low-data recipe below [<= 12 passes];
- ``GridSearchCV(FineTunedClassifier(**RECIPE), {"train_layers": ["head", 4],
  "lr": [1e-3, 3e-3]}, cv=2)`` [<= 2 recipe fits];
- the recipe with ``cache=False`` [accuracy within 0.5 points of the cached fit].

Each fit starts with empty in-process caches (``clear_caches``), except inside
the grid, whose folds and candidates are meant to share the frozen part.

Run: ``python benchmarks/finetune_cost.py [--skip-uncached] [--threads N]``;
writes ``benchmarks/results/finetune_cost.txt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sktransfer import CNNFeatureExtractor, FineTunedClassifier  # noqa: E402
from sktransfer._activations import FORWARDS  # noqa: E402
from sktransfer._runtime import clear_caches  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "finetune_cost.txt"

# The low-data recipe of the fine-tuning guide: one definition, in fashion_lowdata.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import Log, cpu_kind, ece, softmax  # noqa: E402
from fashion_lowdata import RECIPE  # noqa: E402


def load():
    from sktransfer.datasets import load_fashion_mnist

    Xtr, ytr = load_fashion_mnist(subset="train", return_X_y=True)
    Xte, yte = load_fashion_mnist(subset="test", return_X_y=True)
    rng = np.random.default_rng(0)
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(ytr == c), 20, replace=False) for c in range(10)]
    )
    return Xtr[idx], ytr[idx], Xte[:1000], yte[:1000]


def predict_columns(say, clf, Xte, yte, tta=True):
    """Calibration (log-loss, ECE of predict_proba, before / after the
    temperature) and test-time augmentation (accuracy, predict time against
    the plain predict's) of a fitted model, on the test images."""
    t = time.perf_counter()
    logits = clf.decision_function(Xte)
    plain_s = time.perf_counter() - t
    raw, proba = softmax(logits), softmax(logits / clf.temperature_)
    say(
        f"    calibration: log-loss {log_loss(yte, raw):.3f} -> "
        f"{log_loss(yte, proba):.3f}, ECE {ece(raw, yte):.3f} -> "
        f"{ece(proba, yte):.3f} (temperature_ {clf.temperature_:.2f})"
    )
    if not tta:
        return
    for views in ("flip", 4):
        t = time.perf_counter()
        acc = clf.set_params(tta=views).score(Xte, yte)
        seconds = time.perf_counter() - t
        say(
            f"    tta={views!r}: acc {acc:.3f} (tta=None "
            f"{(logits.argmax(1) == yte).mean():.3f}), predict {seconds:.1f} s = "
            f"{seconds / plain_s:.1f}x tta=None's {plain_s:.1f} s"
        )
    clf.set_params(tta=None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-uncached", action="store_true")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    X, y, Xte, yte = load()
    log = Log()
    say = log.say

    say(f"CPU: {cpu_kind()}; torch threads {torch.get_num_threads()}")
    say(f"load average at start: {os.getloadavg()}")
    units = []

    def unit_pass():
        clear_caches()
        ext = CNNFeatureExtractor(model="efficientnet_lite0", input_size=224)
        t = time.perf_counter()
        codes = ext.fit_transform(X)
        units.append(time.perf_counter() - t)
        return ext, codes

    unit_pass()  # warm-up: loads the weights, first-call overheads
    units.clear()
    rows = []

    # codes + LR
    ext, codes = unit_pass()
    t = time.perf_counter()
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    lr.fit(codes, y)
    lr_s = units[-1] + time.perf_counter() - t
    rows.append(
        ("CNN codes + LogisticRegression", lr.score(ext.transform(Xte), yte), lr_s)
    )

    def fit_row(name, est, fresh=True):
        unit_pass()
        if fresh:
            clear_caches()
        FORWARDS.clear()
        t = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - t
        acc = est.score(Xte, yte)
        rows.append((name, acc, seconds))
        say(
            f"  {name}: acc {acc:.3f}, fit {seconds:.1f} s, prefix forwards "
            f"{FORWARDS['prefix']} images"
        )
        return est

    defaults = fit_row(
        "FineTunedClassifier() defaults", FineTunedClassifier(random_state=0)
    )
    say(f"  defaults' policy_: {defaults.policy_}")
    predict_columns(say, defaults, Xte, yte)
    calibrated = fit_row(
        "defaults, early_stopping=True",
        FineTunedClassifier(early_stopping=True, random_state=0),
    )
    predict_columns(say, calibrated, Xte, yte, tta=False)
    fit_row("recipe (cached)", FineTunedClassifier(**RECIPE, random_state=0))
    recipe_s = rows[-1][2]
    if not args.skip_grid:
        grid = GridSearchCV(
            FineTunedClassifier(**RECIPE, random_state=0),
            {"train_layers": ["head", 4], "lr": [1e-3, 3e-3]},
            cv=2,
        )
        fit_row("GridSearchCV 4 candidates x 2 folds + refit", grid)
        say(f"  grid best: {grid.best_params_}")
    if not args.skip_uncached:
        fit_row(
            "recipe, cache=False",
            FineTunedClassifier(**RECIPE, cache=False, random_state=0),
        )
    unit_pass()
    unit = float(np.median(units))
    say(
        f"unit = one fit_transform pass over the 200 images: median {unit:.2f} s "
        f"of {len(units)} ({', '.join(f'{u:.1f}' for u in units)})"
    )
    say(f"load average at end: {os.getloadavg()}")
    say("")
    say(f"{'what':<46} {'test acc':>8} {'passes':>7} {'recipe fits':>11}")
    for name, acc, seconds in rows:
        say(
            f"{name:<46} {acc:>8.3f} {seconds / unit:>7.1f} {seconds / recipe_s:>11.2f}"
        )
    log.save(RESULTS.name)


if __name__ == "__main__":
    main()
