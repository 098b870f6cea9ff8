"""
Early stopping: train / validation curves and the best weights
==============================================================

A network fine-tuned on a few hundred images fits its training set better with
every epoch, but after a while it stops getting better on *new* images and then
gets worse: it overfits. Early stopping watches a held-out **validation** set,
stops when the validation loss has not improved for ``patience`` epochs, and
keeps the weights of the best epoch, not those of the last one.

With ``early_stopping=True``, :class:`~sktransfer.FineTunedClassifier` holds out
``validation_fraction`` of the training images (stratified), records the
validation loss and accuracy of every epoch in ``history_`` (a skorch
``History``), stops after ``patience`` epochs without improvement of
``monitor``, and restores the best epoch's weights (``best_epoch_``; the number
of epochs run is ``n_epochs_``).

Three disjoint sets of images: the training images, the validation images
early stopping holds out of them, and the bundled Fashion-MNIST test subset,
which plays no part in training and tells us how the model does on new data.
"""

# %%
# A test-set score after every epoch
# ----------------------------------
# The history already holds ``train_loss``, ``valid_loss`` and ``valid_acc``. To
# watch the test set as well, we add a small skorch callback
# (``FineTunedClassifier(callbacks=[...])``) that evaluates the network on the
# test images at the end of each epoch. It preprocesses them once, as the
# estimator does: pixels in [0, 1], resized to the input size and normalized
# with the mean and std that travel with the pretrained weights
# (:func:`~sktransfer.load_backbone` returns them).
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from sklearn.metrics import log_loss
from skorch.callbacks import Callback

from sktransfer import FineTunedClassifier, load_backbone
from sktransfer.datasets import load_fashion_mnist_sample

# Small networks on a shared 2-core CPU: one thread is fastest.
torch.set_num_threads(1)
SIZE = 64  # small and fast; 224 is the weights' own size


def preprocess(images, preprocessing):
    """(n, h, w) uint8 grayscale -> normalized (n, 3, size, size) float tensor."""
    x = torch.from_numpy(images).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    size, mode = preprocessing.input_size, preprocessing.interpolation
    x = F.interpolate(x, size=size, mode=mode, antialias=True)
    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    return (x - mean) / std


class TestScore(Callback):
    """Record ``test_loss`` and ``test_acc`` on fixed images after every epoch."""

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def on_epoch_end(self, net, **kwargs):
        net.module_.eval()
        with torch.inference_mode():
            # forward_images: the whole network, also while fit trains on
            # cached activations of the frozen layers
            logits = torch.cat(
                [net.module_.forward_images(b) for b in self.X.split(250)]
            )
        net.history.record("test_loss", F.cross_entropy(logits, self.y).item())
        accuracy = (logits.argmax(1) == self.y).float().mean().item()
        net.history.record("test_acc", accuracy)


X, y = load_fashion_mnist_sample(return_X_y=True)
X_test, y_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
train = np.concatenate([np.flatnonzero(y == c)[:40] for c in range(10)])
X_train, y_train = X[train], y[train]

_, preprocessing = load_backbone("efficientnet_lite0")
preprocessing = preprocessing.override(input_size=SIZE)
test_score = TestScore(preprocess(X_test, preprocessing), torch.from_numpy(y_test))

# %%
# Fine-tune with early stopping
# -----------------------------
# 40 training images per class, half of them held out for validation
# (``validation_fraction=0.5``: a larger validation set gives a less noisy
# curve). The last four stages of the body are fine-tuned, the new head with a
# high learning rate (``lr=1e-2``), and ``max_epochs=30`` is far more than so
# few images need, so overfitting shows within a few epochs; ``patience=3``
# stops training three epochs after the best validation loss.
#
# ``bn="eval"`` keeps every BatchNorm layer in inference mode (the trained ones
# still learn their scale and shift). As nothing re-normalizes the activations
# of the trained stages then, their learning rate must be small
# (``backbone_lr=3e-4``). With the default ``bn="frozen"``, trained BatchNorm
# layers normalize each training batch with its own statistics; their running
# statistics are recomputed exactly on the training images before each
# validation pass and again for the restored weights at the end of ``fit``. So
# with either setting the network scored after each epoch is the network
# ``fit`` returns when that epoch is the best one.
clf = FineTunedClassifier(
    model="efficientnet_lite0",
    input_size=SIZE,
    train_layers=4,
    bn="eval",
    lr=1e-2,
    backbone_lr=3e-4,
    max_epochs=30,
    early_stopping=True,
    validation_fraction=0.5,
    patience=3,
    monitor="valid_loss",
    callbacks=[test_score],
    precision="fp32",  # a technique, not a speed test: the same on every CPU
    random_state=0,
)
start = time.perf_counter()
clf.fit(X_train, y_train)
print(f"fit: {time.perf_counter() - start:.0f} s")

