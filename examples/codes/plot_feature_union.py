"""
Combining the codes of two networks with FeatureUnion
=====================================================

The source documents combine the CNN codes of several pretrained networks
(AlexNet + VGG) and train one classifier on the concatenation. In scikit-learn
that is a :class:`~sklearn.pipeline.FeatureUnion` of two
:class:`~sktransfer.CNNFeatureExtractor` steps, followed by any head.

Only one ImageNet network ships its weights offline with sktransfer
(EfficientNet-Lite0; this gallery is built without network access), so the two
"networks" here are two views of it that disagree the most: the **penultimate
1280-d codes** (abstract, ImageNet-specific) and the **avg+max pooled maps of
block 4** (224-d, mid-level parts and textures). With a network connection,
swap in a second backbone by name, e.g. ``CNNFeatureExtractor(model="resnet18")``
or ``model="timm/convnext_nano"``: the pipeline does not change.
"""

# %%
# The pipeline
# ------------
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sktransfer import CNNFeatureExtractor
from sktransfer.datasets import load_fashion_mnist_sample

SIZE = 64  # input size: small for speed (the weights' own size is 224)
union = FeatureUnion(
    [
        (
            "penultimate",
            CNNFeatureExtractor(model="efficientnet_lite0", input_size=SIZE),
        ),
        (
            "block4",
            CNNFeatureExtractor(
                model="efficientnet_lite0",
                layer="blocks.4",
                pooling="avgmax",
                input_size=SIZE,
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
# Each view alone vs both, as the training set shrinks
# ----------------------------------------------------
# The extractors do not learn anything in ``fit``, so for the study below we
# compute the union's codes once and slice its columns (the feature names say
# which step made each column) to compare each view alone with the
# concatenation on many small training sets.
start = time.perf_counter()
Z_train = pipe[0].fit_transform(X_train)
Z_test = pipe[0].transform(X_test)
names = pipe[0].get_feature_names_out()
views = {
    "penultimate (1280-d)": np.char.startswith(names.astype(str), "penultimate"),
    "block 4 avg+max (224-d)": np.char.startswith(names.astype(str), "block4"),
    "both (FeatureUnion)": np.ones(len(names), bool),
    "both, balanced": np.ones(len(names), bool),
}
# "balanced": after standardizing, weight each view so that both carry the same
# total variance (otherwise the 1280 penultimate columns outnumber the 224
# block-4 columns almost 6 to 1 in the head's penalty).
is_pen = views["penultimate (1280-d)"]
n_pen, n_b4 = is_pen.sum(), (~is_pen).sum()
balance = np.where(
    is_pen, np.sqrt(len(names) / (2 * n_pen)), np.sqrt(len(names) / (2 * n_b4))
)
print(
    f"codes for {len(Z_train) + len(Z_test)} images: "
    f"{time.perf_counter() - start:.0f} s"
)

shots = [5, 10, 20, 50]
rng = np.random.default_rng(0)
scores = {v: np.zeros((len(shots), 5)) for v in views}
for i, k in enumerate(shots):
    for rep in range(5):
        idx = np.concatenate(
            [
                rng.choice(np.flatnonzero(y_train == c), k, replace=False)
                for c in range(10)
            ]
        )
        for view, cols in views.items():
            weight = balance if view == "both, balanced" else 1.0
            head = make_pipeline(
                StandardScaler(),
                FunctionTransformer(lambda Z, w=weight: Z * w),
                LogisticRegression(C=0.05, max_iter=500),
            )
            head.fit(Z_train[idx][:, cols], y_train[idx])
            scores[view][i, rep] = head.score(Z_test[:, cols], y_test)

fig, ax = plt.subplots(figsize=(7, 4))
for j, (view, s) in enumerate(scores.items()):
    ax.errorbar(
        shots, s.mean(1), yerr=s.std(1), marker="o", lw=2, capsize=3,
        label=view, color=["C0", "C1", "C3", "C2"][j],
    )  # fmt: skip
ax.set_xscale("log")
ax.set_xticks(shots)
ax.set_xticklabels(shots)
ax.set_xlabel("training images per class")
ax.set_ylabel("test accuracy (500 images)")
ax.set_title("Fashion-MNIST: two views of EfficientNet-Lite0, alone and combined")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()

for view, s in scores.items():
    print(
        f"{view:26s} "
        + "  ".join(f"{k}/class {m:.3f}" for k, m in zip(shots, s.mean(1), strict=True))
    )

# %%
# What we see
# -----------
best_single = max(
    scores["penultimate (1280-d)"].mean(), scores["block 4 avg+max (224-d)"].mean()
)
for view in ("both (FeatureUnion)", "both, balanced"):
    gain = scores[view].mean() - best_single
    print(f"{view:20s} vs the best single view, averaged over sizes: {gain:+.3f}")

# %%
# At this small input size (64 px, for speed) the mid-level block-4 features
# are much better than the penultimate codes on Fashion-MNIST (see also
# :ref:`sphx_glr_auto_examples_plot_which_layer.py`). Concatenated naively,
# the weaker view wins the vote: its 1280 columns outnumber the 224 good ones
# almost 6 to 1, the head's L2 penalty spreads its weight over all of them, and
# the union lands *between* the two views. Giving each view the same total
# weight (the "balanced" curve) recovers most of the loss, but here the weak
# view still adds nothing to the strong one. Combining features is not
# automatically better; it pays when the views are of similar quality and make
# different mistakes. Let cross-validation choose the views: ``GridSearchCV`` with
# ``{"featureunion__penultimate": ["drop", union.transformer_list[0][1]]}``
# (``"drop"`` removes a step of a ``FeatureUnion``).
#
# When both views come from the same network, one extractor computes them in a
# single forward pass: ``CNNFeatureExtractor(layer=[None, "blocks.4"])`` (then
# ``pooling`` applies to the named layer); a ``FeatureUnion`` is the way to join
# *different* networks.
