"""Choose ``FineTunedClassifier()``'s defaults on several samples and tasks; report
them on samples the choice never saw.

Issue 23's protocol: at most 8 candidates (each a few parameters over the
current defaults, ``CANDIDATES``), every one scored against CNN codes +
LogisticRegression on the same sample (the gain, in points):

- ``--stage select``: every candidate on 3 samples of Fashion-MNIST at 20 images
  per class and of scikit-learn's digits at 20 per class; the best 4 (mean gain
  over those 6 samples) then on 3 Fashion-MNIST samples at 100 per class and 3
  multi-label mosaic samples (micro-F1). Selection samples: seeds 10, 11, 12;
  Fashion-MNIST test images 0 .. 499. Output ``results/defaults_selection.txt``.
- ``--stage final --candidates a b``: the named candidates (the current
  defaults and the chosen one) on samples never used to choose: seeds 20, 21,
  22 and Fashion-MNIST test images 5000 .. 5999 (digits: the same held-out
  digits, new training samples), plus one 500-per-class sample (seed 20).
  Output ``results/defaults_final.txt``.

Every fit also reports, from the same fit and predictions: the log-loss and
the expected calibration error (ECE, 15 equal-width confidence bins) of
``predict_proba``, before (temperature 1) and after temperature scaling where
the candidate holds out a validation split, and, for the candidates named by
``--tta-for``, the accuracy and predict time of ``tta="flip"`` and ``tta=4``
beside ``tta=None`` (the same fitted model: test-time augmentation is a
prediction setting).

Run: ``python benchmarks/defaults_selection.py --stage select`` (about 30
minutes on 2 cores) then ``--stage final --candidates defaults <winner>``.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from _bench import Log, cpu_kind, ece, softmax
from _tasks import fashion
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, log_loss
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import CNNFeatureExtractor, FineTunedClassifier
from sktransfer._runtime import clear_caches
from sktransfer.datasets import load_fashion_mnist, make_mosaics

CANDIDATES = {
    "defaults": {},
    "no_flip": {"augment": ["translate"]},
    "train4": {"train_layers": 4},
    "epochs12": {"max_epochs": 12},
    "lr1e-2": {"lr": 1e-2},
    "smooth0.1": {"label_smoothing": 0.1},
    "views8": {"augment_views": 8},
    "early_stop": {"early_stopping": True},
}
SELECT_SEEDS, FINAL_SEEDS = (10, 11, 12), (20, 21, 22)


def draw(y, per_class, seed, pool=None):
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y)) if pool is None else pool
    return np.concatenate(
        [rng.choice(rows[y[rows] == c], per_class, replace=False) for c in np.unique(y)]
    )


class Tasks:
    """The samples: ``(X, y, X_test, y_test)`` per task, sample and stage."""

    def __init__(self, final):
        self.final = final
        self.Xf, self.yf, self.source = fashion()
        Xte, yte = load_fashion_mnist(subset="test", return_X_y=True)
        rows = slice(5000, 6000) if final else slice(0, 500)
        self.Xf_test, self.yf_test = Xte[rows], yte[rows]
        d = load_digits()
        X = (d.images / 16 * 255).astype(np.uint8)
        self.Xd, self.yd = X, d.target
        self.digits_pool = np.arange(1200)  # training samples come from here
        self.digits_test = np.arange(1200, len(X))

    def fashion(self, per_class, seed):
        idx = draw(self.yf, per_class, seed)
        return self.Xf[idx], self.yf[idx], self.Xf_test, self.yf_test

    def digits(self, seed):
        idx = draw(self.yd, 20, seed, self.digits_pool)
        t = self.digits_test
        return self.Xd[idx], self.yd[idx], self.Xd[t], self.yd[t]

    def mosaics(self, seed):
        X, Y = make_mosaics(
            self.Xf, self.yf, 600, target="tags", random_state=3000 + seed
        )
        return X[:300], Y[:300], X[300:], Y[300:]


def codes_baseline(X, y, X_test, y_test, multilabel):
    """CNN codes (EfficientNet-Lite0, ImageNet, 224 px) + logistic regression."""
    clear_caches()
    t = time.perf_counter()
    ext = CNNFeatureExtractor(model="efficientnet_lite0")
    head = LogisticRegression(max_iter=3000, C=0.1)
    if multilabel:
        head = OneVsRestClassifier(LogisticRegression(max_iter=3000))
    model = make_pipeline(ext, StandardScaler(), head).fit(X, y)
    pred = model.predict(X_test)
    score = (
        f1_score(y_test, pred, average="micro")
        if multilabel
        else (pred == y_test).mean()
    )
    return score, time.perf_counter() - t


def finetune(params, X, y, X_test, y_test, seed, multilabel, tta):
    """One fit; the score, calibration and the test-time augmentation columns."""
    clear_caches()
    t = time.perf_counter()
    clf = FineTunedClassifier(**params, random_state=seed).fit(X, y)
    out = {"fit_s": time.perf_counter() - t}
    t = time.perf_counter()
    logits = clf.decision_function(X_test)  # one pass; proba follow from it
    out["predict_s"] = time.perf_counter() - t
    if multilabel:
        out["score"] = f1_score(y_test, (logits > 0).astype(int), average="micro")
        return out
    pred = clf.classes_[logits.argmax(1)]
    out["score"] = (pred == y_test).mean()
    raw, proba = softmax(logits), softmax(logits / clf.temperature_)
    out["T"] = clf.temperature_
    out["ll_raw"], out["ece_raw"] = (
        log_loss(y_test, raw, labels=clf.classes_),
        ece(raw, y_test),
    )
    out["ll"], out["ece"] = (
        log_loss(y_test, proba, labels=clf.classes_),
        ece(proba, y_test),
    )
    if tta:
        for views in ("flip", 4):
            t = time.perf_counter()
            out[f"tta_{views}"] = clf.set_params(tta=views).score(X_test, y_test)
            out[f"tta_{views}_s"] = time.perf_counter() - t
    return out


def row_text(name, task, seed, base, out):
    text = (
        f"{task:11s} seed {seed} {name:11s} score {out['score']:.3f} codes "
        f"{base:.3f} gain {100 * (out['score'] - base):+5.1f}  fit "
        f"{out['fit_s']:5.1f}s predict {out['predict_s']:4.1f}s"
    )
    if "ll" in out:
        text += (
            f"  logloss {out['ll_raw']:.3f}->{out['ll']:.3f} ECE "
            f"{out['ece_raw']:.3f}->{out['ece']:.3f} (T {out['T']:.2f})"
        )
    for views in ("flip", 4):
        if f"tta_{views}" in out:
            text += (
                f"  tta={views!r} {out[f'tta_{views}']:.3f} "
                f"({out[f'tta_{views}_s']:.1f}s)"
            )
    return text


def evaluate(log, tasks, names, task_list, seeds, tta_for, results, save_as):
    for task in task_list:
        for seed in seeds:
            if task == "fashion20":
                data = tasks.fashion(20, seed)
            elif task == "fashion100":
                data = tasks.fashion(100, seed)
            elif task == "fashion500":
                data = tasks.fashion(500, seed)
            elif task == "digits20":
                data = tasks.digits(seed)
            else:
                data = tasks.mosaics(seed)
            multilabel = task == "mosaic_tags"
            base, base_s = codes_baseline(*data, multilabel)
            log.say(
                f"{task:11s} seed {seed} codes+LR    score {base:.3f} ({base_s:.1f}s)"
            )
            for name in names:
                out = finetune(
                    CANDIDATES[name], *data, seed, multilabel, name in tta_for
                )
                out["gain"] = out["score"] - base
                results.setdefault((name, task), []).append(out)
                log.say(row_text(name, task, seed, base, out))
            log.save(save_as)  # a partial run keeps what it measured


def summary(log, results, names, tasks_seen):
    """Per candidate and task, the gain's mean +- sd; ``common``: the mean of
    the per-task means over the tasks every candidate ran (the selection's
    criterion: each task weighs the same, whatever its number of samples)."""
    common = [t for t in tasks_seen if all((n, t) in results for n in names)]
    log.say("\n--- mean +- sd of the gain over codes + LR, in points")
    head = "".join(f"{t:>16s}" for t in tasks_seen)
    log.say(f"{'candidate':12s}{head}{'common':>10s}   fit s (mean)")
    means = {}
    for name in names:
        cells, fits = "", []
        for task in tasks_seen:
            outs = results.get((name, task))
            if not outs:
                cells += f"{'-':>16s}"
                continue
            g = 100 * np.array([o["gain"] for o in outs])
            fits.extend(o["fit_s"] for o in outs)
            cells += f"{g.mean():+9.1f} +- {g.std():.1f}"
        means[name] = float(
            np.mean([np.mean([o["gain"] for o in results[(name, t)]]) for t in common])
            * 100
        )
        log.say(f"{name:12s}{cells}{means[name]:+10.1f}   {np.mean(fits):6.1f}")
    log.say(f"common: the mean of the per-task means over {', '.join(common)}")
    return means


ROW = re.compile(
    r"^(?P<task>\S+)\s+seed (?P<seed>\d+) (?P<name>\S+)\s+score (?P<score>[\d.]+) "
    r"codes (?P<base>[\d.]+) gain\s+(?P<gain>[-+\d.]+)\s+fit\s+(?P<fit>[\d.]+)s"
    r"(?:.*?tta='flip' (?P<flip>[\d.]+).*?tta=4 (?P<tta4>[\d.]+))?"
)


def merge(paths, log):
    """The summary of the rows of several results files (parts run side by
    side): gains over codes + LR, and the test-time augmentation's."""
    results = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.startswith(("CPU:", "data:")):
                log.say(f"{Path(path).name}: {line}")
            m = ROW.match(line)
            if not m:
                continue
            out = {
                "gain": float(m["score"]) - float(m["base"]),
                "fit_s": float(m["fit"]),
            }
            if m["flip"]:
                out["flip"] = float(m["flip"]) - float(m["score"])
                out["tta4"] = float(m["tta4"]) - float(m["score"])
            results.setdefault((m["name"], m["task"]), []).append(out)
            log.say(line)
    names = list(dict.fromkeys(n for n, _ in results))
    tasks_seen = list(dict.fromkeys(t for _, t in results))
    summary(log, results, names, tasks_seen)
    log.say("\n--- test-time augmentation: accuracy gain over tta=None, in points")
    for (name, task), outs in results.items():
        flips = [100 * o["flip"] for o in outs if "flip" in o]
        if flips:
            t4 = [100 * o["tta4"] for o in outs if "tta4" in o]
            log.say(
                f"{name:12s}{task:12s} tta='flip' {np.mean(flips):+.1f} +- "
                f"{np.std(flips):.1f}   tta=4 {np.mean(t4):+.1f} +- {np.std(t4):.1f}"
                f"   ({len(flips)} samples)"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["select", "final"], default="select")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--tta-for", nargs="*", default=["defaults"])
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--no-500", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tasks", nargs="*", default=None, help="these tasks only")
    parser.add_argument("--out", default=None, help="results file name")
    parser.add_argument("--merge", nargs="*", default=None, help="results files")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    args = parser.parse_args()
    if args.merge:
        log = Log()
        log.say(f"merged from {', '.join(Path(p).name for p in args.merge)}")
        log.say(
            "fit s: wall seconds of fits that shared the machine with other runs "
            "(their CPU kind and load are in the merged files): not a comparison "
            "of cost; test-time augmentation's cost is in finetune_cost.txt"
        )
        merge(args.merge, log)
        log.save(args.out or "defaults_summary.txt")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    final = args.stage == "final"
    tasks = Tasks(final)
    log = Log()
    save_as = args.out or ("defaults_final.txt" if final else "defaults_selection.txt")
    log.say(
        f"CPU: {cpu_kind()}; torch threads {torch.get_num_threads()}; load average "
        f"{os.getloadavg()}"
    )
    log.say(
        f"data: {tasks.source}; Fashion-MNIST test images "
        f"{'5000..5999 (never used to choose)' if final else '0..499'}; digits: "
        f"1,200 for training samples, {len(tasks.digits_test)} held out"
    )
    log.say(f"candidates: { {n: CANDIDATES[n] for n in args.candidates} }")
    results = {}
    if final:
        seeds, names = args.seeds or FINAL_SEEDS, args.candidates
        task_list = args.tasks or ["fashion20", "digits20", "fashion100", "mosaic_tags"]
        evaluate(log, tasks, names, task_list, seeds, args.tta_for, results, save_as)
        if not args.no_500:
            evaluate(
                log,
                tasks,
                names,
                ["fashion500"],
                seeds[:1],
                args.tta_for,
                results,
                save_as,
            )
            task_list.append("fashion500")
        summary(log, results, names, task_list)
    elif args.tasks:  # one part of the selection (run parts side by side)
        names = args.candidates
        evaluate(
            log, tasks, names, args.tasks, SELECT_SEEDS, args.tta_for, results, save_as
        )
        summary(log, results, names, args.tasks)
    else:
        seeds = SELECT_SEEDS
        first = ["fashion20", "digits20"]
        evaluate(
            log, tasks, args.candidates, first, seeds, args.tta_for, results, save_as
        )
        means = summary(log, results, args.candidates, first)
        top = sorted(means, key=means.get, reverse=True)[: args.top]
        if "defaults" not in top:
            top.append("defaults")
        log.say(f"\nbest {args.top} on 20 per class: {top}")
        second = ["fashion100", "mosaic_tags"]
        evaluate(log, tasks, top, second, seeds, args.tta_for, results, save_as)
        summary(log, results, top, first + second)
    log.say(f"load average at end {os.getloadavg()}")
    log.save(save_as)


if __name__ == "__main__":
    main()
