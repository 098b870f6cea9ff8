"""
Pretrained vs from scratch, by data size: the four scenarios
=============================================================

The source documents sum transfer learning up in one rule of thumb with two
questions: *how much* labelled data do you have, and *how similar* is it to the
data the network was pretrained on (ImageNet photos)?

=========  ================================  ==================================
data set   similar to ImageNet               dissimilar to ImageNet
=========  ================================  ==================================
small      \\(a) CNN codes + linear model     \\(b) earlier-layer codes + SVM
large      \\(c) fine-tune all layers         \\(c) fine-tune all, or (d) scratch
=========  ================================  ==================================

Small data cannot support millions of trainable weights, so the pretrained
network should stay frozen; the deepest layers are specialised to ImageNet's
classes, so dissimilar data are better served by a more generic, earlier layer.
With enough data, fine-tuning everything pays, and far from ImageNet even
random initialization may catch up.

Here we measure **learning curves**: test accuracy against the number of
training images per class, for the four recipes (a)-(d), all built on
EfficientNet-Lite0 (real ImageNet weights, shipped offline):

* \\(a) :class:`~sktransfer.CNNFeatureExtractor` penultimate codes +
  :class:`~sklearn.linear_model.LogisticRegression`;
* \\(b) codes of ``blocks.4`` (the middle of the network, average and max
  pooled) + an RBF :class:`~sklearn.svm.SVC`;
* \\(c) :class:`~sktransfer.FineTunedClassifier` from the ImageNet weights,
  every layer trained;
* \\(d) the same network with ``weights=None``: trained from scratch.

The data are the bundled Fashion-MNIST sample: small grey photos of clothes on
a black background, **dissimilar** to ImageNet's colour photos of objects and
animals. We can only walk along the *dissimilar* column of the table, and only
its small end: the sample holds 100 training images per class, and fine-tuning
on a CPU within the few minutes a gallery page may take limits how much
training we can afford (see the notes at the end). A "similar" data set would
need natural colour photos with many images per class, which no offline data
set of this package provides.
"""

# %%
# The four scenarios on one map
# -----------------------------
# This page sits in the lower-left quadrant of the map, and the learning curve
# below walks along its bottom edge, from very small towards larger.
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from sktransfer import CNNFeatureExtractor, FineTunedClassifier
from sktransfer.datasets import load_fashion_mnist_sample

# One thread per library (PyTorch, BLAS) while this page runs: it is built on a
# small CPU shared with other jobs, where a process whose threads compete for
# the same cores runs many times slower. Restored at the end of the page; on a
# machine of your own, keep the defaults.
thread_limits = threadpool_limits(limits=1)

fig, ax = plt.subplots(figsize=(7, 4.2))
quadrants = {  # (column, row): (recipe, colour of its curve below)
    (0, 1): ("(a) CNN codes (penultimate)\n+ linear classifier", "C0"),
    (1, 1): ("(c) fine-tune all layers", "C2"),
    (0, 0): ("(b) codes of an EARLIER layer\n+ SVM", "C1"),
    (1, 0): ("(c) fine-tune all layers\nor (d) train from scratch", "C3"),
}
for (col, row), (text, colour) in quadrants.items():
    ax.add_patch(plt.Rectangle((col, row), 1, 1, fc=colour, alpha=0.15))
    ax.text(col + 0.5, row + 0.5, text, ha="center", va="center", fontsize=11)
ax.annotate(
    "",
    xy=(0.6, 0.12),
    xytext=(0.05, 0.12),
    arrowprops={"arrowstyle": "->", "lw": 2.5},
)
ax.text(0.05, 0.17, "this page: Fashion-MNIST, 10 -> 100 images / class", fontsize=9)
ax.set_xlim(0, 2)
ax.set_ylim(0, 2)
ax.set_xticks([0.5, 1.5], ["small data set", "large data set"])
ax.set_yticks(
    [0.5, 1.5], ["dissimilar\nto ImageNet", "similar\nto ImageNet"], rotation=90
)
ax.tick_params(length=0)
ax.set_title("Rule of thumb: which transfer recipe for which data")
fig.tight_layout()
plt.show()

