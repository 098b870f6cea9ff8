"""
Few-shot classification: prototypes, then a fine-tuned cosine classifier
=========================================================================

The few-shot recipe "pretraining + fine-tuning", step by step on real images:

1. a feature extractor pretrained on other classes (here EfficientNet-Lite0
   trained on ImageNet, which has no Fashion-MNIST classes);
2. a *support set* of a few labelled images per new class: their codes are
   L2-normalized and averaged per class into prototypes ``M``
   (:class:`~sktransfer.PrototypeClassifier`); a query is classified by the
   softmax of its cosine similarity to the prototypes;
3. fine-tuning that classifier on the support set from ``W = M, b = 0``
   (:class:`~sktransfer.CosineSoftmaxClassifier`), optionally with the
   unlabelled queries in an entropy term (transductive).

Episodes come from :class:`~sktransfer.model_selection.EpisodicSplit` and the
score over many episodes is reported as mean and 95% confidence interval with
:func:`~sktransfer.model_selection.summarize_scores`.
"""

# %%
# CNN codes of the novel classes, extracted once
# ----------------------------------------------
# The Fashion-MNIST classes from 5 up (sandal, shirt, sneaker, bag, ankle boot)
# play the novel classes, with every image of the bundled sample. Codes at 96 px
# keep this fast on a CPU.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import log_loss
from sklearn.model_selection import cross_val_score

from sktransfer import CNNFeatureExtractor, CosineSoftmaxClassifier, PrototypeClassifier
from sktransfer.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist_sample
from sktransfer.model_selection import EpisodicSplit, summarize_scores

images, labels = load_fashion_mnist_sample(subset="all", return_X_y=True)
novel = labels >= 5
images, labels = images[novel], labels[novel]
names = np.array(FASHION_MNIST_CLASSES)
codes = CNNFeatureExtractor(
    model="efficientnet_lite0", input_size=96, precision="fp32"
).fit_transform(images)
print(f"codes: {codes.shape}")

# %%
# One 5-way 5-shot episode
# ------------------------
episode = EpisodicSplit(n_way=5, k_shot=5, n_query=15, n_episodes=1, random_state=0)
support, query = next(episode.split(codes, labels))

fig, axes = plt.subplots(5, 5, figsize=(5, 5.4))
for ax, i in zip(axes.T.ravel(), support, strict=False):
    ax.imshow(images[i], cmap="gray_r")
    ax.set_xticks([])
    ax.set_yticks([])
for ax, i in zip(axes[0], support[::5], strict=False):
    ax.set_title(names[labels[i]], fontsize=8)
fig.suptitle("Support set: 5 examples of each novel class")
fig.tight_layout()

# %%
# Prototypes, fine-tuning, transductive fine-tuning
# -------------------------------------------------
# The transductive fit receives the unlabelled queries as rows labelled -1: they
# enter an entropy term (confident predictions on the queries) and a
# class-balance term (the queries are spread over the classes), never the
# cross-entropy.
proto = PrototypeClassifier(scale=10.0).fit(codes[support], labels[support])
inductive = CosineSoftmaxClassifier(scale=10.0).fit(codes[support], labels[support])
X_fit = np.vstack([codes[support], codes[query]])
y_fit = np.concatenate([labels[support], np.full(len(query), -1)])
transductive = CosineSoftmaxClassifier(scale=10.0, unlabeled_label=-1).fit(X_fit, y_fit)
for name, clf in [
    ("prototypes", proto),
    ("cosine softmax", inductive),
    ("cosine softmax, transductive", transductive),
]:
    proba = clf.predict_proba(codes[query])
    acc = clf.score(codes[query], labels[query])
    ll = log_loss(labels[query], proba, labels=clf.classes_)
    print(f"{name:30s} query accuracy {acc:.3f}  log-loss {ll:.3f}")

# %%
# Where the prototypes sit
# ------------------------
# A PCA of the L2-normalized codes: query points coloured by their true class,
# support examples as large dots, prototypes ``M`` as stars and the fine-tuned
# class vectors ``W`` as crosses (both start at the same place: ``W = M``).
unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
pca = PCA(n_components=2).fit(unit[np.concatenate([support, query])])
fig, ax = plt.subplots(figsize=(6.5, 5))
for k, c in enumerate(proto.classes_):
    color = f"C{k}"
    q = pca.transform(unit[query][labels[query] == c])
    s = pca.transform(unit[support][labels[support] == c])
    ax.scatter(*q.T, s=12, color=color, alpha=0.4)
    ax.scatter(*s.T, s=60, color=color, edgecolor="k", label=names[c])
    ax.scatter(
        *pca.transform(proto.prototypes_[k : k + 1]).T,
        marker="*",
        s=400,
        color=color,
        edgecolor="k",
    )
    ax.scatter(
        *pca.transform(transductive.coef_[k : k + 1]).T,
        marker="X",
        s=150,
        color=color,
        edgecolor="k",
    )
ax.set_xlabel(f"PC 1 ({pca.explained_variance_ratio_[0]:.0%} of the variance)")
ax.set_ylabel(f"PC 2 ({pca.explained_variance_ratio_[1]:.0%} of the variance)")
ax.set_title(
    "PCA of the L2-normalized codes: support (dots),\n"
    "prototypes (stars), fine-tuned W (X)"
)
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# A few query predictions
# -----------------------
proba = transductive.predict_proba(codes[query])
pred = transductive.classes_[proba.argmax(1)]
shown = query[:: len(query) // 10][:10]
fig, axes = plt.subplots(2, 5, figsize=(8, 3.8))
for ax, i, p, pr in zip(
    axes.ravel(),
    shown,
    pred[:: len(query) // 10],
    proba.max(1)[:: len(query) // 10],
    strict=False,
):
    ax.imshow(images[i], cmap="gray_r")
    ax.set_xticks([])
    ax.set_yticks([])
    ok = p == labels[i]
    ax.set_title(f"{names[p]}\n{pr:.2f}", fontsize=8, color="green" if ok else "red")
fig.suptitle("Queries: predicted class and probability (red = wrong)")
fig.tight_layout()

# %%
# Many episodes, mean and 95% confidence interval
# -----------------------------------------------
# One episode says little: few-shot accuracy varies a lot with the support set.
# ``EpisodicSplit`` works with ``cross_val_score``; the codes are computed once.
cv = EpisodicSplit(n_way=5, k_shot=5, n_query=15, n_episodes=40, random_state=1)
summaries = {}
for name, clf in [
    ("prototypes", PrototypeClassifier()),
    ("cosine softmax", CosineSoftmaxClassifier()),
]:
    scores = cross_val_score(clf, codes, labels, cv=cv)
    summaries[name] = summarize_scores(scores)
    print(f"{name:15s} 5-way 5-shot accuracy {summaries[name]}")

plt.show()

# %%
# What we see
# -----------
# Over the episodes, the two heads differ by:
p, c = summaries["prototypes"], summaries["cosine softmax"]
overlap = p.low <= c.high and c.low <= p.high
verdict = "overlap: no clear winner" if overlap else "do not overlap"
print(
    f"cosine softmax - prototypes: {c.mean - p.mean:+.3f} (the intervals "
    f"{verdict}, over {cv.n_episodes} episodes)"
)

# %%
# Fine-tuning starts from the prototypes (``W = M``), so it can only move the
# class vectors where the support set pulls them; with five images per class
# that is a small step, and one episode says little about which head is better
# -- compare the single episode above with the intervals over many episodes.
# The transductive fit also uses the unlabelled queries, which helps most when
# the classes form separate clusters in the codes (the PCA above).
