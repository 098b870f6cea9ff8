"""
Fine-tuning strategies with GridSearchCV
========================================

A pretrained network can be reused in three ways, and the usual rule of thumb
([CS231n]_, :ref:`techniques`) says when to choose which:

* **freeze everything but the head** (a *linear probe*): the ImageNet body is a
  fixed feature extractor and only a new classifier is trained; safest with very
  little data;
* **fine-tune only the last layers**: the early layers (edges, textures) are
  generic and stay frozen, the later, more ImageNet-specific ones adapt to the
  new classes;
* **fine-tune all layers**: most flexible, most parameters, most risk of
  overfitting a small training set.

Fine-tuning should use a **smaller learning rate** than training from scratch,
so that the pretrained weights are adjusted, not overwritten.

:class:`~sktransfer.FineTunedClassifier` exposes all of this as flat parameters
(``train_layers``, ``lr`` for the new head, ``backbone_lr`` for the trained body
layers), so the choice is an ordinary hyper-parameter search with
:class:`~sklearn.model_selection.GridSearchCV`. Every fit, fold and refit starts
again from the clean ImageNet weights of EfficientNet-Lite0 (shipped offline).
"""

# %%
# Data: 20 Fashion-MNIST images per class
# ---------------------------------------
# A small training set (the first 20 images of each class of the bundled sample)
# keeps this page fast on a CPU, and small data is the regime the rule of thumb
# is about. The 1,000 images of the bundled test subset are kept apart for the
# final score.
import os
import platform
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sktransfer import FineTunedClassifier
from sktransfer.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist_sample

# Small networks on a shared 2-core CPU: one thread per process is fastest.
torch.set_num_threads(1)


