"""Few-shot benchmark: 5-way 1-shot and 5-shot on Fashion-MNIST novel classes 5-9.

Two protocols, each with the same episodes (``EpisodicSplit``, 15 queries per
class) and mean +/- 95% confidence interval over the episodes:

(a) ImageNet codes: EfficientNet-Lite0 pretrained on ImageNet (shipped offline),
    penultimate features of the novel-class images.
(b) The source documents' protocol: pretrain the backbone on the *base* classes
    0-4 of Fashion-MNIST with ``FineTunedClassifier`` (the ImageNet Lite0, all
    layers, a few hundred images, 2 epochs at the benchmark's size), export it
    with ``FineTunedClassifier.save_backbone`` and extract the novel-class codes
    with ``CNNFeatureExtractor(weights=that_file)``. (A smoke run before
    ``FineTunedClassifier`` recomputed BatchNorm statistics at the end of fit
    gave all-zero codes after 4 training batches: moving averages move 10 % per
    batch. fit now ends with exact statistics.) The export itself is exact (the
    extractor's codes equal the classifier's own features to 1e-5).

Heads compared on every episode: pixel LogisticRegression, PrototypeClassifier,
LogisticRegression on codes, CosineSoftmaxClassifier inductive and
transductive (the episode's unlabelled queries, marked -1, enter the entropy
term). Accuracy and log-loss of the queries.

Codes are extracted once per protocol (all novel images in one pass) and cached
in ``--cache-dir``. Full Fashion-MNIST is used when installed (Debian package
``dataset-fashion-mnist``), else the bundled sample. Results are printed and
written to ``benchmarks/results/fewshot.json``.

Run: ``python benchmarks/fewshot.py [--episodes 200] [--size 96]``.

Measured (2026-11-25, full Fashion-MNIST, 300 novel images per class, 96 px,
2-core Xeon, OMP_NUM_THREADS=1, 240 s for everything; 5-way, 15 queries per
class, 200 episodes per block, mean +- 95% CI; the transductive head uses
``entropy_weight=0.1, class_balance=1.0``; full output in
``benchmarks/results/fewshot.txt``)::

                                  (a) ImageNet codes       (b) base-pretrained
                                  accuracy    log-loss     accuracy    log-loss
    1-shot
    pixels + LogisticRegression   0.603±.012  1.07         0.603±.012  1.07
    codes + LogisticRegression    0.561±.014  1.13         0.418±.012  1.41
    PrototypeClassifier           0.655±.012  0.93         0.421±.010  1.34
    CosineSoftmax inductive       0.662±.012  0.92         0.476±.010  1.28
    CosineSoftmax transductive    0.790±.017  0.68         0.629±.014  1.08
    5-shot
    pixels + LogisticRegression   0.796±.007  0.58         0.796±.007  0.58
    codes + LogisticRegression    0.818±.007  0.50         0.685±.009  0.84
    PrototypeClassifier           0.837±.006  0.60         0.661±.009  1.02
    CosineSoftmax inductive       0.847±.006  0.46         0.709±.008  0.84
    CosineSoftmax transductive    0.892±.006  0.33         0.783±.008  0.61

What this says, honestly:

* Inductive fine-tuning of the cosine head (``W = M``, ``b = 0``, cross-
  entropy on the support set) adds little over the prototypes on ImageNet
  codes: +0.7 points in 1-shot (within the confidence interval) and +1.0 in
  5-shot (just outside it), so the target of +2 points in 5-shot is NOT met on
  ImageNet codes; on the weaker protocol (b) codes it adds +5.5 (1-shot) and
  +4.8 (5-shot). The support set carries no information the prototypes do not
  already use (in 1-shot each prototype *is* the support example); fine-tuning
  a linear head can only reweight feature directions, which 5-25 examples
  cannot estimate when the prototypes are already good. It does improve the
  log-loss (0.60 -> 0.46 in 5-shot: better calibrated probabilities).
* The gain of "fine-tuning" comes from the transductive entropy term: +13.5
  points in 1-shot on ImageNet codes. But only with the class-balance
  (marginal entropy) term: entropy minimization *alone* lowered accuracy
  (1-shot, 20-episode probe: 0.645 -> 0.612, log-loss 0.95 -> 1.77) because
  the cheapest way to make queries confident is to send many of them to one
  class; ``class_balance`` (transductive information maximization) fixes it.
  In 5-shot: +5.5 points and log-loss 0.60 -> 0.33 over the prototypes.
* Protocol (b) (``FineTunedClassifier``, all layers, 2 epochs on 1,000 images
  of the base classes, exported with ``save_backbone``) gives *worse* codes
  than ImageNet (prototypes 0.421 vs 0.655 in 1-shot): a short fine-tune on 5
  base classes specializes the penultimate features to separating those 5
  classes and loses the general ImageNet features. The recipe's premise is a
  *large, diverse* pretraining set without the new classes; 5 Fashion-MNIST
  classes are not that. On such a small base set, keep the ImageNet backbone
  (or fine-tune far more gently).
* LogisticRegression on 1,280-d codes is below the prototypes and even below
  pixels in 1-shot: with one example per class it has nothing to regularize
  towards, while the prototype is the natural estimate.
"""

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
)
from sktransfer.datasets import load_fashion_mnist, load_fashion_mnist_sample
from sktransfer.model_selection import EpisodicSplit, summarize_scores

