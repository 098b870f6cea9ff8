"""Classifier heads on top of features: class means, cosine logits, linear probes.

One owner for the few pieces of head arithmetic that :class:`FineTunedClassifier`
and the few-shot heads share (private):

* :func:`normalize_rows` -- rows scaled to unit length;
* :func:`class_sums` / :func:`class_means` -- (weighted) sums and normalized
  means of the normalized features per class (the few-shot recipe's
  prototypes ``M``);
* :func:`cosine_logits` -- ``scale * normalize(x) @ normalize(W).T``;
* :class:`CosineHead` -- that product as a module with a learnable scale;
* :func:`build_head` -- a new linear or cosine head, initialized from a generator
  the fit owns (never the global RNG);
* :func:`fit_linear_probe` -- the exact linear probe: multinomial logistic
  regression (LBFGS) with an L2 penalty, for LP-FT's head initialization;
* :func:`fit_temperature` -- temperature scaling of a fitted net's logits.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._runtime import GLOBAL_RNG_LOCK

__all__ = [
    "CosineHead",
    "build_head",
    "class_means",
    "class_sums",
    "cosine_logits",
    "fit_linear_probe",
    "fit_temperature",
    "normalize_rows",
    "probe_C",
]


def _floating(x):
    """``x`` as a float tensor: float64 stays float64, anything else float32."""
    x = torch.as_tensor(x)
    return x if x.dtype == torch.float64 else x.float()


#: Rows shorter than this have no direction: :func:`normalize_rows` maps them to 0.
NORM_EPS = 1e-6


def normalize_rows(x):
    """Rows of ``x`` (a tensor or an array) scaled to unit L2 norm.

    A row whose norm is below :data:`NORM_EPS` has no direction: it becomes a
    zero row, and no gradient flows back through it. (``F.normalize`` divides
    such rows by its ``eps`` instead, so the gradient of an all-zero feature
    row is ``1 / eps`` = 1e12 times the upstream one: with a cosine head that
    is what a dead feature row sends into the network.) Other rows are
    ``x / ||x||`` exactly as ``F.normalize`` computes them. float64 stays
    float64, other inputs become float32.
    """
    x = _floating(x)
    norm = x.norm(2, dim=1, keepdim=True)
    tiny = norm < NORM_EPS
    scaled = x / torch.where(tiny, torch.ones_like(norm), norm)
    return torch.where(tiny, torch.zeros_like(x), scaled)


def class_sums(feats, labels, n_classes, sample_weight=None, normalize=True):
    """Per class, the (weighted) sum of its feature rows and its total weight.

    Parameters
    ----------
    feats : tensor or array of shape (n, d)
    labels : tensor or array of shape (n,), ints in ``[0, n_classes)``
    n_classes : int
    sample_weight : tensor or array of shape (n,), default=None
        Weights of the rows (default: 1 each).
    normalize : bool, default=True
        Sum the L2-normalized rows (cosine geometry) rather than the raw ones.

    Returns
    -------
    sums : torch.Tensor of shape (n_classes, d)
    totals : torch.Tensor of shape (n_classes,)
        Sum of the weights of each class's rows (0 for a class without rows).
    """
    z = normalize_rows(feats) if normalize else _floating(feats)
    labels = torch.as_tensor(labels).long()
    sums = torch.zeros(n_classes, z.shape[1], dtype=z.dtype)
    if sample_weight is None:
        w = torch.ones(len(z), dtype=z.dtype)
        sums.index_add_(0, labels, z)
    else:
        w = torch.as_tensor(sample_weight).to(z.dtype)
        sums.index_add_(0, labels, z * w[:, None])
    totals = torch.zeros(n_classes, dtype=z.dtype).index_add_(0, labels, w)
    return sums, totals


def class_means(feats, labels, n_classes, sample_weight=None):
    """Normalized (weighted) mean of the L2-normalized features of each class.

    The parameters are :func:`class_sums`'s (with ``normalize=True``).

    Returns
    -------
    means : torch.Tensor of shape (n_classes, d), rows of unit length (a class
        without examples gets a zero row).
    """
    sums, _ = class_sums(feats, labels, n_classes, sample_weight)
    return normalize_rows(sums)


def cosine_logits(x, weight, scale):
    """``scale * normalize(x) @ normalize(weight).T`` (rows normalized).

    Rows of ``x`` without a direction (:func:`normalize_rows`) score 0 for
    every class.
    """
    return scale * normalize_rows(x) @ normalize_rows(weight).T


class CosineHead(nn.Module):
    """Cosine-similarity classifier: ``scale * normalize(x) @ normalize(W).T``.

    The few-shot recipe's head: logits depend on directions only, with a
    learnable temperature ``scale``.
    """

    def __init__(self, in_features, out_features, scale=10.0, generator=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        nn.init.xavier_uniform_(self.weight, generator=generator)

    def forward(self, x):
        return cosine_logits(x, self.weight, self.scale)


def build_head(kind, init, n_features, n_classes, generator=None):
    """A new ``"linear"`` or ``"cosine"`` head; biases start at 0.

    Random inits draw from ``generator`` (the fit's own), so concurrent fits in
    threads do not share the global RNG. ``"class_means"`` and ``"lp"`` are
    applied later, from features (xavier until then).
    """
    if kind == "cosine":
        head = CosineHead(n_features, n_classes, generator=generator)
        if init == "normal":
            nn.init.normal_(head.weight, std=0.01, generator=generator)
        return head
    # nn.Linear's constructor draws a default init from torch's global RNG: in a
    # fit running beside another in a thread, that draw would come out of the
    # other fit's owned stream (see _training.OwnedRNG) and change its dropout
    # masks. Construct it with the global RNG forked and locked.
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        head = nn.Linear(n_features, n_classes)
    nn.init.zeros_(head.bias)
    if init == "normal":
        nn.init.normal_(head.weight, std=0.01, generator=generator)
    elif init == "zeros":
        nn.init.zeros_(head.weight)
    else:
        nn.init.xavier_uniform_(head.weight, generator=generator)
    return head


def probe_C(weight_decay, total_weight):
    """sklearn's ``C`` for the penalty ``weight_decay / 2 * ||W||**2`` on the mean loss.

    ``LogisticRegression`` minimizes ``C * sum_i w_i CE_i + ||W||**2 / 2``;
    dividing by ``C * sum_i w_i`` gives ``mean_w CE + ||W||**2 / (2 C sum_i w_i)``,
    so ``C = 1 / (weight_decay * sum_i w_i)``. ``weight_decay=0`` means no
    penalty (``C = inf``).
    """
    if weight_decay <= 0:
        return np.inf
    return 1.0 / (weight_decay * float(total_weight))


def fit_linear_probe(feats, labels, n_classes, weight_decay, sample_weight=None):
    """Exact multinomial logistic regression on features (LP-FT's linear probe).

    Minimizes the (sample-weighted) mean cross-entropy plus
    ``weight_decay / 2 * ||W||**2`` (bias unpenalized) with LBFGS, through
    sklearn's ``LogisticRegression``.

    Parameters
    ----------
    feats : array-like of shape (n, d)
    labels : array-like of shape (n,), ints in ``[0, n_classes)``
    n_classes : int
    weight_decay : float
        The L2 coefficient on the mean loss (see :func:`probe_C`).
    sample_weight : array-like of shape (n,), default=None

    Returns
    -------
    weight : torch.Tensor of shape (n_classes, d)
    bias : torch.Tensor of shape (n_classes,)
        Classes absent from ``labels`` get weight 0 and a bias far below the
        others (they are never predicted until training moves them).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels)
    sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    total = len(y) if sw is None else sw.sum()
    present = np.unique(y)
    weight = np.zeros((n_classes, X.shape[1]))
    bias = np.full(n_classes, -10.0)
    if len(present) < 2:
        bias[present] = 0.0
    else:
        C = probe_C(weight_decay, total)
        if len(present) == 2:
            # sklearn fits one row d = w1 - w0 for two classes; the softmax head's
            # optimum is symmetric (w1 = -w0 = d / 2), whose penalty
            # (|w0|^2 + |w1|^2) / 2 = |d|^2 / 4 is sklearn's with C doubled.
            C = 2 * C
        lr = LogisticRegression(C=C, max_iter=1000, tol=1e-6)
        # One BLAS thread: LBFGS on a few hundred rows gains nothing from more,
        # and spinning BLAS threads on a busy machine cost 10x.
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(X, y, sample_weight=sw)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row (class 1 vs 0)
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        weight[lr.classes_] = coef
        bias[lr.classes_] = intercept
    return torch.from_numpy(weight).float(), torch.from_numpy(bias).float()


def label_directions(feats, indicator):
    """Per label, the direction from the images without it to those with it.

    The class-means init of a multi-label head: row ``j`` is the normalized
    difference of the mean L2-normalized feature of the rows that carry label
    ``j`` and of those that do not (a label carried by every row, or by none,
    gets its mean's direction, or a zero row).

    Parameters
    ----------
    feats : tensor of shape (n, d)
    indicator : tensor of shape (n, n_labels), 0/1

    Returns
    -------
    directions : torch.Tensor of shape (n_labels, d)
    """
    z = normalize_rows(_floating(feats))
    pos = torch.as_tensor(indicator).to(z) > 0.5
    rows = []
    for j in range(pos.shape[1]):
        on, off = z[pos[:, j]], z[~pos[:, j]]
        mean_on = on.mean(0) if len(on) else torch.zeros(z.shape[1]).to(z)
        mean_off = off.mean(0) if len(off) else torch.zeros(z.shape[1]).to(z)
        rows.append(mean_on - mean_off)
    return normalize_rows(torch.stack(rows))


def fit_binary_probes(feats, indicator, n_labels, weight_decay, sample_weight=None):
    """One exact binary logistic regression per label (multi-label LP-FT).

    Each minimizes the (sample-weighted) mean binary cross-entropy of its label
    plus ``weight_decay / 2 * ||w||**2`` (bias unpenalized): sklearn's
    ``LogisticRegression(C=1 / (weight_decay * sum(w)))``, as
    :func:`fit_linear_probe`. A label carried by every row or by none gets
    weight 0 and a bias of +10 or -10.

    Returns
    -------
    weight : torch.Tensor of shape (n_labels, d)
    bias : torch.Tensor of shape (n_labels,)
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X = np.asarray(feats, dtype=np.float64)
    Y = np.asarray(indicator) > 0.5
    sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    total = len(Y) if sw is None else sw.sum()
    weight = np.zeros((n_labels, X.shape[1]))
    bias = np.zeros(n_labels)
    C = probe_C(weight_decay, total)
    for j in range(n_labels):
        if Y[:, j].all() or not Y[:, j].any():
            bias[j] = 10.0 if Y[:, j].all() else -10.0
            continue
        lr = LogisticRegression(C=C, max_iter=1000, tol=1e-6)
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(X, Y[:, j], sample_weight=sw)
        weight[j], bias[j] = lr.coef_[0], lr.intercept_[0]
    return torch.from_numpy(weight).float(), torch.from_numpy(bias).float()


def fit_ridge_probe(feats, targets, weight_decay, sample_weight=None):
    """The exact ridge regression of ``targets`` on ``feats`` (the regressor's
    LP-FT): the head the squared-error fine-tune would start at its optimum.

    Minimizes the (sample-weighted) mean over rows of the mean squared error
    over the ``k`` outputs plus ``weight_decay / 2 * ||W||**2`` (bias
    unpenalized): sklearn's ``Ridge(alpha=weight_decay * k * sum(w) / 2)``.

    Returns
    -------
    weight : torch.Tensor of shape (k, d)
    bias : torch.Tensor of shape (k,)
    """
    from sklearn.linear_model import Ridge

    X = np.asarray(feats, dtype=np.float64)
    T = np.asarray(targets, dtype=np.float64).reshape(len(X), -1)
    sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    total = len(T) if sw is None else sw.sum()
    alpha = weight_decay * T.shape[1] * float(total) / 2
    ridge = Ridge(alpha=max(alpha, 1e-10)).fit(X, T, sample_weight=sw)
    coef = np.atleast_2d(ridge.coef_)
    return torch.from_numpy(coef).float(), torch.from_numpy(
        np.atleast_1d(ridge.intercept_)
    ).float()


def fit_temperature(logits, targets, multilabel=False):
    """Temperature scaling: the ``T > 0`` minimizing the log-loss of ``logits / T``.

    Guo et al. 2017 ("On Calibration of Modern Neural Networks"): one scalar
    fitted on held-out logits rescales confidence without changing any
    prediction (the argmax, a logit's sign). Single-label: the mean
    cross-entropy of ``softmax(logits / T)`` against class indices;
    multi-label: the mean binary cross-entropy of ``sigmoid(logits / T)``
    against the 0/1 indicator. Minimized over ``log T`` (LBFGS, float64) from
    ``T = 1``, with a normal prior on ``log T`` (mean 0, sd 0.5) worth one
    example: ``(log T)**2 / (2 * 0.25 * n)`` is added to the mean loss. On a
    large split the prior is negligible; on a small one without errors it
    keeps ``T`` near 1, where the loss alone would drive ``T`` to 0 (every
    probability to 0 or 1). ``T`` is kept within ``[0.05, 20]``.

    Parameters
    ----------
    logits : tensor of shape (n, m)
    targets : tensor of shape (n,) (class indices) or (n, m) (0/1)
    multilabel : bool, default=False

    Returns
    -------
    temperature : float
    """
    z = torch.as_tensor(logits, dtype=torch.float64).detach()
    t = torch.as_tensor(targets)
    if multilabel:
        t = t.to(torch.float64)

        def loss(log_t):
            return F.binary_cross_entropy_with_logits(z / log_t.exp(), t)

    else:
        t = t.to(torch.int64)

        def loss(log_t):
            return F.cross_entropy(z / log_t.exp(), t)

    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe"
    )
    prior = 1.0 / (2 * 0.5**2 * len(z))

    def closure():
        opt.zero_grad()
        value = loss(log_t) + prior * log_t**2
        value.backward()
        return value

    opt.step(closure)
    value = float(log_t.detach().exp())
    if not np.isfinite(value):
        return 1.0
    return float(np.clip(value, 0.05, 20.0))