history = clf.history_
print("history keys:", sorted(history[-1]))
epochs = np.array(history[:, "epoch"])
curves = {
    key: np.array(history[:, key])
    for key in ("train_loss", "valid_loss", "valid_acc", "test_loss", "test_acc")
}
best, stopped = clf.best_epoch_, clf.n_epochs_
print(f"best epoch {best}, stopped after {stopped} of {clf.max_epochs} epochs")
for e in epochs:
    print(
        f"epoch {e:2d}: train loss {curves['train_loss'][e - 1]:.3f}  "
        f"valid loss {curves['valid_loss'][e - 1]:.3f}  "
        f"valid acc {curves['valid_acc'][e - 1]:.3f}  "
        f"test loss {curves['test_loss'][e - 1]:.3f}  "
        f"test acc {curves['test_acc'][e - 1]:.3f}"
    )

# %%
# The curves
# ----------
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
ax_loss.plot(epochs, curves["train_loss"], "o-", label="train loss")
ax_loss.plot(epochs, curves["valid_loss"], "o-", label="validation loss")
ax_loss.plot(epochs, curves["test_loss"], "o--", alpha=0.6, label="test loss")
ax_acc.plot(epochs, curves["valid_acc"], "o-", color="C1", label="validation accuracy")
ax_acc.plot(
    epochs, curves["test_acc"], "o--", color="C2", alpha=0.6, label="test accuracy"
)
for ax in (ax_loss, ax_acc):
    ax.axvline(best, color="k", ls=":", label=f"best epoch ({best}): weights kept")
    ax.axvline(stopped, color="C3", ls="--", label=f"stopped ({stopped})")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
ax_loss.plot(best, curves["valid_loss"][best - 1], "*", ms=16, color="C1")
ax_acc.plot(best, curves["valid_acc"][best - 1], "*", ms=16, color="C1")
ax_loss.legend(fontsize=8, loc="upper right")
ax_acc.legend(fontsize=8, loc="lower right")
ax_loss.set_ylabel("cross-entropy")
ax_acc.set_ylabel("accuracy")
ax_loss.set_title("losses")
ax_acc.set_title("accuracies")
fig.suptitle(
    f"EfficientNet-Lite0, last 4 stages fine-tuned: {len(X_train)} images "
    f"(half held out for validation), {SIZE} px"
)
fig.tight_layout()
plt.show()

# %%
# The weights kept are the best epoch's
# -------------------------------------
# The fitted classifier is scored on the test images like any sklearn
# classifier and compared with what the callback recorded at the best and at
# the last epoch. ``predict_proba`` may be temperature-scaled (the default
# ``calibration="auto"`` fits a temperature on a large enough validation
# split after training: it changes the confidence, never the predicted
# class; ``temperature_`` is 1 otherwise), while the
# callback recorded the network's own softmax; so the test loss compared here
# is that of the softmax of ``decision_function``, the network's logits.
final_acc = clf.score(X_test, y_test)
final_loss = log_loss(y_test, softmax(clf.decision_function(X_test), axis=1))
calibrated_loss = log_loss(y_test, clf.predict_proba(X_test))
print(
    f"temperature scaling: temperature_ {clf.temperature_:.3f}, test loss "
    f"{final_loss:.3f} -> {calibrated_loss:.3f} (predict_proba)"
)
print(
    f"returned model: test accuracy {final_acc:.3f}, test loss {final_loss:.3f}\n"
    f"best epoch {best}:  test accuracy {curves['test_acc'][best - 1]:.3f}, "
    f"test loss {curves['test_loss'][best - 1]:.3f}\n"
    f"last epoch {stopped}: test accuracy {curves['test_acc'][stopped - 1]:.3f}, "
    f"test loss {curves['test_loss'][stopped - 1]:.3f}"
)

