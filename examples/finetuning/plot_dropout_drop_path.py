"""
Dropout and stochastic depth ("drop layer")
===========================================

Two regularizers that act **only during training** and vanish at prediction
time:

* **Dropout** (``dropout=p``): every unit of the feature vector entering the new
  head (the 1280 pooled features of EfficientNet-Lite0) is set to zero with
  probability ``p`` for each training image, and the survivors are scaled by
  ``1 / (1 - p)``. The head cannot rely on any single feature.
* **Stochastic depth**, "drop path" or "drop layer" (``drop_path=p``): a
  residual block computes ``x + f(x)``; during training its branch ``f`` is
  skipped for a whole image with some probability, so the block passes ``x``
  through unchanged and the network is randomly *shallower*. The probability
  grows linearly with depth up to ``p``; frozen blocks never drop.

Both are meant to shrink the **generalization gap**, training accuracy minus
test accuracy. We fine-tune :class:`~sktransfer.FineTunedClassifier` on 10
Fashion-MNIST images per class with and without each of them and measure the
gap on two seeds, since one run of a fine-tune on so few images is noisy.
"""

# %%
# The setting
# -----------
# ImageNet EfficientNet-Lite0 at 64 px; ``train_layers=4`` trains the last four
# stages (``blocks.5``, ``blocks.6``, ``conv_head``, ``bn2``) and the head, and
# freezes the rest. One torch thread: on a small, shared CPU more threads often
# make training slower. Each seed draws other training images and seeds
# initialization, shuffling, dropout and the dropped blocks.
# Loading the backbone once before the first fit makes every fit below start
# from the same random state, whatever ran earlier in this Python process.
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from sktransfer import FineTunedClassifier
from sktransfer.datasets import load_fashion_mnist_sample

torch.set_num_threads(1)
start = time.perf_counter()
X, y = load_fashion_mnist_sample(subset="train", return_X_y=True)
X_test, y_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
X_test, y_test = X_test[::2], y_test[::2]  # 500 test images, 50 per class

PER_CLASS, SEEDS = 10, (0, 1)
SETTINGS = {  # label: (dropout, drop_path)
    "none": (0.0, 0.0),
    "dropout 0.5": (0.5, 0.0),
    "drop path 0.2": (0.0, 0.2),
}


def training_set(seed):
    rng = np.random.default_rng(seed)
    pick = [
        rng.choice(np.flatnonzero(y == c), PER_CLASS, replace=False) for c in range(10)
    ]
    idx = np.concatenate(pick)
    return X[idx], y[idx]


def make_clf(dropout, drop_path, seed):
    return FineTunedClassifier(
        model="efficientnet_lite0",
        input_size=64,
        train_layers=4,
        max_epochs=5,
        lr=3e-3,
        backbone_lr=1e-3,
        dropout=dropout,
        drop_path=drop_path,
        precision="fp32",  # a technique, not a speed test: the same on every CPU
        random_state=seed,
    )


# %%
# Which blocks can be dropped?
# ----------------------------
# Only blocks with a shortcut (same shape in and out) can be skipped; the first
# block of a stage changes the number of channels or the resolution and is never
# skipped. After a fit with ``drop_path=0.2``, the trained blocks of the network
# (``blocks.5`` and ``blocks.6`` of ``net_.module_.body``) are skipped with these
# probabilities during training:
X_tr, y_tr = training_set(SEEDS[0])
results = {}
clf = make_clf(*SETTINGS["drop path 0.2"], SEEDS[0]).fit(X_tr, y_tr)
results["drop path 0.2", SEEDS[0]] = clf
body = clf.net_.module_.body
for name in ("blocks.5.0", "blocks.5.1", "blocks.5.2", "blocks.5.3", "blocks.6.0"):
    block = body.get_submodule(name)
    can_drop = getattr(block, "has_skip", False)
    p = block.drop_path.drop_prob if can_drop else 0.0
    print(f"{name}: shortcut={can_drop!s:5}  skipped with probability {p:.3f}")

# %%
# Fit every setting on every seed
# -------------------------------
# Training accuracy is measured in inference mode (nothing dropped) on the
# training images, test accuracy on every second image of the test subset.
rows = []
for seed in SEEDS:
    X_tr, y_tr = training_set(seed)
    for label, (dropout, drop_path) in SETTINGS.items():
        clf = results.get((label, seed))
        if clf is None:
            clf = make_clf(dropout, drop_path, seed).fit(X_tr, y_tr)
        pred = clf.predict(np.concatenate([X_tr, X_test]))  # one call: faster
        train_acc = np.mean(pred[: len(y_tr)] == y_tr)
        test_acc = np.mean(pred[len(y_tr) :] == y_test)
        loss = np.asarray(clf.history_[:, "train_loss"])
        rows.append((label, seed, train_acc, test_acc, loss))
        print(
            f"seed {seed}  {label:14s} train {train_acc:.3f}  test {test_acc:.3f}  "
            f"gap {train_acc - test_acc:.3f}  last training loss {loss[-1]:.3f}"
        )
results.clear()