# %%
# Data: nested training subsets, one fixed test set
# -------------------------------------------------
# Each class's 100 training images are shuffled once (seeded); the first ``k`` of
# each class form the training set of size ``k``, so the subsets are nested and a
# larger set only *adds* images. The test set is the same for every method and
# size: the first 50 test images of each class.
SIZES = [10, 20, 30, 50, 100]  # training images per class
X_pool, y_pool = load_fashion_mnist_sample(subset="train", return_X_y=True)
X_all_test, y_all_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
test = np.concatenate([np.flatnonzero(y_all_test == c)[:50] for c in range(10)])
X_test, y_test = X_all_test[test], y_all_test[test]

rng = np.random.default_rng(0)
shuffled = [rng.permutation(np.flatnonzero(y_pool == c)) for c in range(10)]


def first_per_class(k):
    """Indices of the nested training subset with ``k`` images per class."""
    return np.concatenate([idx[:k] for idx in shuffled])


start = time.perf_counter()

# %%
# CNN codes once, two layers in one forward pass
# ----------------------------------------------
# One extractor returns the codes of ``blocks.4`` and of ``bn2`` (the last
# 1280 feature maps, whose global average *is* the penultimate code that
# ``layer=None`` returns; :func:`~sktransfer.list_layers` lists every layer
# name). ``pooling="avgmax"`` concatenates each map's average and its maximum,
# so the first half of ``bn2``'s columns are the penultimate codes. All pool
# images and the test images go through the network once; every training size
# then slices the rows it needs.
# ``input_size=64`` keeps the page fast (224 is the weights' own size).
extractor = CNNFeatureExtractor(
    model="efficientnet_lite0",
    layer=["blocks.4", "bn2"],
    pooling="avgmax",
    input_size=64,
    precision="fp32",  # a technique, not a speed test: the same on every CPU
)
codes = extractor.fit(X_pool).transform(np.concatenate([X_pool, X_test]))
names = extractor.get_feature_names_out()
earlier = np.flatnonzero([".blocks.4." in n for n in names])
bn2 = np.flatnonzero([".bn2." in n for n in names])
penultimate = bn2[: len(bn2) // 2]  # the averages: penultimate codes
Z_pool, Z_test = codes[: len(X_pool)], codes[len(X_pool) :]
print(
    f"codes of {len(codes)} images in {time.perf_counter() - start:.1f} s: "
    f"penultimate {len(penultimate)}-d, blocks.4 (avg+max) {len(earlier)}-d"
)

# %%
# Learning curves of the frozen recipes (a) and (b)
# -------------------------------------------------
# Fitting a head on stored codes takes a moment, so every size is cheap. A
# logistic regression on the raw pixels is the baseline every recipe must beat.
heads = {
    "(a) penultimate codes + LogReg": (
        penultimate,
        make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, random_state=0)
        ),
    ),
    "(b) blocks.4 codes + RBF SVC": (
        earlier,
        make_pipeline(StandardScaler(), SVC(C=10, random_state=0)),
    ),
}
curves = {name: [] for name in heads}
curves["pixels + LogReg"] = []
for k in SIZES:
    train = first_per_class(k)
    for name, (cols, head) in heads.items():
        head.fit(Z_pool[train][:, cols], y_pool[train])
        curves[name].append(head.score(Z_test[:, cols], y_test))
    pixels = LogisticRegression(max_iter=1000, random_state=0).fit(
        X_pool[train].reshape(len(train), -1) / 255, y_pool[train]
    )
    curves["pixels + LogReg"].append(
        pixels.score(X_test.reshape(len(X_test), -1) / 255, y_test)
    )
print(f"frozen recipes done after {time.perf_counter() - start:.1f} s")

