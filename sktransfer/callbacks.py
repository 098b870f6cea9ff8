"""skorch callbacks users may add to :class:`~sktransfer.FineTunedClassifier`.

Pass them with ``FineTunedClassifier(callbacks=[...])``; what they record lands in
the skorch history of the fitted estimator (``clf.net_.history``, also
``clf.history_``).
"""

from __future__ import annotations

from skorch.callbacks import Callback

__all__ = ["WeightTracker"]


class WeightTracker(Callback):
    """Record per-layer relative weight change and sparsity after every epoch.

    Makes two claims of the deep-learning literature measurable on your data:
    which layers settle first during training (the relative change of each layer's
    weights per epoch) and what L1 / L2 regularization does to the weights (how
    many are near zero).

    Parameters
    ----------
    tol : float, default=1e-3
        A weight counts as (near) zero when ``|w| < tol``.
    depth : int or None, default=None
        How layers are grouped. ``None``: one entry per module owning weights
        (e.g. ``"body.blocks.2.0.conv_pw"``). An int keeps the first ``depth``
        dotted parts of the name, e.g. ``depth=3`` gives ``"body.blocks.2"``
        (one entry per stage of an EfficientNet).
    trainable_only : bool, default=True
        Only track parameters that require a gradient when training starts
        (frozen layers never change).
    include_bias : bool, default=False
        Also track 1-D tensors (biases, BatchNorm scales and shifts). By default
        only weight matrices and convolution kernels are tracked, the tensors L1
        and L2 penalties act on.

    Notes
    -----
    After each epoch the history holds, per group ``g``:

    - ``weight_change``: ``{g: ||W_t - W_{t-1}|| / ||W_{t-1}||}``, Frobenius norms
      over the group's tensors (``W_0`` = the weights when training begins);
    - ``near_zero``: ``{g: number of weights with |w| < tol}``;
    - ``n_weights``: ``{g: number of weights}`` (recorded once, in the first epoch
      row, to turn counts into fractions).

    Read them with ``clf.net_.history[:, "weight_change"]``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import FineTunedClassifier
    >>> from sktransfer.callbacks import WeightTracker
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    >>> y = np.arange(16) % 2
    >>> clf = FineTunedClassifier(model="timm/test_efficientnet", weights=None,
    ...                           input_size=16, max_epochs=2, random_state=0,
    ...                           train_layers="all",
    ...                           callbacks=[WeightTracker(depth=3)]).fit(X, y)
    >>> changes = clf.history_[-1, "weight_change"]
    >>> sorted(changes)[:2]
    ['body.blocks.0', 'body.blocks.1']
    """

    def __init__(self, tol=1e-3, depth=None, trainable_only=True, include_bias=False):
        self.tol = tol
        self.depth = depth
        self.trainable_only = trainable_only
        self.include_bias = include_bias

    def _group(self, name):
        owner = name.rpartition(".")[0] or name
        if self.depth is None:
            return owner
        return ".".join(owner.split(".")[: self.depth])

    def _tracked(self, net):
        groups = {}
        for name, p in net.module_.named_parameters():
            if self.trainable_only and name not in self._names:
                continue
            if p.ndim < 2 and not self.include_bias:
                continue
            groups.setdefault(self._group(name), []).append(p)
        return groups

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._names = {
            n
            for n, p in net.module_.named_parameters()
            if p.requires_grad or not self.trainable_only
        }
        # Body parameters frozen only for the first (head-only) epochs still count.
        config = getattr(net, "config", None)
        self._names |= {f"body.{n}" for n in getattr(config, "trainable", ())}
        self._previous = {
            g: [p.detach().float().clone() for p in ps]
            for g, ps in self._tracked(net).items()
        }
        self._first = True

    def on_epoch_end(self, net, **kwargs):
        change, near_zero, sizes = {}, {}, {}
        for g, ps in self._tracked(net).items():
            now = [p.detach().float() for p in ps]
            before = self._previous[g]
            diff = sum(
                float(((a - b) ** 2).sum()) for a, b in zip(now, before, strict=True)
            )
            base = sum(float((b**2).sum()) for b in before)
            change[g] = (diff**0.5) / max(base**0.5, 1e-12)
            near_zero[g] = int(sum(int((t.abs() < self.tol).sum()) for t in now))
            sizes[g] = int(sum(t.numel() for t in now))
            self._previous[g] = [t.clone() for t in now]
        net.history.record("weight_change", change)
        net.history.record("near_zero", near_zero)
        if self._first:
            net.history.record("n_weights", sizes)
            self._first = False

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_previous", None)  # training-time scratch, not worth pickling
        return state