train = {s: np.array([r[2] for r in rows if r[0] == s]) for s in SETTINGS}
test = {s: np.array([r[3] for r in rows if r[0] == s]) for s in SETTINGS}
curves = {s: np.mean([r[4] for r in rows if r[0] == s], axis=0) for s in SETTINGS}
for s in SETTINGS:
    print(
        f"mean over {len(SEEDS)} seeds, {s:14s}: train {train[s].mean():.3f}  "
        f"test {test[s].mean():.3f}  gap {(train[s] - test[s]).mean():.3f}"
    )
base = test["none"]
for s in list(SETTINGS)[1:]:
    diff = test[s] - base
    print(f"test accuracy change vs none, {s:14s}: {np.round(diff, 3)} per seed")
print(f"total time {time.perf_counter() - start:.0f} s")

# %%
# Train vs test accuracy, and the training loss
# ---------------------------------------------
# Bars: mean over seeds; dots: single seeds. The gap is the height between the
# two bars of a setting.
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
x = np.arange(len(SETTINGS))
for k, (acc, name) in enumerate(((train, "train"), (test, "test"))):
    offset = (k - 0.5) * 0.38
    means = [acc[s].mean() for s in SETTINGS]
    axes[0].bar(x + offset, means, 0.38, color=f"C{k}", label=name)
    for i, s in enumerate(SETTINGS):
        axes[0].plot(np.full(len(SEEDS), x[i] + offset), acc[s], "k.", ms=6)
axes[0].set_xticks(x)
axes[0].set_xticklabels(
    [f"{s}\ngap {(train[s] - test[s]).mean():.2f}" for s in SETTINGS]
)
axes[0].set_ylim(0, 1.25)
axes[0].set_ylabel("accuracy")
axes[0].set_title(f"{PER_CLASS} images / class, {len(SEEDS)} seeds")
axes[0].legend(loc="upper right", ncol=2)
for i, s in enumerate(SETTINGS):
    epochs = np.arange(1, len(curves[s]) + 1)
    axes[1].plot(epochs, curves[s], "o-", color=f"C{i + 2}", label=s)
axes[1].set_xticks(epochs)
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("training loss (mean over seeds)")
axes[1].set_title("training loss, measured with dropout / drop path on")
axes[1].legend()
axes[1].grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# What we see
# -----------
# Computed from the fits above. The noise level of this experiment is how much
# the baseline alone moves between the two seeds (other training images, other
# initialization); a change smaller than that is not an effect.
noise = float(np.ptp(test["none"]))
gaps = {s: float((train[s] - test[s]).mean()) for s in SETTINGS}
print(
    f"training accuracy {min(t.min() for t in train.values()):.3f}-"
    f"{max(t.max() for t in train.values()):.3f} in every setting; "
    f"generalization gap {min(gaps.values()):.3f}-{max(gaps.values()):.3f}"
)
print(f"noise: the baseline's test accuracy differs by {noise:.3f} between seeds")
for s in list(SETTINGS)[1:]:
    diff = test[s] - test["none"]
    mean = float(diff.mean())
    if abs(mean) <= noise:
        verdict = "no effect beyond the seed-to-seed noise"
    else:
        verdict = "better than none" if mean > 0 else "worse than none"
    signs = ", ".join(f"seed {sd}: {d:+.3f}" for sd, d in zip(SEEDS, diff))
    print(
        f"{s}: test accuracy {mean:+.3f} on average ({signs}): {verdict}; "
        f"gap {gaps[s]:.3f} vs {gaps['none']:.3f} without"
    )
    above = curves[s][-1] - curves["none"][-1]
    print(f"  last training loss (with {s} on) {above:+.3f} vs none")

# %%
# Both regularizers act during training -- the training loss, measured while
# features and blocks are being dropped, is what the right panel shows -- but
# once nothing is dropped, the network still fits its few training images, and
# the test accuracy moves by about as much as the seed does. A claim either way
# would need many more seeds or folds.
#
# Why little is to be expected here: the trained part is small (the head and the last
# four stages, with three blocks that can drop, with probabilities of at most 0.2), and
# the gap comes from ten images per class not covering what a class looks like, which
# noise inside the network does not supply. Dropout and stochastic depth were designed
# for large networks trained for many epochs -- stochastic depth for residual networks
# of a hundred layers and more -- where they trade a little training fit for a smaller
# gap. Treat them as hyper-parameters and measure, e.g. ``GridSearchCV(clf, {"dropout":
# [0, 0.2, 0.5], "drop_path": [0, 0.1, 0.2]})`` with several folds; :ref:`data
# augmentation <sphx_glr_auto_examples_finetuning_plot_augmentation.py>`
# is a regularizer that adds label-preserving variation of the data instead.
#
# Note the table at the top: ``drop_path`` only acts on *trained* blocks *with a
# shortcut*. With ``train_layers=3`` on EfficientNet-Lite0 (``blocks.6``,
# ``conv_head``, ``bn2``) the only trained block, ``blocks.6.0``, has no
# shortcut, so ``drop_path`` would change nothing at all (``fit`` warns when
# that happens).