fig, ax = plt.subplots(figsize=(6.5, 2.6))
bars = {
    f"epoch {best} (best),\nrecorded in training": curves["test_acc"][best - 1],
    "returned model,\nclf.score(X_test, y_test)": final_acc,
    f"epoch {stopped} (last),\nrecorded in training": curves["test_acc"][stopped - 1],
}
ax.barh(list(bars)[::-1], list(bars.values())[::-1], color=["C3", "C0", "C1"])
for i, v in enumerate(list(bars.values())[::-1]):
    ax.text(v + 0.01, i, f"{v:.3f}", va="center")
ax.set_xlim(0, 1)
ax.set_xlabel("test accuracy (1,000 images)")
ax.set_title("The classifier keeps the best epoch's weights")
fig.tight_layout()
plt.show()

# %%
# What we see
# -----------
# Read from the history of this run:
tl, vl, va = curves["train_loss"], curves["valid_loss"], curves["valid_acc"]
n_valid = int(np.ceil(len(X_train) * clf.validation_fraction))  # as sklearn splits
rises = int(np.sum(np.diff(vl[best - 1 :]) > 0))
print(
    f"training loss: {tl[0]:.3f} after epoch 1, {tl[-1]:.3f} after epoch "
    f"{stopped}; it fell in {int(np.sum(np.diff(tl) < 0))} of {len(tl) - 1} epochs"
)
print(
    f"validation loss: lowest at epoch {best} ({vl[best - 1]:.3f}), then "
    + ", ".join(f"{v:.3f}" for v in vl[best:])
    + f" ({rises} rise(s) in the {stopped - best} epochs after it)"
)
print(
    f"early stopping: stopped after epoch {stopped} of the {clf.max_epochs} "
    f"allowed (patience={clf.patience}); best_epoch_ = {best}"
)
recorded_acc, last_acc = curves["test_acc"][best - 1], curves["test_acc"][-1]
same = np.isclose(final_acc, recorded_acc) and np.isclose(
    final_loss, curves["test_loss"][best - 1], atol=1e-3
)
print(
    f"returned model = epoch-{best} network: {same} (test accuracy "
    f"{final_acc:.3f} vs {recorded_acc:.3f} recorded at epoch {best})"
)
print(
    f"restoring the best epoch instead of keeping the last: test accuracy "
    f"{final_acc - last_acc:+.3f}, "
    f"test loss {final_loss - curves['test_loss'][-1]:+.3f}"
)
test_best = int(epochs[np.argmin(curves["test_loss"])])
acc_best = int(epochs[np.argmax(va)])
print(
    f"the test loss was lowest at epoch {test_best}; the validation accuracy "
    f"peaked at epoch {acc_best} ({va.max():.3f}) and moved by up to "
    f"{np.abs(np.diff(va)).max():.3f} from one epoch to the next "
    f"({n_valid} validation images)"
)

# %%
# When the validation loss rises while the training loss keeps falling, the
# network fits its training images at the expense of new ones: that is the
# moment early stopping looks for, and ``patience`` epochs later it stops. The
# returned classifier is the best epoch's network, not the last one (the line
# "returned model = epoch-N network" checks it), so stopping late costs only
# time: restoring the best epoch's weights is what protects the score.
#
# The validation set picks the epoch; the test set, never used for that, only
# reports. They need not agree on the best epoch, and a validation curve of a
# couple of hundred images is noisy from epoch to epoch, which is what
# ``patience`` is for. ``monitor="valid_acc"`` selects on accuracy instead.
