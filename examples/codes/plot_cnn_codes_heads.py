"""
CNN codes with SVM, logistic regression and Bayes heads
=======================================================

The "CNN codes" recipe: drop the ImageNet classifier of a pretrained network, keep
its penultimate activations as features, and train a cheap classifier on them.
One :class:`~sktransfer.CNNFeatureExtractor` in a scikit-learn ``Pipeline``; the
head is just another step, so swapping SVM / logistic regression / Gaussian naive
Bayes is one ``set_params`` call. Codes are computed once and reused through the
pipeline's ``memory`` cache. A logistic regression on the raw pixels is the
baseline every head must beat.
"""

import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sktransfer import CNNFeatureExtractor
from sktransfer.datasets import load_fashion_mnist_sample

X_train, y_train = load_fashion_mnist_sample(subset="train", return_X_y=True)
X_test, y_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
# 30 images per class for training, as in a small-data problem
idx = np.concatenate([np.flatnonzero(y_train == c)[:30] for c in range(10)])
X_train, y_train = X_train[idx], y_train[idx]

heads = {
    "pixels + LogisticRegression": None,
    "codes + LogisticRegression": LogisticRegression(max_iter=2000, C=0.5),
    "codes + linear SVM": SVC(kernel="linear", C=0.05),
    "codes + GaussianNB": GaussianNB(),
}
pipe = Pipeline(
    [
        (
            "cnn",
            CNNFeatureExtractor(
                model="efficientnet_lite0", input_size=128, precision="fp32"
            ),
        ),
        ("scale", StandardScaler()),
        ("head", LogisticRegression()),
    ],
    memory=tempfile.mkdtemp(),
)

scores = {}
start = time.perf_counter()
for name, head in heads.items():
    if head is None:
        flat = LogisticRegression(max_iter=2000).fit(
            X_train.reshape(len(X_train), -1) / 255, y_train
        )
        scores[name] = flat.score(X_test.reshape(len(X_test), -1) / 255, y_test)
    else:
        pipe.set_params(head=head).fit(X_train, y_train)
        scores[name] = pipe.score(X_test, y_test)
    print(f"{name:32s} test accuracy {scores[name]:.3f}")
print(f"total {time.perf_counter() - start:.0f} s (codes extracted once, then cached)")

fig, ax = plt.subplots(figsize=(8, 3.4))
ax.barh(list(scores), list(scores.values()), color=["grey", "C0", "C1", "C2"])
ax.set_xlim(0, 1)
ax.set_xlabel(
    f"test accuracy ({len(y_test):,} images), "
    f"{len(y_train) // 10} training images per class"
)
ax.set_title(
    "Fashion-MNIST: ImageNet EfficientNet-Lite0 codes\n+ three heads, vs pixels"
)
for i, v in enumerate(scores.values()):
    ax.text(v + 0.005, i, f"{v:.3f}", va="center")
fig.tight_layout()
plt.show()

# %%
# What we see
# -----------
# Read from the scores above:
pixels = scores["pixels + LogisticRegression"]
codes = {k: v for k, v in scores.items() if k.startswith("codes")}
best = max(codes, key=codes.get)
verdict = "beat" if codes[best] > pixels else "do not beat"
print(
    f"best head on the codes: {best} ({codes[best]:.3f}); pixels {pixels:.3f}: "
    f"the codes {verdict} the pixels ({codes[best] - pixels:+.3f})"
)
print(
    "heads on the codes, best to worst: "
    + ", ".join(
        f"{k[len('codes + ') :]} {v:.3f}"
        for k, v in sorted(codes.items(), key=lambda kv: -kv[1])
    )
)

# %%
# Why the pixel baseline can win. The penultimate codes are the features
# ImageNet's classifier reads, specialised to colour photos of objects and
# animals; Fashion-MNIST's small, centred, grey 28x28 images are far from those
# photos, and upscaled to the network's input size they give the codes little
# of what they were trained on. A linear model on the raw pixels, meanwhile, is
# strong on such aligned images. So on data this dissimilar to ImageNet the
# penultimate codes need not beat the pixels: an *earlier* layer often does
# better (:ref:`sphx_glr_auto_examples_codes_plot_which_layer.py`), and
# fine-tuning adapts the later layers themselves
# (:ref:`sphx_glr_auto_examples_finetuning_plot_finetune_strategies.py`). On
# photos close to ImageNet's, the codes are the strong recipe. Whichever wins,
# keep the pixel baseline in the comparison:
# :func:`~sktransfer.compare_strategies` does so by default.
#
# Among the heads, a linear model on standardized codes is the usual choice;
# Gaussian naive Bayes assumes independent features, which codes are not, and
# serves as a cheap reference.
