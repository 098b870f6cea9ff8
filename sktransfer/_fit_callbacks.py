"""skorch callbacks FineTunedClassifier adds to every fit (private).

skorch's own callbacks where they fit, subclassed only for what we add:
early stopping with in-memory best weights is :class:`skorch.callbacks.EarlyStopping`
(:class:`BestWeights`), the learning-rate schedule is
:class:`skorch.callbacks.LRScheduler` stepping a ``LambdaLR`` every batch
(:func:`lr_schedule`). What skorch has no callback for stays ours: the head-first
phases, the NaN guard and the draw of cached augmented views. The public,
user-facing callbacks live in :mod:`sktransfer.callbacks`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.utils import noop
from torch.optim.lr_scheduler import LambdaLR


class PhaseSwitch(Callback):
    """Head-only for the first ``config.freeze_epochs`` epochs, then ``train_layers``.

    skorch's ``Freezer`` / ``Unfreezer`` only flip ``requires_grad``; the phase
    also decides which modules run in training mode, so one callback tells the
    module the phase through
    :meth:`~sktransfer._training.FineTuneModule.enter_phase`.
    """

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        epoch = len(net.history) - 1  # skorch added the new row already
        phase = "head" if epoch < net.config.freeze_epochs else "body"
        if phase != net.module_.phase or epoch == 0:
            net.module_.enter_phase(phase, net.config.trainable)
        for dataset in (dataset_train, dataset_valid):
            if hasattr(dataset, "phase"):  # cached rows follow the module's cut
                dataset.phase = phase


class PhaseCurve:
    """Learning-rate factor of global training step ``step``, restarted per phase.

    ``phases``: ``[(first_step, n_steps), ...]``. ``"cosine"`` anneals from 1 to
    0 over each phase; ``"onecycle"`` warms up linearly from 1/25 over the first
    30% of the phase, then anneals. A class (not a closure) so fitted nets
    pickle.
    """

    def __init__(self, kind, phases):
        self.kind = kind
        self.phases = phases

    def __call__(self, step):
        start, total = next((s, n) for s, n in reversed(self.phases) if step >= s)
        t = min((step - start) / total, 1.0)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if t < 0.3:
            return 0.04 + 0.96 * t / 0.3
        return 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))


def lr_schedule(kind, freeze_epochs, max_epochs, steps_per_epoch):
    """skorch's ``LRScheduler``: a per-batch ``LambdaLR`` following :class:`PhaseCurve`.

    Every parameter group is scaled from its own base rate (head and body rates
    keep their ratio); the curve restarts when the body is unfrozen after
    ``freeze_epochs``. The rate in use is recorded per batch as ``event_lr``.
    """
    epochs = [(0, freeze_epochs), (freeze_epochs, max_epochs - freeze_epochs)]
    phases = [
        (first * steps_per_epoch, max(n * steps_per_epoch, 1))
        for first, n in epochs
        if n > 0
    ]
    return LRScheduler(
        policy=LambdaLR,
        step_every="batch",
        lr_lambda=PhaseCurve(kind, phases),
    )


class NaNGuard(Callback):
    """Stop with a clear error as soon as the training or validation loss is not
    finite (a NaN validation loss would otherwise leave no best epoch to keep).

    skorch has no such callback.
    """

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if training and loss is not None and not torch.isfinite(loss.detach()).all():
            self._diverged(net, "training", loss.detach().item())

    def on_epoch_end(self, net, **kwargs):
        valid = net.history[-1].get("valid_loss")
        if valid is not None and not np.isfinite(valid):
            self._diverged(net, "validation", valid)

    @staticmethod
    def _diverged(net, which, value):
        lrs = sorted({g["base_lr"] for g in net.optimizer_.param_groups})
        config = net.config
        raise ValueError(
            f"the {which} loss became {value} in epoch {len(net.history)}: "
            f"training diverged. Lower the learning rate (now lr={config.lr:g}, "
            f"backbone_lr={config.backbone_lr:g}; group rates {lrs}), or the l1 "
            f"penalty (l1={config.l1:g})."
        )


class BestWeights(EarlyStopping):
    """skorch's ``EarlyStopping(load_best=True)``, plus what FineTunedClassifier adds.

    The best weights are kept in memory (no file is written: safe with
    ``n_jobs > 1`` and in threads) and restored at the end of training.
    ``monitor`` is a history key (``"valid_loss"``: lower is better, relative
    threshold 1e-4; ``"valid_acc"``: any gain counts). Added to skorch's:

    * on a ``KeyboardInterrupt`` (Ctrl-C, or a callback raising it) skorch
      stops training; the best weights so far are restored as well, and a
      warning says so;
    * ``epochs_done_`` (complete epochs) and ``best_epoch_`` (None without
      validation data), and the ``best_epoch`` column of the history;
    * ``early_stopping=False`` (no validation data) only counts epochs and
      warns on an interrupt;
    * patience running out in the last epoch is not an early stop.
    """

    def __init__(self, monitor="valid_loss", patience=5, early_stopping=True):
        lower = monitor.endswith("loss")
        super().__init__(
            monitor=monitor,
            patience=patience,
            threshold=1e-4 if lower else 0.0,
            threshold_mode="rel" if lower else "abs",
            lower_is_better=lower,
            sink=noop,
            load_best=True,
        )
        self.early_stopping = early_stopping

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.best_score_ = None
        self.stopped_early_ = False
        self.epochs_done_ = 0

    def on_epoch_end(self, net, **kwargs):
        self.epochs_done_ += 1
        if not self.early_stopping:
            return
        try:
            super().on_epoch_end(net, **kwargs)
            stop = False
        except KeyboardInterrupt:  # skorch's documented way to end training
            stop = True
        if self.misses_ == 0:
            self.best_score_ = net.history[-1, self.monitor]
        net.history.record("best_epoch", self.best_epoch_ or None)
        if stop and self.epochs_done_ < net.max_epochs:
            self.stopped_early_ = True
            raise KeyboardInterrupt

    def on_train_end(self, net, **kwargs):
        if self.early_stopping:
            super().on_train_end(net, **kwargs)
        self.best_epoch_ = (self.best_epoch_ or None) if self.early_stopping else None
        restored = self.best_model_weights_ is not None
        self.best_model_weights_ = None  # the module holds these weights now
        if self.stopped_early_ or self.epochs_done_ >= net.max_epochs:
            return
        kept = (
            f"the best weights so far (epoch {self.best_epoch_}, "
            f"{self.monitor}={self.best_score_:.4g}) were restored"
            if restored
            else "the weights of the last training step are kept (no "
            "validation data to pick the best epoch: use early_stopping=True)"
        )
        warnings.warn(
            f"training was interrupted after {self.epochs_done_} complete "
            f"epoch(s) of {net.max_epochs}; {kept}.",
            UserWarning,
            stacklevel=2,
        )


class DrawViews(Callback):
    """Pick one cached augmented view per training image at each epoch.

    Views ``1..n_views`` of :class:`~sktransfer._activations.CachedDataset`;
    the draw of epoch ``e`` depends on ``(seed, e)`` alone. skorch has no
    such callback.
    """

    def __init__(self, dataset, n_views, seed):
        self.dataset = dataset
        self.n_views = n_views
        self.seed = seed

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history) - 1
        rng = np.random.default_rng([self.seed, epoch])
        self.dataset.views = rng.integers(1, self.n_views + 1, len(self.dataset))