BASE, NOVEL = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


def load_data(n_novel, n_base, seed=0):
    """Novel-class images from the test part, base-class images from the train part."""
    try:
        X_tr, y_tr = load_fashion_mnist(subset="train", return_X_y=True)
        X_te, y_te = load_fashion_mnist(subset="test", return_X_y=True)
        source = "full Fashion-MNIST"
    except FileNotFoundError:
        X_tr, y_tr = load_fashion_mnist_sample(subset="train", return_X_y=True)
        X_te, y_te = load_fashion_mnist_sample(subset="test", return_X_y=True)
        source = "bundled Fashion-MNIST sample"
    rng = np.random.default_rng(seed)

    def take(X, y, classes, n):
        idx = np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[:n] for c in classes]
        )
        return X[idx], y[idx]

    return take(X_te, y_te, NOVEL, n_novel), take(X_tr, y_tr, BASE, n_base), source


def pretrain_on_base(X, y, size, epochs, path, seed=0):
    """Fine-tune ImageNet Lite0 on the base classes (all layers) and save it.

    The head learns at ``lr``, the pretrained body at ``lr / 10``
    (``FineTunedClassifier``'s default); random flips as augmentation.
    """
    clf = FineTunedClassifier(
        model="efficientnet_lite0",
        weights="imagenet",
        input_size=size,
        train_layers="all",
        max_epochs=epochs,
        lr=1e-3,
        weight_decay=1e-4,
        augment="flip",
        random_state=seed,
        verbose=1,  # skorch's epoch table: train loss and accuracy per epoch
    )
    clf.fit(X, y)
    print(
        f"  pretraining: {clf.n_epochs_} epochs, "
        f"{clf.n_trainable_params_:,} trained parameters"
    )
    return clf.save_backbone(path)


def codes(weights, X, size):
    ext = CNNFeatureExtractor(
        model="efficientnet_lite0", weights=weights, input_size=size, batch_size=64
    )
    return ext.fit_transform(X)


def heads(entropy_weight, class_balance):
    return {
        "pixels + LogisticRegression": ("pixels", LogisticRegression(max_iter=1000)),
        "codes + LogisticRegression": ("codes", LogisticRegression(max_iter=1000)),
        "PrototypeClassifier": ("codes", PrototypeClassifier(scale=10.0)),
        "CosineSoftmax inductive": ("codes", CosineSoftmaxClassifier(scale=10.0)),
        "CosineSoftmax transductive": (
            "codes+query",
            CosineSoftmaxClassifier(
                scale=10.0,
                unlabeled_label=-1,
                entropy_weight=entropy_weight,
                class_balance=class_balance,
            ),
        ),
    }


