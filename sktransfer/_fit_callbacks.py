"""skorch callbacks FineTunedClassifier adds to every fit (private).

Head-first phases, the learning-rate schedule, the NaN guard and early stopping
with in-memory best weights. The public, user-facing callbacks live in
:mod:`sktransfer.callbacks`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from skorch.callbacks import Callback


class PhaseSwitch(Callback):
    """Head-only for the first ``freeze_epochs`` epochs, then ``train_layers``."""

    def __init__(self, freeze_epochs):
        self.freeze_epochs = freeze_epochs

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history) - 1  # skorch added the new row already
        head_only = epoch < self.freeze_epochs
        module = net.module_
        if head_only != module.head_only or epoch == 0:
            module.head_only = head_only
            trainable = net.ft["trainable"]
            for name, p in module.body.named_parameters():
                p.requires_grad_(not head_only and name in trainable)


class Schedule(Callback):
    """Per-batch learning-rate schedule, restarted at the start of each phase.

    ``"cosine"`` anneals each group from its base LR to 0; ``"onecycle"`` warms up
    linearly over the first 30% of the phase from base/25, then anneals.
    """

    def __init__(self, kind, phases, steps_per_epoch):
        self.kind = kind
        self.phases = phases  # [(first_epoch, n_epochs), ...]
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, net, **kwargs):
        self._batch = 0

    def _factor(self, t):
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if t < 0.3:
            return 0.04 + 0.96 * t / 0.3
        return 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        epoch = len(net.history) - 1
        start, length = next((s, n) for s, n in reversed(self.phases) if epoch >= s)
        total = max(length * self.steps_per_epoch, 1)
        done = (epoch - start) * self.steps_per_epoch + self._batch
        self._batch += 1
        factor = self._factor(min(done / total, 1.0))
        for group in net.optimizer_.param_groups:
            group["lr"] = group["base_lr"] * factor


class NaNGuard(Callback):
    """Stop with a clear error as soon as the training loss is not finite."""

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if training and loss is not None and not torch.isfinite(loss.detach()).all():
            loss = loss.detach()
            lrs = sorted({g["base_lr"] for g in net.optimizer_.param_groups})
            raise ValueError(
                f"the training loss became {loss.item()} in epoch "
                f"{len(net.history)}: training diverged. Lower the learning rate "
                f"(now lr={net.ft['lr']:g}, backbone_lr={net.ft['backbone_lr']:g}; "
                f"group rates {lrs}), or the l1 penalty (l1={net.ft['l1']:g})."
            )


class BestWeights(Callback):
    """Early stopping that keeps the best weights in memory and restores them.

    No file is written (safe with ``n_jobs > 1``). ``monitor`` is a history key
    (``"valid_loss"`` or ``"valid_acc"``). On a ``KeyboardInterrupt`` skorch stops
    training; this callback still restores the best weights and says so.
    """

    def __init__(self, monitor="valid_loss", patience=5, early_stopping=True):
        self.monitor = monitor
        self.patience = patience
        self.early_stopping = early_stopping

    def on_train_begin(self, net, **kwargs):
        self.best_score_ = None
        self.best_epoch_ = None
        self.best_state_ = None
        self.stopped_early_ = False
        self.epochs_done_ = 0
        self._waited = 0

    def _better(self, score):
        if self.best_score_ is None:
            return True
        if self.monitor.endswith("loss"):
            return score < self.best_score_ - 1e-4 * abs(self.best_score_)
        return score > self.best_score_

    def on_epoch_end(self, net, **kwargs):
        self.epochs_done_ += 1
        if not self.early_stopping:
            return
        score = net.history[-1, self.monitor]
        if self._better(score):
            self.best_score_ = score
            self.best_epoch_ = len(net.history)
            self.best_state_ = {
                k: v.detach().clone() for k, v in net.module_.state_dict().items()
            }
            self._waited = 0
        else:
            self._waited += 1
        net.history.record("best_epoch", self.best_epoch_)
        if self._waited >= self.patience and self.epochs_done_ < net.max_epochs:
            self.stopped_early_ = True
            raise KeyboardInterrupt  # skorch's documented way to end training

    def on_train_end(self, net, **kwargs):
        interrupted = not self.stopped_early_ and self.epochs_done_ < net.max_epochs
        if self.best_state_ is not None:
            net.module_.load_state_dict(self.best_state_)
        if interrupted:
            kept = (
                f"the best weights so far (epoch {self.best_epoch_}, "
                f"{self.monitor}={self.best_score_:.4g}) were restored"
                if self.best_state_ is not None
                else "the weights of the last training step are kept (no "
                "validation data to pick the best epoch: use early_stopping=True)"
            )
            warnings.warn(
                f"training was interrupted after {self.epochs_done_} complete "
                f"epoch(s) of {net.max_epochs}; {kept}.",
                UserWarning,
                stacklevel=2,
            )
        self.best_state_ = None  # free the copy: the module holds these weights now


class DrawViews(Callback):
    """Pick one cached augmented view per training image at each epoch.

    Views ``1..n_views`` of :class:`~sktransfer._activations.CachedDataset`;
    the draw of epoch ``e`` depends on ``(seed, e)`` alone.
    """

    def __init__(self, dataset, n_views, seed):
        self.dataset = dataset
        self.n_views = n_views
        self.seed = seed

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history) - 1
        rng = np.random.default_rng([self.seed, epoch])
        self.dataset.views = rng.integers(1, self.n_views + 1, len(self.dataset))
