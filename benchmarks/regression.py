"""Fine-tuning for real-valued targets: FineTunedRegressor() vs codes + RidgeCV
vs a plain hand-written fine-tuning loop, on real images.

Tasks (``sktransfer.datasets.make_rotated`` / ``make_mosaics``): the rotation
angle of a Fashion-MNIST item (a geometric target) and the number of items in a
2 x 2 mosaic (a count). For each task and sample (``--seeds``; 300 training and
500 test images each):

* ``FineTunedRegressor()``: the defaults (EfficientNet-Lite0 at 224 px, the
  last 4 stages trained, lr 1e-2, 15 epochs, no augmentation; chosen with
  ``--candidate`` runs on seeds 0 and 1, ``results/regression_candidates*.txt``);
* codes + RidgeCV: ``CNNFeatureExtractor()`` defaults (penultimate layer,
  224 px) + ``RidgeCV`` over 13 alphas;
* the plain loop: every layer of Lite0 trained with AdamW for 15 epochs at
  96 px (``_tasks.plain_loop``).

Prints test R² and fit + predict seconds per method, then the mean and spread
over the samples and each method's time over the plain loop's, with the CPU
kind. Run ``python benchmarks/regression.py [--seeds 2 3 4] [--n-train 300]``
(the default seeds are samples the defaults were not chosen on);
writes ``benchmarks/results/regression.txt``. ``--candidate "{'max_epochs':
15}"`` (repeatable) runs those parameter sets instead of the default methods,
to choose the defaults (``--out`` names the result file).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402
from _tasks import fashion, plain_loop, sample_parser, timed  # noqa: E402
from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sktransfer import CNNFeatureExtractor, FineTunedRegressor  # noqa: E402
from sktransfer._runtime import clear_caches  # noqa: E402
from sktransfer.datasets import make_mosaics, make_rotated  # noqa: E402

TASKS = {
    "rotation": lambda X, y, n, rng: make_rotated(X, n, random_state=rng),
    "count": lambda X, y, n, rng: make_mosaics(X, y, n, random_state=rng),
}


def methods(candidates=()):
    """The methods of one run; ``candidates`` adds ``FineTunedRegressor(**p)``
    for each parameter dict (``--candidate``), for choosing defaults."""
    extra = {
        f"  {p}": (lambda p=p: FineTunedRegressor(**{"random_state": 0, **p}))
        for p in candidates
    }
    return extra or {
        "FineTunedRegressor()": lambda: FineTunedRegressor(random_state=0),
        "codes + RidgeCV": lambda: make_pipeline(
            CNNFeatureExtractor(), RidgeCV(alphas=np.logspace(-3, 3, 13))
        ),
    }


def main():
    parser = sample_parser(__doc__)
    parser.set_defaults(seeds=[2, 3, 4])  # the defaults were chosen on 0 and 1
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument(
        "--candidate",
        type=ast.literal_eval,
        action="append",
        default=[],
        help="FineTunedRegressor parameters as a dict literal, instead of the "
        "default methods (repeatable)",
    )
    parser.add_argument("--out", default="regression.txt")
    args = parser.parse_args()
    X_all, y_all, source = fashion()
    log = Log()
    log.say(f"CPU: {cpu_kind()}")
    log.say(f"data: {source}; {args.n_train} train / {args.n_test} test per sample")
    for task in args.tasks:
        scores, seconds = {}, {}
        for seed in args.seeds:
            rng = np.random.RandomState(1000 + seed)
            X, y = TASKS[task](X_all, y_all, args.n_train + args.n_test, rng)
            Xtr, ytr, Xte, yte = (
                X[: args.n_train],
                y[: args.n_train],
                X[args.n_train :],
                y[args.n_train :],
            )
            runs = {
                name: timed(m, Xtr, ytr, Xte)
                for name, m in methods(args.candidate).items()
            }
            if not args.no_loop:
                clear_caches()
                runs["plain loop (15 ep, 96 px)"] = plain_loop(
                    Xtr, ytr, Xte, loss="mse", seed=seed
                )
            for name, (pred, sec) in runs.items():
                r2 = r2_score(yte, np.asarray(pred).reshape(yte.shape))
                scores.setdefault(name, []).append(r2)
                seconds.setdefault(name, []).append(sec)
                log.say(f"{task:9s} seed {seed}  {name:28s} R2 {r2:6.3f}  {sec:6.1f} s")
        log.say(f"--- {task}: mean +- sd over {len(args.seeds)} samples")
        loop = seconds.get("plain loop (15 ep, 96 px)")
        for name in scores:
            s, t = np.array(scores[name]), np.array(seconds[name])
            ratio = f"  {t.sum() / np.sum(loop):4.2f}x the loop's time" if loop else ""
            sd = s.std(ddof=1) if len(s) > 1 else 0.0
            log.say(f"{name:28s} R2 {s.mean():6.3f} +- {sd:5.3f}{ratio}")
    log.save(args.out)


if __name__ == "__main__":
    main()
