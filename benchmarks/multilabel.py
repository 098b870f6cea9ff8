"""Multi-label fine-tuning: FineTunedClassifier() on an indicator y vs codes +
OneVsRestClassifier(LogisticRegression()) vs a plain hand-written loop.

Task (``sktransfer.datasets.make_mosaics(target="tags")``): 2 x 2 mosaics of 2
to 4 Fashion-MNIST items of 1 to 3 distinct classes; the target is the 0/1
indicator of the classes present (10 labels). For each sample (``--seeds``; 300
training and 500 test mosaics):

* ``FineTunedClassifier()`` defaults (EfficientNet-Lite0 at 224 px, cosine
  head started per label, flip + translate, 4 cached views), fit on the
  indicator matrix;
* codes + ``OneVsRestClassifier(LogisticRegression(max_iter=1000))`` on
  ``CNNFeatureExtractor()`` codes (penultimate layer, 224 px);
* the plain loop: every layer of Lite0 trained with AdamW and binary
  cross-entropy for 15 epochs at 96 px (``_tasks.plain_loop``), threshold 0.5.

Prints micro- and macro-F1 and seconds per method, then the mean and spread
over the samples and each method's time over the plain loop's, with the CPU
kind. Run ``python benchmarks/multilabel.py [--seeds 0 1 2]``; writes
``benchmarks/results/multilabel.txt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402
from _tasks import fashion, plain_loop, sample_parser, timed  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sktransfer import CNNFeatureExtractor, FineTunedClassifier  # noqa: E402
from sktransfer._runtime import clear_caches  # noqa: E402
from sktransfer.datasets import make_mosaics  # noqa: E402

LOOP = "plain loop (15 ep, 96 px)"


def methods():
    return {
        "FineTunedClassifier()": lambda: FineTunedClassifier(random_state=0),
        "codes + OvR logistic": lambda: make_pipeline(
            CNNFeatureExtractor(),
            OneVsRestClassifier(LogisticRegression(max_iter=1000)),
        ),
    }


def main():
    parser = sample_parser(__doc__)
    args = parser.parse_args()
    X_all, y_all, source = fashion()
    log = Log()
    log.say(f"CPU: {cpu_kind()}")
    log.say(f"data: {source}; {args.n_train} train / {args.n_test} test mosaics")
    micro, macro, seconds = {}, {}, {}
    for seed in args.seeds:
        X, Y = make_mosaics(
            X_all,
            y_all,
            args.n_train + args.n_test,
            target="tags",
            random_state=2000 + seed,
        )
        Xtr, Ytr, Xte, Yte = (
            X[: args.n_train],
            Y[: args.n_train],
            X[args.n_train :],
            Y[args.n_train :],
        )
        runs = {name: timed(m, Xtr, Ytr, Xte) for name, m in methods().items()}
        if not args.no_loop:
            clear_caches()
            logits, sec = plain_loop(Xtr, Ytr, Xte, loss="bce", seed=seed)
            runs[LOOP] = ((logits > 0).astype(int), sec)
        for name, (pred, sec) in runs.items():
            mi = f1_score(Yte, pred, average="micro")
            ma = f1_score(Yte, pred, average="macro", zero_division=0)
            micro.setdefault(name, []).append(mi)
            macro.setdefault(name, []).append(ma)
            seconds.setdefault(name, []).append(sec)
            log.say(
                f"seed {seed}  {name:26s} micro-F1 {mi:.3f}  macro-F1 {ma:.3f}  "
                f"{sec:6.1f} s"
            )
    log.say(f"--- mean +- sd over {len(args.seeds)} samples")
    loop = seconds.get(LOOP)
    for name in micro:
        mi, ma, t = (
            np.array(micro[name]),
            np.array(macro[name]),
            np.array(seconds[name]),
        )
        sd = mi.std(ddof=1) if len(mi) > 1 else 0.0
        ratio = f"  {t.sum() / np.sum(loop):4.2f}x the loop's time" if loop else ""
        log.say(
            f"{name:26s} micro-F1 {mi.mean():.3f} +- {sd:.3f}  macro-F1 "
            f"{ma.mean():.3f}{ratio}"
        )
    log.save("multilabel.txt")


if __name__ == "__main__":
    main()
