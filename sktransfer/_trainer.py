"""The skorch side of fine-tuning: losses, the net, callbacks, trimming.

Private. One trainer for every fine-tuned estimator, shared by ``fit`` (which
trains with it) and :func:`sktransfer.load` (which rebuilds the trained net
with :func:`make_net` and :func:`trim`). What differs between the estimators
comes from their hooks (``_net_spec``: the net class, the loss and the
outputs); the module and the plan come from :mod:`sktransfer._training`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import unpack_data
from skorch.helper import predefined_split
from skorch.utils import to_tensor
from torch import nn

from ._anatomy import backbone_stages
from ._fit_callbacks import BestWeights, DrawViews, NaNGuard, PhaseSwitch, lr_schedule
from ._training import (
    bf16_unsafe_convs,
    fp32_convs,
    is_stochastic,
    make_loader,
    recalibrate_bn,
)


# ------------------------------------------------------------------------ losses
def _cross_entropy(out, y, label_smoothing):
    return F.cross_entropy(out, y, reduction="none", label_smoothing=label_smoothing)


def _per_row(loss):
    """A per-element loss of ``(n, k)`` outputs as the mean over each row."""

    def per_row(out, y, label_smoothing):
        return loss(out, y.to(out).reshape(out.shape), reduction="none").mean(1)

    return per_row


# Per-sample losses: ``(outputs, targets, label_smoothing) -> (n,)``.
LOSSES = {
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _per_row(F.binary_cross_entropy_with_logits),
    "squared_error": _per_row(F.mse_loss),
    "absolute_error": _per_row(F.l1_loss),
    "huber": _per_row(F.huber_loss),  # delta 1: one sd of the standardized target
}


class WeightedLoss(nn.Module):
    """A per-sample loss of :data:`LOSSES` and its (sample-weighted) mean.

    ``"cross_entropy"`` takes class indices (with ``label_smoothing``);
    the others take float targets of the outputs' shape (a multi-label
    indicator, or standardized regression targets), averaged over the
    outputs of each row before the weighted mean over rows.
    """

    def __init__(self, kind="cross_entropy", label_smoothing=0.0):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; one of {sorted(LOSSES)}")
        self.kind = kind
        self.label_smoothing = label_smoothing

    def forward(self, logits, y, weight=None):
        loss = LOSSES[self.kind](logits.float(), y, self.label_smoothing)
        if weight is None:
            return loss.mean()
        weight = weight.to(loss)
        return (loss * weight).sum() / weight.sum().clamp_min(1e-12)


def softmax(logits):
    return torch.softmax(logits, dim=-1)


def sigmoid(logits):
    return torch.sigmoid(logits)


def identity(outputs):
    return outputs


# ------------------------------------------------------- layer-wise lr decay
def layer_scales(body, decay):
    """Layer-wise learning-rate decay: body parameter name -> ``(layer, scale)``.

    As BEiT and timm's ``param_groups_layer_decay`` do it: layers are numbered
    input side first, the head is the layer after the last, and a parameter
    ``k`` layers below the head trains at ``decay ** k`` times the body's
    rate. The numbering is timm's ``group_matcher(coarse=False)`` where the
    network has one: for a ViT, 0 the patch and position embeddings and the
    prefix tokens, ``i + 1`` block ``i`` (the final norm with the last
    block); so block ``i`` of ``n`` trains at ``decay ** (n - i)``, the
    embeddings at ``decay ** (n + 1)``, the head at the full rate. Networks
    without one (torchvision, a plain module) have one layer per stage of
    :func:`~sktransfer._anatomy.backbone_stages`, parameters outside every
    stage at layer 0.
    """
    names = [name for name, _ in body.named_parameters()]
    matcher = getattr(body, "group_matcher", None)
    if callable(matcher):
        from timm.models._manipulate import group_with_matcher

        head = "\0head"  # matched by nothing, like a timm head: the last layer
        pairs = [(name, None) for name in [*names, head]]
        ids = group_with_matcher(pairs, matcher(coarse=False), reverse=True)
        top = ids.pop(head)
    else:
        stages = [name for name, _ in backbone_stages(body)]
        ids = {
            name: next(
                (j + 1 for j, s in enumerate(stages) if name.startswith(s + ".")), 0
            )
            for name in names
        }
        top = len(stages) + 1
    return {name: (i, decay ** (top - i)) for name, i in ids.items()}


def _no_weight_decay(body):
    """Body parameters a timm network exempts from weight decay (``no_weight_decay()``:
    a ViT's position embedding and prefix tokens); empty for others."""
    exempt = getattr(body, "no_weight_decay", None)
    return set(exempt()) if callable(exempt) else set()


# ------------------------------------------------------------------------- nets
class _FineTuneNetMixin:
    """skorch net with discriminative LRs, L1, sample weights and autocast.

    ``config`` (a :class:`TrainConfig`) carries what skorch has no parameter
    for: the names of trainable body parameters, head / body learning rates,
    weight decay, the L1 strength, the optimizer, the head-only epochs, the
    autocast dtype and channels_last.

    The optimizer is built here rather than through skorch's
    ``optimizer__param_groups``: its groups follow a set of parameter names and
    the tensors' rank (no decay on BatchNorm, bias, scale, nor on what a timm
    network's ``no_weight_decay()`` names: a ViT's position embedding and
    prefix tokens), which name patterns cannot express; with
    ``config.layer_decay``, one body group per layer (:func:`layer_scales`).
    """

    def __init__(self, *args, config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = config
        # Set by the fit, cleared after it: the fit's own RNG stream for dropout
        # (None: no stochastic layer), and a hook run before each validation pass.
        self.rng_ = None
        self.before_valid_ = None

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if not training and iterator is not None and self.before_valid_ is not None:
            self.before_valid_()
        return super().run_single_epoch(
            iterator, training, prefix, step_fn, **fit_params
        )

    # ---- optimizer: only trainable tensors; no decay on BN, bias, scale, tokens
    def initialize_optimizer(self, triggered_directly=None):
        config = self.config
        trainable = config.trainable
        body = self.module_.body
        layers = layer_scales(body, config.layer_decay) if config.layer_decay else {}
        no_decay = _no_weight_decay(body)
        groups = {}
        for name, p in self.module_.named_parameters():
            if name.startswith("body."):
                sub = name[len("body.") :]
                if sub not in trainable:
                    continue
                lr, part = config.backbone_lr, "body"
                if sub in layers:
                    layer, scale = layers[sub]
                    lr, part = lr * scale, f"body.layer{layer}"
            else:
                sub, lr, part = None, config.lr, "head"
            decay = p.ndim > 1 and sub not in no_decay
            key = (part, decay)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "lr": lr,
                    "base_lr": lr,
                    "weight_decay": config.weight_decay if decay else 0.0,
                    "name": f"{part}{'' if decay else '_no_decay'}",
                }
            groups[key]["params"].append(p)
        if config.optimizer == "sgd":
            opt = torch.optim.SGD(list(groups.values()), lr=config.lr, momentum=0.9)
        else:
            opt = torch.optim.AdamW(list(groups.values()), lr=config.lr)
        self.optimizer_ = opt
        self.l1_params_ = [
            g for k, grp in groups.items() if k[1] for g in grp["params"]
        ]
        return self

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        weight = X.get("sample_weight") if isinstance(X, Mapping) else None
        loss = self.criterion_(y_pred, y_true, weight)
        l1 = self.config.l1
        if training and l1:
            penalty = sum(p.abs().sum() for p in self.l1_params_ if p.requires_grad)
            loss = loss + l1 * penalty
        return loss

    def _autocast(self):
        dtype = self.config.autocast
        if self.config.step_autocast is not None and self.module_.training:
            dtype = self.config.step_autocast
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def infer(self, x, **fit_params):
        x = to_tensor(x, device=self.device)
        img = x["x"] if isinstance(x, Mapping) else x
        if self.config.channels_last and img.ndim == 4:
            # (cached activations past the pooling are feature rows: no format)
            img = img.contiguous(memory_format=torch.channels_last)
        rng = self.rng_ if self.module_.training else None
        with self._autocast(), rng.active() if rng else contextlib.nullcontext():
            return self.module_(img).float()

    def train_step(self, batch, **fit_params):
        l1 = self.config.l1
        if l1:
            # Subgradient steps on |w| alone make weights oscillate around 0 and
            # never reach it. So a weight whose step crosses zero is clipped to
            # exactly 0 (truncated gradient, Tsuruoka et al. 2009), and a weight at
            # 0 stays there while |data gradient| <= l1 (0 is then optimal).
            params = [p for p in self.l1_params_ if p.requires_grad]
            signs = [torch.sign(p.detach()) for p in params]
            step = self._train_step(batch, **fit_params)
            with torch.no_grad():
                for p, s in zip(params, signs, strict=True):
                    crossed = torch.sign(p) * s < 0
                    if p.grad is not None:
                        crossed |= (s == 0) & (p.grad.abs() <= l1)
                    p.masked_fill_(crossed, 0.0)
            return step
        return self._train_step(batch, **fit_params)

    def _train_step(self, batch, **fit_params):
        if self.config.autocast is not torch.float16:
            return super().train_step(batch, **fit_params)
        # fp16 needs loss scaling against gradient underflow
        scaler = self.__dict__.get("grad_scaler_")
        if scaler is None:
            scaler = self.grad_scaler_ = torch.amp.GradScaler("cuda")
        self._zero_grad_optimizer()
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        scaler.step(self.optimizer_)
        scaler.update()
        return {"loss": loss, "y_pred": y_pred}


class FineTuneNet(_FineTuneNetMixin, NeuralNetClassifier):
    """The fine-tuning net of a single-label classifier (skorch's classifier
    net: its ``valid_acc`` column feeds ``monitor="valid_acc"``)."""


class FineTuneMultiOutputNet(_FineTuneNetMixin, NeuralNet):
    """The fine-tuning net of multi-label and regression targets (float
    targets; no accuracy column)."""


def make_net(est, module, device, config, **kwargs):
    """The skorch net around ``module``: what ``fit`` trains and ``load`` rebuilds.

    ``est`` gives the skorch parameters (``lr``, ``max_epochs``, ``batch_size``,
    ``optimizer``) and, through its ``_net_spec()`` hook, the net class, the
    loss and the extra constructor arguments; ``config`` is the
    :class:`~sktransfer._training.TrainConfig`; ``kwargs`` add the
    training-only settings (loaders, split, callbacks).
    """
    net_class, criterion, extra = est._net_spec()
    return net_class(
        module,
        criterion=criterion,
        optimizer=torch.optim.SGD if est.optimizer == "sgd" else torch.optim.AdamW,
        lr=est.lr,
        max_epochs=est.max_epochs,
        batch_size=est.batch_size,
        iterator_train=make_loader,
        iterator_valid=make_loader,
        device=str(device),
        config=config,
        **{"train_split": None, "verbose": 0, **extra, **kwargs},
    )


# -------------------------------------------------------------------- callbacks
def named_callback(cb, i):
    """``(name, callback)`` for the ``i``-th entry of ``callbacks``, checked."""

    def is_callback(c):
        return isinstance(c, Callback) or (
            isinstance(c, type) and issubclass(c, Callback)
        )

    if isinstance(cb, tuple):
        if len(cb) == 2 and isinstance(cb[0], str) and is_callback(cb[1]):
            return cb
    elif is_callback(cb):
        return (f"user_{i}", cb)
    raise TypeError(
        f"callbacks[{i}] is {cb!r}; each entry must be a skorch callback (an "
        f"instance or subclass of skorch.callbacks.Callback) or a (name, "
        f"callback) tuple."
    )


def fit_callbacks(est, config, data, steps_per_epoch, best):
    """Our callbacks, the user's, then early stopping (which may end the fit)."""
    callbacks = [("phase", PhaseSwitch()), ("nan_guard", NaNGuard())]
    if data.draw is not None:
        callbacks.append(("draw_views", data.draw))
    if est.scheduler is not None:
        schedule = lr_schedule(
            est.scheduler, config.freeze_epochs, est.max_epochs, steps_per_epoch
        )
        callbacks.append(("schedule", schedule))
    if est.verbose > 1:
        from skorch.callbacks import ProgressBar

        callbacks.append(("progress", ProgressBar()))
    for i, cb in enumerate(est.callbacks or []):
        callbacks.append(named_callback(cb, i))
    callbacks.append(("best_weights", best))
    return callbacks


# ------------------------------------------------------------------- training
def train(est, module, data, config, seed, rng, device):
    """skorch's training loop; the net and its :class:`BestWeights` callback.

    ``data`` is the fit's datasets (``_finetune_base._FitData``). Validation
    (early stopping) and the returned model use exact BatchNorm statistics:
    the moving averages of a short fine-tune still mix in the old data's
    statistics.
    """
    n_train = len(data.train)
    drop_last = n_train > est.batch_size and n_train % est.batch_size == 1
    steps = -(-n_train // est.batch_size) - drop_last
    best = BestWeights(est.monitor, est.patience, data.valid is not None)
    net = make_net(
        est,
        module,
        device,
        config,
        iterator_train__shuffle=True,
        iterator_train__seed=seed,
        iterator_train__num_workers=data.num_workers,
        iterator_train__drop_last=drop_last,
        train_split=None if data.valid is None else predefined_split(data.valid),
        callbacks=fit_callbacks(est, config, data, steps, best),
        verbose=est.verbose,
    )
    net.rng_ = rng if is_stochastic(module) else None
    steps_in = contextlib.nullcontext()
    if config.step_autocast is not None:
        p = est.preprocessing_
        probe = torch.zeros(2, p.in_chans, *p.input_size, device=device)
        steps_in = fp32_convs(bf16_unsafe_convs(module.body, probe))
    bns = module.trained_bns(config.trainable)
    if data.valid is not None and bns:

        def exact_bn():  # validate on the statistics the model will have
            if module.phase == "body":
                recalibrate_bn(module, data.plain, device, bns)

        net.before_valid_ = exact_bn
    with steps_in:
        net.fit(data.train, None)
    if module.phase_cuts is not None:  # the plain loader holds rows at the cut
        module.cut = module.phase_cuts["body"]
    recalibrate_bn(module, data.plain, device, bns)
    return net, best


def trim(net):
    """Keep the fitted state only: no optimizer moments, data or hooks.

    Applied after training and after ``load`` rebuilt a net.
    """
    module = net.module_
    module.cut = module.phase_cuts = None  # predictions take images
    net.optimizer_.state.clear()
    net.train_split = None
    net.l1_params_ = []
    net.rng_ = None
    net.before_valid_ = None
    for _, cb in getattr(net, "callbacks_", []):
        if isinstance(cb, DrawViews):
            cb.dataset = None  # the activations are not part of the model
        if isinstance(cb, LRScheduler):
            cb.lr_scheduler_ = None  # it holds the optimizer: a second copy
    # skorch pickles its ``module`` argument apart from ``module_``: a second
    # copy of every weight. Keep the class only (fit builds a new net anyway).
    net.module = type(module)
    module.eval()
    return net


def rebuild_net(est, module, device, config, history):
    """The trained net of a saved model: ``module`` holds its weights."""
    from skorch.history import History

    net = make_net(est, module, device, config)
    net.initialize()
    net.module_.to(device)
    if config.channels_last:
        net.module_.to(memory_format=torch.channels_last)
    net.history = History(history)
    return trim(net)


def n_trainable(module, trainable):
    """Parameters trained in the main phase: the head and ``trainable`` body ones."""
    return int(
        sum(
            p.numel()
            for n, p in module.named_parameters()
            if not n.startswith("body.") or n[5:] in trainable
        )
    )
