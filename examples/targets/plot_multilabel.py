"""
Several labels per image: which items are in the mosaic?
========================================================

:class:`~sktransfer.FineTunedClassifier` accepts an indicator matrix ``y``
of zeros and ones (scikit-learn's multilabel convention, as ``MLPClassifier`` does): one
sigmoid output per label, trained with binary cross-entropy. ``predict``
returns the indicator matrix, ``predict_proba`` each label's probability, and
scikit-learn's multilabel metrics (micro / macro F1) apply as they are.

Mosaics of a few Fashion-MNIST items (the bundled sample) are tagged with the
classes that appear; we compare the fine-tuned classifier with CNN codes +
``OneVsRestClassifier(LogisticRegression())``, trained on half of the mosaics.
"""

# %%
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline

from sktransfer import CNNFeatureExtractor, FineTunedClassifier
from sktransfer.datasets import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist_sample,
    make_mosaics,
)

items, labels = load_fashion_mnist_sample(return_X_y=True)
X, Y = make_mosaics(items, labels, 600, target="tags", random_state=0)
X_train, X_test, Y_train, Y_test = X[:300], X[300:], Y[:300], Y[300:]

models = {
    "codes + one-vs-rest logistic": make_pipeline(
        CNNFeatureExtractor(), OneVsRestClassifier(LogisticRegression(max_iter=1000))
    ),
    "FineTunedClassifier()": FineTunedClassifier(random_state=0),
}
for name, model in models.items():
    pred = model.fit(X_train, Y_train).predict(X_test)
    print(
        f"{name:30s} micro-F1 {f1_score(Y_test, pred, average='micro'):.3f}  "
        f"macro-F1 {f1_score(Y_test, pred, average='macro'):.3f}"
    )

# %%
# A few test mosaics with the fine-tuned model's tags (probability > 0.5).
clf = models["FineTunedClassifier()"]
proba = clf.predict_proba(X_test[:6])
fig, axes = plt.subplots(1, 6, figsize=(13, 3))
for ax, img, p in zip(axes, X_test[:6], proba, strict=True):
    ax.imshow(img)
    ax.axis("off")
    tags = [FASHION_MNIST_CLASSES[j] for j in range(len(p)) if p[j] > 0.5]
    ax.set_title("\n".join(tags) or "(none)", fontsize=9)
fig.tight_layout()
plt.show()