def run_episodes(
    pixels, Z, y, k_shot, n_episodes, entropy_weight, class_balance, seed=0
):
    cv = EpisodicSplit(
        n_way=5, k_shot=k_shot, n_query=15, n_episodes=n_episodes, random_state=seed
    )
    table = {
        name: {"accuracy": [], "log_loss": []}
        for name in heads(entropy_weight, class_balance)
    }
    for support, query in cv.split(Z, y):
        for name, (inputs, clf) in heads(entropy_weight, class_balance).items():
            if inputs == "pixels":
                clf.fit(pixels[support], y[support])
                Xq = pixels[query]
            elif inputs == "codes":
                clf.fit(Z[support], y[support])
                Xq = Z[query]
            else:
                X_fit = np.vstack([Z[support], Z[query]])
                y_fit = np.concatenate([y[support], np.full(len(query), -1)])
                clf.fit(X_fit, y_fit)
                Xq = Z[query]
            proba = clf.predict_proba(Xq)
            pred = clf.classes_[proba.argmax(1)]
            table[name]["accuracy"].append(float(np.mean(pred == y[query])))
            table[name]["log_loss"].append(
                float(log_loss(y[query], proba, labels=clf.classes_))
            )
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--n-novel", type=int, default=300, help="images per class")
    parser.add_argument("--n-base", type=int, default=200, help="images per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--entropy-weight", type=float, default=0.1)
    parser.add_argument("--class-balance", type=float, default=1.0)
    parser.add_argument("--protocols", default="ab", help="'a', 'b' or 'ab'")
    parser.add_argument("--shots", default="1,5", help="comma-separated k values")
    parser.add_argument(
        "--cache-dir", default=str(Path(tempfile.gettempdir()) / "sktransfer_fewshot")
    )
    parser.add_argument("--out", default="benchmarks/results/fewshot.json")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    t0 = time.perf_counter()
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    (X_nov, y_nov), (X_base, y_base), source = load_data(args.n_novel, args.n_base)
    print(
        f"data: {source}; novel pool {len(X_nov)} images (classes 5-9), "
        f"base {len(X_base)} images (classes 0-4); {args.size} px"
    )
    tag = (
        f"{source.split()[0]}_{args.size}_{args.n_novel}_{args.n_base}_"
        f"{args.epochs}_ft"
    )  # _ft: pretrained with FineTunedClassifier
    codes_file = cache / f"codes_{tag}.npz"
    if codes_file.exists():
        loaded = np.load(codes_file)
        Z = {"a": loaded["a"], "b": loaded["b"]}
        print(f"codes loaded from {codes_file}")
    else:
        t = time.perf_counter()
        Z = {"a": codes("imagenet", X_nov, args.size)}
        print(f"(a) ImageNet codes {Z['a'].shape} in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        weights = pretrain_on_base(
            X_base, y_base, args.size, args.epochs, cache / f"lite0_base_{tag}.pt"
        )
        print(f"(b) pretraining on classes 0-4 took {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        Z["b"] = codes(str(weights), X_nov, args.size)
        print(
            f"(b) base-pretrained codes {Z['b'].shape} in "
            f"{time.perf_counter() - t:.0f} s"
        )
        np.savez(codes_file, **Z)
    pixels = X_nov.reshape(len(X_nov), -1) / 255.0

    results = {
        "source": source,
        "size": args.size,
        "episodes": args.episodes,
        "entropy_weight": args.entropy_weight,
        "class_balance": args.class_balance,
        "protocols": {},
    }
    names = {
        "a": "(a) ImageNet Lite0 codes",
        "b": "(b) Lite0 pretrained on classes 0-4",
    }
    for proto in args.protocols:
        for k in [int(v) for v in args.shots.split(",")]:
            t = time.perf_counter()
            table = run_episodes(
                pixels,
                Z[proto],
                y_nov,
                k,
                args.episodes,
                args.entropy_weight,
                args.class_balance,
            )
            print(
                f"\n{names[proto]}: 5-way {k}-shot, {args.episodes} episodes, "
                f"15 queries/class ({time.perf_counter() - t:.0f} s)"
            )
            print(
                f"  {'head':30s} {'accuracy (95% CI)':>20s} {'log-loss (95% CI)':>20s}"
            )
            rows = {}
            for name, scores in table.items():
                acc = summarize_scores(scores["accuracy"])
                ll = summarize_scores(scores["log_loss"])
                rows[name] = {"accuracy": acc._asdict(), "log_loss": ll._asdict()}
                print(f"  {name:30s} {str(acc):>20s} {str(ll):>20s}")
            results["protocols"][f"{proto}_{k}shot"] = rows
    total = time.perf_counter() - t0
    results["seconds"] = total
    print(f"\ntotal {total:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