# %%
# Fine-tuning from ImageNet (c) and from scratch (d)
# --------------------------------------------------
# Both train every layer of the same network at the same 64 px, with AdamW and
# a cosine schedule. Fine-tuning gives the pretrained body a smaller learning
# rate than the new head (``backbone_lr``), so that the ImageNet weights are
# adjusted rather than overwritten; from scratch, every layer learns at the
# head's rate. Fine-tuning is what costs time on a CPU, so we fine-tune only at
# the two ends of the curve, and every fit gets the **same budget of gradient
# steps** (``STEPS`` batches of ``BATCH`` images): several epochs of the smallest
# training set, one epoch of the largest (the printed lines give the epochs).
# The larger training set therefore means more *different* images, not more
# computation.
FT_SIZES = [10, 100]
STEPS, BATCH = 63, 16
finetuners = {
    "(c) fine-tune all, ImageNet init": {
        "weights": "imagenet",
        "lr": 3e-3,
        "backbone_lr": 1e-3,
    },
    "(d) train from scratch": {"weights": None, "lr": 3e-3, "backbone_lr": 3e-3},
}
for name in finetuners:
    curves[name] = []
for k in FT_SIZES:
    train = first_per_class(k)
    steps_per_epoch = -(-len(train) // BATCH)  # ceil
    epochs = max(1, round(STEPS / steps_per_epoch))
    for name, params in finetuners.items():
        tic = time.perf_counter()
        clf = FineTunedClassifier(
            model="efficientnet_lite0",
            input_size=64,
            train_layers="all",
            max_epochs=epochs,
            batch_size=BATCH,
            precision="fp32",
            random_state=0,
            **params,
        )
        clf.fit(X_pool[train], y_pool[train])
        curves[name].append(clf.score(X_test, y_test))
        print(
            f"{k:3d} / class, {epochs} x {steps_per_epoch} steps, {name:34s} "
            f"accuracy {curves[name][-1]:.3f}  ({time.perf_counter() - tic:.0f} s)"
        )
print(f"all fits done after {time.perf_counter() - start:.1f} s")

# %%
# The numbers
# -----------
# One row per recipe, then the differences the discussion below refers to
# (differences of accuracy), and each recipe's gain from 10 to 100 images per
# class.
a, b = "(a) penultimate codes + LogReg", "(b) blocks.4 codes + RBF SVC"
c, d = "(c) fine-tune all, ImageNet init", "(d) train from scratch"
at = {
    name: dict(zip(FT_SIZES if name in finetuners else SIZES, accs))
    for name, accs in curves.items()
}
differences = {
    "(b) - (a): earlier vs last layer": (b, a, SIZES),
    "(b) - pixels": (b, "pixels + LogReg", SIZES),
    "(b) - (c): frozen vs fine-tuned": (b, c, FT_SIZES),
    "(c) - (d): ImageNet vs scratch": (c, d, FT_SIZES),
}
print("images / class".ljust(34) + "".join(f"{k:>7d}" for k in SIZES))
for name, row in at.items():
    cells = "".join(f"{row[k]:7.3f}" if k in row else "      -" for k in SIZES)
    print(name.ljust(34) + cells)
for name, (first, second, sizes) in differences.items():
    row = {k: at[first][k] - at[second][k] for k in sizes}
    cells = "".join(f"{row[k]:+7.3f}" if k in row else "      -" for k in SIZES)
    print(name.ljust(34) + cells)
for name in (a, b, "pixels + LogReg", c, d):
    print(f"gain 10 -> 100 / class, {name:32s} {at[name][100] - at[name][10]:+.3f}")
for k in SIZES:
    best = max(curves, key=lambda name: at[name].get(k, -1))
    print(f"best at {k:3d} / class: {best} ({at[best][k]:.3f})")
print(f"total {time.perf_counter() - start:.0f} s")
thread_limits.restore_original_limits()

# %%
# Learning curves
# ---------------
fig, ax = plt.subplots(figsize=(10, 4.8))
styles = {
    a: {"color": "C0", "marker": "o"},
    b: {"color": "C1", "marker": "s"},
    c: {"color": "C2", "marker": "^"},
    d: {"color": "C3", "marker": "v"},
    "pixels + LogReg": {"color": "grey", "ls": "--", "marker": "."},
}
for name, accs in curves.items():
    sizes = FT_SIZES if name in finetuners else SIZES
    ax.plot(sizes, accs, lw=2, ms=7, label=name, **styles[name])
ax.set_xscale("log")
ax.set_xticks(SIZES, [str(k) for k in SIZES])
ax.minorticks_off()
ax.set_xlabel("training images per class (log scale)")
ax.set_ylabel(f"test accuracy ({len(y_test)} images)")
ax.grid(alpha=0.3)
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
ax.set_title(
    "Fashion-MNIST (dissimilar to ImageNet), EfficientNet-Lite0 at 64 px\n"
    f"fine-tuning: the same {STEPS} gradient steps per fit"
)
fig.tight_layout()
plt.show()

# sphinx_gallery_thumbnail_number = 2

# %%
# What the measurement says about the rule of thumb
# --------------------------------------------------
# Computed from the table above. One accuracy on the test images has a standard
# error of about ``se`` (printed first); differences within two of them are
# ties.
acc_mid = np.mean([at[name][k] for name in at for k in at[name]])
se = np.sqrt(acc_mid * (1 - acc_mid) / len(y_test))
print(f"standard error of one test accuracy ({len(y_test)} images): {se:.3f}")


def span(first, second, sizes):
    diffs = [at[first][k] - at[second][k] for k in sizes]
    return min(diffs), max(diffs)


def compare(first, second, sizes, what):
    low, high = span(first, second, sizes)
    if high < -2 * se:
        verdict = "clearly below at every size measured"
    elif low > 2 * se:
        verdict = "clearly above at every size measured"
    else:
        verdict = "not clearly different at some size (within two standard errors)"
    print(f"{what}: {low:+.3f} to {high:+.3f}, {verdict}")


compare(b, a, SIZES, "(b) earlier layer + SVM vs (a) penultimate codes")
compare(a, "pixels + LogReg", SIZES, "(a) penultimate codes vs raw pixels")
compare(b, "pixels + LogReg", SIZES, "(b) earlier layer + SVM vs raw pixels")
compare(c, b, FT_SIZES, "(c) fine-tuned from ImageNet vs (b)")
compare(c, "pixels + LogReg", FT_SIZES, "(c) fine-tuned from ImageNet vs pixels")
compare(d, c, FT_SIZES, "(d) from scratch vs (c) from ImageNet")
gain_c, gain_d = at[c][100] - at[c][10], at[d][100] - at[d][10]
print(
    f"gain from 10 to 100 images per class: (c) {gain_c:+.3f}, (d) {gain_d:+.3f}; "
    f"head start of ImageNet over scratch: {at[c][10] - at[d][10]:+.3f} at 10, "
    f"{at[c][100] - at[d][100]:+.3f} at 100 per class"
)
winners = {max(curves, key=lambda name: at[name].get(k, -1)) for k in SIZES}
print(f"best recipe at each size: {', '.join(sorted(winners))}")

# %%
# How to read these lines against the table of the introduction. This data set
# sits in the **small and dissimilar** quadrant, where the rule expects (b) to
# beat (a) and frozen codes to beat fine-tuning; the first and fourth lines say
# whether this run agrees. Fine-tuning (c) is the most expensive recipe: every
# fit runs forward *and* backward passes through the whole network, many times,
# where the frozen recipes run one forward pass per image once and reuse the
# codes for every training size. The "large" row of the rule is about the trend
# in the last lines: the more data, the less the pretrained initialization
# matters (a shrinking head start of (c) over (d)), and far from ImageNet,
# training from scratch becomes an option. One seed and one draw of the
# training images: read differences within the noise as ties.
#
# **What this page cannot show.** The "large" row of the table means thousands
# of images per class; the bundled sample stops at 100, and training on
# thousands to convergence takes far more than the minutes a gallery page may
# spend on a CPU. The fine-tuning curves here are *budget-limited* (a fixed
# number of gradient steps, no augmentation, 64 px where the weights expect
# 224 px); the notes of
# :class:`~sktransfer.FineTunedClassifier` give a low-data recipe (head first,
# augmentation, a larger input size, more epochs) and
# :ref:`sphx_glr_auto_examples_finetuning_plot_finetune_strategies.py` compares what to
# train, so read (c) and (d) as lower bounds. The "similar" column would need
# natural colour photos with many images per class, which no offline data set
# here provides. To place *your* data on the map, measure it:
# :func:`~sktransfer.compare_strategies` scores recipes (a) and (b) on the same
# cross-validation folds, and adds fine-tuning strategies when the data have
# enough images per class (see its notes).
