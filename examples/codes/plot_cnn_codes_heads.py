"""
CNN codes with SVM, logistic regression and Bayes heads
=======================================================

The "CNN codes" recipe: drop the ImageNet classifier of a pretrained network, keep
its penultimate activations as features, and train a cheap classifier on them.
One :class:`~sktransfer.CNNFeatureExtractor` in a scikit-learn ``Pipeline``; the
head is just another step, so swapping SVM / logistic regression / Gaussian naive
Bayes is one ``set_params`` call. Codes are computed once and reused through the
pipeline's ``memory`` cache.
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
        ("cnn", CNNFeatureExtractor(model="efficientnet_lite0", input_size=128)),
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

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(scores), list(scores.values()), color=["grey", "C0", "C1", "C2"])
ax.set_xlim(0.4, 0.9)
ax.set_xlabel("test accuracy (1,000 images), 30 training images per class")
ax.set_title("Fashion-MNIST: ImageNet EfficientNet-Lite0 codes + three heads")
for i, v in enumerate(scores.values()):
    ax.text(v + 0.005, i, f"{v:.3f}", va="center")
fig.tight_layout()
plt.show()
