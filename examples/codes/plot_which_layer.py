"""
Which layer? Codes from every depth of the network
==================================================

Deeper layers of a CNN compute more abstract, more invariant features: edges and
textures early, object parts and ImageNet categories late ([Yosinski2014]_).
The usual rule of thumb ([CS231n]_) turns that into a choice: when the new
data resemble the pretraining data, take the penultimate codes; when they are
*dissimilar* and scarce, take features from an *earlier* layer and train an SVM
or a linear model on them.

Here we measure it. One :class:`~sktransfer.CNNFeatureExtractor` returns the
codes of all seven block groups of ImageNet EfficientNet-Lite0 plus its
penultimate layer **in one forward pass** (``layer=[...]``); the feature names
say which column came from which layer, so we slice them and fit a
logistic regression on each depth. Two data sets:

* Fashion-MNIST (photos of clothes, grey, 28x28): still natural-ish images;
* scikit-learn's handwritten digits (8x8 pixels, 16 grey levels): very far from
  ImageNet.
"""

# %%
# Codes from every depth, in one pass
# -----------------------------------
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import CNNFeatureExtractor
from sktransfer.datasets import load_fashion_mnist_sample

LAYERS = [f"blocks.{i}" for i in range(7)]
extractor = CNNFeatureExtractor(
    model="efficientnet_lite0",
    layer=LAYERS + ["bn2"],  # bn2: the 1280 maps the penultimate codes average
    pooling="avg",
    input_size=64,  # small and fast; 224 is the weights' own size
    precision="fp32",  # a technique, not a speed test: the same on every CPU
)


def codes_by_layer(X, **params):
    """Codes of every layer of ``extractor``: {layer name: (n, d) array}."""
    ext = extractor.set_params(**params).fit(X)
    Z = ext.transform(X)
    names = ext.get_feature_names_out()
    layer_of = np.array([n.split(".", 1)[1].rsplit(".", 1)[0] for n in names])
    return {layer: Z[:, layer_of == layer] for layer in ext.layers_}


def accuracy_by_layer(codes, y, train, test):
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
    return {
        layer: head.fit(Z[train], y[train]).score(Z[test], y[test])
        for layer, Z in codes.items()
    }


# %%
# Fashion-MNIST: 30 training images per class, every second test image.
start = time.perf_counter()
X_tr, y_tr = load_fashion_mnist_sample(subset="train", return_X_y=True)
X_te, y_te = load_fashion_mnist_sample(subset="test", return_X_y=True)
keep = np.concatenate([np.flatnonzero(y_tr == c)[:30] for c in range(10)])
X_f = np.concatenate([X_tr[keep], X_te[::2]])
y_f = np.concatenate([y_tr[keep], y_te[::2]])
train_f, test_f = np.arange(len(keep)), np.arange(len(keep), len(X_f))
codes_f = codes_by_layer(X_f)
acc_f = accuracy_by_layer(codes_f, y_f, train_f, test_f)
pix_f = (
    LogisticRegression(max_iter=500)
    .fit(X_f[train_f].reshape(len(train_f), -1) / 255, y_f[train_f])
    .score(X_f[test_f].reshape(len(test_f), -1) / 255, y_f[test_f])
)
print({k: (Z.shape[1], round(acc_f[k], 3)) for k, Z in codes_f.items()})

# %%
# Digits: flattened 8x8 arrays go straight in, ``input_shape`` says their shape.
X_d, y_d = load_digits(return_X_y=True)
X_d, _, y_d, _ = train_test_split(
    X_d, y_d, train_size=800, stratify=y_d, random_state=0
)
train_d, test_d = train_test_split(
    np.arange(len(X_d)), train_size=300, stratify=y_d, random_state=0
)
codes_d = codes_by_layer(X_d / 16.0, input_shape=(8, 8))
acc_d = accuracy_by_layer(codes_d, y_d, train_d, test_d)
pix_d = (
    LogisticRegression(max_iter=500)
    .fit(X_d[train_d] / 16, y_d[train_d])
    .score(X_d[test_d] / 16, y_d[test_d])
)
print({k: round(v, 3) for k, v in acc_d.items()})
print(f"pixels + logistic: Fashion-MNIST {pix_f:.3f}, digits {pix_d:.3f}")
print(f"both data sets: {time.perf_counter() - start:.0f} s")

# %%
# Accuracy against depth
# ----------------------
labels = [f"block {i}" for i in range(7)] + ["penultimate"]
widths = [codes_f[layer].shape[1] for layer in codes_f]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for ax, acc, pix, title in (
    (axes[0], acc_f, pix_f, "Fashion-MNIST (30 images / class)"),
    (axes[1], acc_d, pix_d, "digits, 8x8 (30 images / class)"),
):
    values = list(acc.values())
    ax.plot(range(len(values)), values, "o-", lw=2, label="codes + logistic")
    ax.axhline(pix, color="grey", ls="--", label="pixels + logistic")
    best = int(np.argmax(values))
    ax.plot(best, values[best], "*", ms=16, color="C3", label="best depth")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(
        [f"{lab}\n{w}-d" for lab, w in zip(labels, widths, strict=True)],
        rotation=45,
        fontsize=8,
    )
    ax.set_title(title)
    ax.grid(alpha=0.3)
axes[0].set_ylabel("test accuracy")
axes[1].legend(loc="lower left")
fig.suptitle("ImageNet EfficientNet-Lite0: which layer's codes to use")
fig.tight_layout()
plt.show()

# %%
# What we see
# -----------
# Read from the accuracies above:
for data, acc, pix in (("Fashion-MNIST", acc_f, pix_f), ("digits", acc_d, pix_d)):
    layers = list(acc)
    best = max(acc, key=acc.get)
    last = layers[-1]
    print(
        f"{data}: best layer {best} ({acc[best]:.3f}); penultimate codes "
        f"{acc[last]:.3f}, {acc[best] - acc[last]:.3f} below the best; "
        f"first block {acc[layers[0]]:.3f}; raw pixels {pix:.3f} "
        f"({pix - acc[best]:+.3f} vs the best layer)"
    )
margin_f = max(acc_f.values()) - acc_f["bn2"]
margin_d = max(acc_d.values()) - acc_d["bn2"]
print(
    f"margin of the best layer over the penultimate codes: Fashion-MNIST "
    f"{margin_f:.3f}, digits {margin_d:.3f} (wider on "
    f"{'Fashion-MNIST' if margin_f > margin_d else 'the digits'} in this run)"
)

# %%
# When the best layer is an intermediate block, as the rule "small + dissimilar
# -> earlier layer + SVM" predicts for data this far from ImageNet, the
# penultimate codes are too specialised to ImageNet's classes and the earliest
# blocks (edges, colours) too generic. Part of the gap is the small input size
# chosen to keep this page fast: the penultimate codes suffer most from it, so
# measure at the size you will use.
#
# Compare with the dashed line too: small, centred, grayscale images are easy
# for a linear model on raw pixels, and ImageNet features may add little to
# them at this size; always keep a pixel baseline in the comparison.
#
# The layer is an ordinary parameter, so let cross-validation pick it:
# ``GridSearchCV(pipe, {"cnnfeatureextractor__layer": ["blocks.4", None]})``.
# :func:`~sktransfer.compare_strategies` includes an "earlier layer + SVC"
# strategy for this reason.