def machine():
    """CPU model and native bf16 support: fit times depend on both."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.machine()
    model = re.search(r"model name\s*:\s*(.*)", info)
    bf16 = re.search(r"\b(amx_bf16|avx512_bf16)\b", info)
    return (
        f"{model.group(1) if model else platform.machine()}, "
        f"{'with' if bf16 else 'without'} native bf16, {os.cpu_count()} cores"
    )


print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")

X, y = load_fashion_mnist_sample(return_X_y=True)
X_test, y_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
train = np.concatenate([np.flatnonzero(y == c)[:20] for c in range(10)])
X_train, y_train = X[train], y[train]
print(f"train {X_train.shape}, test {X_test.shape}, classes {FASHION_MNIST_CLASSES}")

# %%
# The grid
# --------
# ``train_layers`` takes ``"head"`` (linear probe), an int ``k`` (the last ``k``
# stages of the body: for EfficientNet-Lite0 the stages are ``conv_stem, bn1,
# blocks.0 .. blocks.6, conv_head, bn2``, so ``k=4`` trains ``blocks.5`` onwards)
# or ``"all"``. The head always learns at ``lr=1e-2``; the trained body layers
# either at a smaller rate (``backbone_lr=1e-3``, the usual advice) or at
# the head's own rate (``backbone_lr=1e-2``). A
# linear probe has no trained body layer, so it needs no ``backbone_lr``: a list
# of grids avoids fitting it twice.
#
# One more candidate is a control, not a strategy: the last four stages with
# ``backbone_lr=0``. Their weights never move, so it differs from the linear
# probe in one thing only: with the default ``bn="frozen"`` the BatchNorm layers
# of trained stages run in training mode (each batch normalized by its own
# statistics) and their statistics are recomputed on the training images at the
# end of ``fit``.
finetuner = FineTunedClassifier(
    model="efficientnet_lite0",
    input_size=64,  # small and fast; 224 is the weights' own size
    lr=1e-2,
    max_epochs=3,
    precision="fp32",  # a technique, not a speed test: the same on every CPU
    random_state=0,
)
param_grid = [
    {"train_layers": ["head"]},
    {"train_layers": [4, "all"], "backbone_lr": [1e-3, 1e-2]},
    {"train_layers": [4], "backbone_lr": [0.0]},  # control: BatchNorm mode only
]
cv = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
search = GridSearchCV(finetuner, param_grid, cv=cv, n_jobs=2)  # one fit per core

start = time.perf_counter()
search.fit(X_train, y_train)
print(
    f"grid search, {len(search.cv_results_['params'])} candidates x "
    f"{cv.get_n_splits()} folds + refit: {time.perf_counter() - start:.0f} s"
)

results = search.cv_results_
for params, mean, std, fit_s in zip(
    results["params"],
    results["mean_test_score"],
    results["std_test_score"],
    results["mean_fit_time"],
    strict=True,
):
    print(f"{params!s:45s} CV accuracy {mean:.3f} +- {std:.3f}   fit {fit_s:.1f} s")

best = search.best_estimator_
test_score = search.score(X_test, y_test)
print(
    f"best: {search.best_params_}, CV {search.best_score_:.3f}; "
    f"refit on all {len(X_train)} images: test accuracy {test_score:.3f} "
    f"({best.n_trainable_params_:,} parameters trained)"
)

# %%
# Mean CV accuracy per strategy
# -----------------------------
# Bars are the mean accuracy over the folds, error bars one standard deviation
# over the folds; the star marks the candidate refit on all the training images,
# at its accuracy on the 1,000 test images. On the right, the mean wall-clock
# time of one fit (on a shared CPU, so only roughly comparable).


def label(params):
    layers = params["train_layers"]
    what = {"head": "head only (linear probe)", "all": "all layers"}.get(
        layers, f"last {layers} stages"
    )
    if params.get("backbone_lr") == 0:
        what += "\nbody lr 0 (control)"
    elif "backbone_lr" in params:
        what += f"\nbody lr {params['backbone_lr']:g}, head lr 0.01"
    return what


n_folds = cv.get_n_splits()
names = [label(p) for p in results["params"]]
color_of = {None: "C0", 0.0: "C7", 1e-3: "C2", 1e-2: "C3"}
colors = [color_of[p.get("backbone_lr")] for p in results["params"]]
pos = np.arange(len(names))[::-1]  # first candidate on top
fig, (ax, ax_time) = plt.subplots(
    1, 2, figsize=(10, 4.2), sharey=True, gridspec_kw={"width_ratios": [2.2, 1]}
)
ax.barh(
    pos,
    results["mean_test_score"],
    xerr=results["std_test_score"],
    capsize=4,
    color=colors,
    alpha=0.85,
)
for p, m in zip(pos, results["mean_test_score"], strict=True):
    ax.text(0.02, p, f"{m:.3f}", va="center", color="white", fontweight="bold")
ax.plot(
    test_score,
    pos[search.best_index_],
    "*",
    ms=18,
    color="gold",
    mec="k",
    label=f"best, refit: test {test_score:.3f}",
)
ax.set_yticks(pos)
ax.set_yticklabels(names, fontsize=9)
ax.set_xlabel("accuracy")
ax.set_xlim(0, 1)
ax.set_title(f"{n_folds}-fold CV accuracy, {len(X_train)} training images")
ax.legend(loc="lower right", fontsize=8)
ax.grid(axis="x", alpha=0.3)

ax_time.barh(pos, results["mean_fit_time"], color=colors, alpha=0.85)
ax_time.set_xlabel("seconds")
ax_time.set_title("mean fit time")
ax_time.grid(axis="x", alpha=0.3)
fig.suptitle("Fine-tuning ImageNet EfficientNet-Lite0 on Fashion-MNIST, 64 px")
fig.tight_layout()
plt.show()

# %%
# What we see
# -----------
# The conclusions below are computed from the search above, so they describe
# this run. The fold-to-fold standard deviation sets the scale: with two folds
# it rests on two numbers per candidate, so a difference smaller than the
# typical spread is noise.
scores = dict(zip(names, results["mean_test_score"], strict=True))
noise = float(np.mean(results["std_test_score"]))
ranked = sorted(scores, key=scores.get, reverse=True)
winner = label(search.best_params_)
print(f"typical fold-to-fold spread: {noise:.3f}")
print("ranking by CV accuracy:")
for name in ranked:
    gap = scores[winner] - scores[name]
    verdict = (
        ""
        if name == winner
        else ("  (within the spread)" if gap <= noise else f"  ({gap:.3f} below)")
    )
    print(f"  {scores[name]:.3f}  {name.replace(chr(10), ', ')}{verdict}")
print(
    f"winner: {winner.replace(chr(10), ', ')}; refit on all {len(X_train)} "
    f"images, {test_score:.3f} on the {len(X_test)} test images, "
    f"{best.n_trainable_params_:,} parameters trained"
)


def score_of(layers, body_lr=None):
    for params, mean in zip(results["params"], results["mean_test_score"]):
        if params["train_layers"] == layers and params.get("backbone_lr") == body_lr:
            return mean
    raise KeyError((layers, body_lr))


for layers in (4, "all"):
    small, same = score_of(layers, 1e-3), score_of(layers, 1e-2)
    if abs(small - same) <= noise:
        word = "tied with"
    else:
        word = "beat" if small > same else "lost to"
    print(
        f"train_layers={layers!r}: backbone_lr=1e-3 ({small:.3f}) {word} "
        f"backbone_lr=1e-2 ({same:.3f})"
    )
probe, control = score_of("head"), score_of(4, 0.0)
bn_cost = probe - control
print(
    f"control (last 4 stages, backbone_lr=0) {control:.3f} vs linear probe "
    f"{probe:.3f}: BatchNorm in training mode alone changed the score by "
    f"{-bn_cost:+.3f}" + (" (within the spread)" if abs(bn_cost) <= noise else "")
)
fit_time = dict(zip(names, results["mean_fit_time"], strict=True))
slowest = max(fit_time, key=fit_time.get)
print(f"slowest fit: {slowest.replace(chr(10), ', ')} ({fit_time[slowest]:.1f} s)")

# %%
# How to read the control. With ``backbone_lr=0`` the last four stages keep
# their ImageNet weights exactly; the control differs from the linear probe
# only in its BatchNorm layers, which run in training mode in trained stages
# (each batch normalized by its own statistics, and the running statistics
# recomputed on the training images at the end of ``fit``). The line above
# says by how much the control's score differs from the probe's, and whether
# that difference is within the fold-to-fold spread, that is: whether this run
# can tell them apart at all. When the control does score below the probe by
# more than the spread, the cost is the BatchNorm mode, not the weights: at
# 64 px the last stages see feature maps of only a few pixels a side, so each
# batch gives those layers few values per channel to estimate a mean and a
# variance from. A body learning rate then has to move the weights far enough,
# within the epochs allowed, to make up for it, which is why the best body
# learning rate need not be the smaller one usually advised. Larger inputs,
# more images or more epochs can tip the balance the other way. Fine-tuning all
# layers costs the most time per epoch: the early layers hold few parameters
# but run on the largest feature maps.
#
# Rankings like this one change with the data set, its size, the resolution,
# the training budget and the package's defaults, which is why the strategy is
# a parameter to search on *your* data, as above, and not a constant.
