"""The torch side of fine-tuning: config and plan, the module, freezing, data.

Private. The fine-tuned estimators (:mod:`sktransfer._finetune_base`) resolve a
:class:`FitPlan`, build the module with :func:`build_module` (a pure
function) and hand both to the trainer (:mod:`sktransfer._trainer`, the skorch
side: losses, the net, callbacks, trimming). The two are apart because
together they would not be readable in one file, and because the trainer is
what ``load`` rebuilds while this module is what ``fit`` plans.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from numbers import Integral, Real
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._activations import run_units, target_item
from ._backbones import (
    anatomy,
    drop_path_slots,
    find_head,
    load_backbone,
    probe_anatomy,
    strip_head,
)
from ._heads import CosineHead, build_head
from ._runtime import GLOBAL_RNG_LOCK, RuntimePolicy

_BN = nn.modules.batchnorm._BatchNorm
# Resized training images are kept in memory when they fit in this budget, so an
# epoch costs augmentation + forward + backward, not decoding and resizing.
_CACHE_BYTES = 2 * 1024**3
_OPTIMIZERS = ("adamw", "sgd")


# ------------------------------------------------------------------ the config
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What one fit's skorch net needs beyond skorch's own parameters (immutable).

    Built once by ``FineTunedClassifier._fit`` (and by ``sktransfer.load``) and
    read by :class:`FineTuneNet` and the fit's callbacks; nothing changes it
    during training. Numbers are stored as ``float`` / ``int``; a value of the
    wrong type raises ``TypeError``, an unknown optimizer ``ValueError``.

    Attributes
    ----------
    trainable : frozenset of str
        Names of the body parameters trained after the head-only phase.
    lr : float
        Learning rate of the head.
    backbone_lr : float
        Learning rate of the trained body parameters.
    weight_decay : float
        Decoupled weight decay (L2) on weight matrices and kernels.
    l1 : float
        L1 strength on the trained weight matrices and kernels (0: none).
    optimizer : {"adamw", "sgd"}
    freeze_epochs : int
        Head-only epochs at the start of training (at most ``max_epochs``).
    autocast : torch.dtype or None, default=None
        Autocast dtype of training and torch inference; None for fp32.
    channels_last : bool, default=False
        Run the network in channels-last memory format.
    step_autocast : torch.dtype or None, default=None
        Autocast dtype of the training steps alone, when they differ from
        ``autocast`` (:attr:`sktransfer._runtime.RuntimePolicy.step_autocast`):
        bf16 steps with the convolutions of :func:`bf16_unsafe_convs` in fp32,
        everything else as ``autocast`` says. Not saved with a model (loaded
        models do not train).
    layer_decay : float in (0, 1] or None, default=None
        Layer-wise learning-rate decay of the body's groups
        (:func:`sktransfer._trainer.layer_scales`); None: one body rate.
    """

    trainable: frozenset[str]
    lr: float
    backbone_lr: float
    weight_decay: float
    l1: float
    optimizer: str
    freeze_epochs: int
    autocast: torch.dtype | None = None
    channels_last: bool = False
    step_autocast: torch.dtype | None = None
    layer_decay: float | None = None

    def __post_init__(self):
        decay = self.layer_decay
        if decay is not None:
            if not (isinstance(decay, Real) and 0 < decay <= 1):
                raise ValueError(
                    f"TrainConfig.layer_decay must be None or in (0, 1], got {decay!r}."
                )
            object.__setattr__(self, "layer_decay", float(decay))
        if not isinstance(self.trainable, frozenset) or not all(
            isinstance(n, str) for n in self.trainable
        ):
            raise TypeError(
                f"TrainConfig.trainable must be a frozenset of parameter names, "
                f"got {type(self.trainable).__name__}."
            )
        for name in ("lr", "backbone_lr", "weight_decay", "l1"):
            value = getattr(self, name)
            if not isinstance(value, Real) or isinstance(value, bool):
                raise TypeError(
                    f"TrainConfig.{name} must be a real number, got {value!r}."
                )
            object.__setattr__(self, name, float(value))
        if not isinstance(self.freeze_epochs, Integral) or isinstance(
            self.freeze_epochs, bool
        ):
            raise TypeError(
                f"TrainConfig.freeze_epochs must be an int, got {self.freeze_epochs!r}."
            )
        object.__setattr__(self, "freeze_epochs", int(self.freeze_epochs))
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"TrainConfig.optimizer must be one of {_OPTIMIZERS}, got "
                f"{self.optimizer!r}."
            )
        for name in ("autocast", "step_autocast"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, torch.dtype):
                raise TypeError(
                    f"TrainConfig.{name} must be a torch.dtype or None, got {value!r}."
                )
        if not isinstance(self.channels_last, bool):
            raise TypeError(
                f"TrainConfig.channels_last must be a bool, got {self.channels_last!r}."
            )

    def with_policy(self, policy, cached=False):
        """A copy that runs as ``policy`` (a :class:`~sktransfer._runtime.
        RuntimePolicy`) says: its training autocast and memory format, and,
        for a ``cached`` fit (only the units after the activation cache's cut
        train), its step autocast. For fitting, and for loading a saved model
        on another machine.
        """
        return dataclasses.replace(
            self,
            autocast=policy.train_autocast,
            channels_last=policy.channels_last,
            step_autocast=policy.step_autocast if cached else None,
        )

    def to_dict(self):
        """The fields as a plain dict (what a saved model file records)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "step_autocast"  # how it trained, not what it is
        }

    @classmethod
    def from_dict(cls, values, freeze_epochs=0):
        """Rebuild from :meth:`to_dict`'s dict; ``freeze_epochs`` fills in for
        dicts saved before it was recorded. Unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values.setdefault("freeze_epochs", freeze_epochs)
        values["trainable"] = frozenset(values["trainable"])
        return cls(**values)


# ------------------------------------------------------------------------ the module
def export_state(module, head_name, state_keys):
    """State dict of the fine-tuned network under the original architecture's names.

    The new head takes the old head's place (a cosine head is saved as the linear
    layer ``scale * normalize(W)``, bias 0); keys follow the original order.
    """
    state = {k: v.detach().cpu().clone() for k, v in module.body.state_dict().items()}
    if head_name is not None:
        head = module.head
        if isinstance(head, CosineHead):
            w = head.scale.detach() * F.normalize(head.weight.detach(), dim=1)
            b = torch.zeros(w.shape[0])
        else:
            w = head.weight.detach()
            b = head.bias.detach() if head.bias is not None else None
        state[f"{head_name}.weight"] = w.cpu().clone()
        if b is not None:
            state[f"{head_name}.bias"] = b.cpu().clone()
    order = [k for k in state_keys if k in state]
    order += [k for k in state if k not in order]
    return {k: state[k].contiguous() for k in order}


class FineTuneModule(nn.Module):
    """``head(dropout(body(x)))`` whose ``train()`` keeps frozen parts in eval mode.

    skorch calls ``module.train()`` before every training batch; frozen BatchNorm
    layers must not update their running statistics then, nor should dropout or
    stochastic depth act inside frozen blocks. ``bn`` picks what happens to
    BatchNorm layers: ``"frozen"`` / ``"adabn"`` (eval mode where frozen),
    ``"eval"`` (eval mode everywhere), ``"train"`` (train mode everywhere).

    ``phase`` is ``"head"`` during the ``freeze_epochs`` (the whole body in eval
    mode and frozen) and ``"body"`` otherwise; only :meth:`enter_phase` changes
    it (called by the fit's phase callback).
    """

    phase = "body"  # class default: modules pickled before phases existed

    def __init__(self, body, head, dropout=0.0, bn="frozen"):
        super().__init__()
        self.body = body
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = head
        self.bn = bn
        self.phase = "body"
        # When set (a list of (name, module) units), inputs are the cached
        # outputs of the frozen prefix and only these units -- the rest of the
        # body -- run.
        self.cut = None
        # With stored body outputs for the head-only epochs: the cut of each
        # phase, ``{"head": [], "body": units}`` (set by the fit, switched by
        # enter_phase); None otherwise.
        self.phase_cuts = None
        self._frozen_key = None
        self._frozen = []

    def features(self, x):
        out = self.body(x) if self.cut is None else run_units(self.cut, x)
        return out.flatten(1) if out.ndim > 2 else out

    def logits_from(self, units, x):
        """Logits of ``x``, the input of ``units`` (the body's last units).

        Prediction from stored activations (:func:`~sktransfer._activations.
        lookup`): the frozen units before them already ran.
        """
        out = run_units(units, x)
        out = out.flatten(1) if out.ndim > 2 else out
        return self.head(self.dropout(out))

    def forward_images(self, x):
        """Logits of normalized images through the whole network.

        ``forward`` takes what the training loop feeds: images, or, while the
        activation cache is on (``cut`` set), the frozen prefix's outputs. A
        callback that scores its own images during ``fit`` uses this instead.
        """
        cut, self.cut = self.cut, None
        try:
            return self.forward(x)
        finally:
            self.cut = cut

    def forward(self, x):
        if self.training and x.shape[0] == 1:
            # One image has no batch statistics (torch raises on 1x1 maps):
            # training BatchNorms normalize it with their running statistics.
            bns = [m for m in self.body.modules() if isinstance(m, _BN) and m.training]
            for m in bns:
                m.eval()
            try:
                return self.head(self.dropout(self.features(x)))
            finally:
                for m in bns:
                    m.train()
        return self.head(self.dropout(self.features(x)))

    def enter_phase(self, phase, trainable):
        """Start the ``"head"`` or ``"body"`` phase of training.

        The one place that switches phases: in ``"head"`` no body parameter
        trains, in ``"body"`` exactly those named in ``trainable``. With
        ``phase_cuts`` set, the units that run switch too (the training data
        switches with them: :class:`~sktransfer._activations.CachedDataset`).
        """
        if phase not in ("head", "body"):
            raise ValueError(f"phase must be 'head' or 'body', got {phase!r}.")
        self.phase = phase
        if self.phase_cuts is not None:
            self.cut = self.phase_cuts[phase]
        for name, p in self.body.named_parameters():
            p.requires_grad_(phase == "body" and name in trainable)

    def _frozen_modules(self, trainable=None):
        """Largest body submodules none of whose parameters train.

        ``trainable``: names of the trained body parameters; None reads
        ``requires_grad`` (what training uses, so a user's freezing callback
        counts too).
        """
        if trainable is None:  # every training batch: keep it cheap
            params = self.__dict__.get("_body_params")
            if params is None:  # the body's parameters, listed once
                params = self._body_params = list(self.body.parameters())
            key = tuple(p.requires_grad for p in params)
        else:
            named = list(self.body.named_parameters())
            params = [p for _, p in named]
            key = tuple(name in trainable for name, _ in named)
        if key != self._frozen_key:
            trains = {id(p): k for p, k in zip(params, key, strict=True)}
            found = []

            def visit(m):
                own = list(m.parameters()) or list(m.buffers())
                if own and not any(trains[id(p)] for p in m.parameters()):
                    found.append(m)
                    return
                for child in m.children():
                    visit(child)

            visit(self.body)
            self._frozen_key, self._frozen = key, found
        return self._frozen

    def _body_modes(self, trainable=None):
        """``(eval_modules, train_bns)`` of the body in the ``"body"`` phase.

        Training mode everywhere, except the frozen modules (eval, with all they
        contain), then BatchNorms per ``bn``: ``"eval"`` all in eval mode,
        ``"train"`` all in training mode. The one statement of the rule, read
        by :meth:`train` and :meth:`trained_bns`.
        """
        eval_modules = list(self._frozen_modules(trainable))
        if self.bn not in ("eval", "train"):
            return eval_modules, []
        bns = [m for m in self.body.modules() if isinstance(m, _BN)]
        if self.bn == "eval":
            return eval_modules + bns, []
        return eval_modules, bns

    def trained_bns(self, trainable):
        """BatchNorms whose statistics the ``"body"`` phase updates.

        Read off :meth:`_body_modes` for the trained parameter names
        ``trainable``, whatever the current phase and mode.
        """
        eval_modules, train_bns = self._body_modes(trainable)
        forced = {id(m) for m in train_bns}
        off = {id(s) for m in eval_modules for s in m.modules()}
        return [
            m
            for m in self.body.modules()
            if isinstance(m, _BN) and (id(m) in forced or id(m) not in off)
        ]

    def train(self, mode=True):
        # skorch calls this before every batch: when the modes it would set are
        # those of the last call and no flag has changed since, skip the walk
        # over every submodule (a millisecond per batch for EfficientNet-Lite0).
        key = (bool(mode), self.phase, self._frozen_key if mode else None)
        flags = self.__dict__.get("_mode_flags")
        if (
            flags is not None
            and self.__dict__.get("_mode_key") == key
            and all(m.training is f for m, f in flags)
        ):
            if not mode or self.phase == "head":
                return self
            self._frozen_modules()  # a changed requires_grad changes the key
            if self._frozen_key == key[2]:
                return self
        super().train(mode)
        if mode and self.phase == "head":
            self.body.eval()
        elif mode:
            eval_modules, train_bns = self._body_modes()
            for m in eval_modules:
                m.eval()
            for m in train_bns:
                m.train()
        self._mode_key = (bool(mode), self.phase, self._frozen_key if mode else None)
        self._mode_flags = [(m, m.training) for m in self.modules()]
        return self

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_frozen_key"], state["_frozen"] = None, []
        for name in ("_mode_key", "_mode_flags", "_body_params"):
            state.pop(name, None)
        return state


# -------------------------------------------------------------------- the plan
# train_layers="auto" is the blocks after the last downsampling
# (_backbones.Anatomy.first_after); this many last stages when the network
# never downsamples.
AUTO_TRAIN_LAYERS = 3


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """What one fit decided before touching its data (immutable).

    Resolved once by the fine-tuned estimators' ``fit`` from their parameters,
    the built network and the :class:`~sktransfer._runtime.RuntimePolicy`;
    ``policy_`` is its :meth:`report`.

    Attributes
    ----------
    train_layers : str or int
        ``train_layers`` with ``"auto"`` resolved (a module name or a number of
        stages).
    trainable : frozenset of str
        The body parameters that train.
    head_init : str
        ``head_init`` with ``"auto"`` resolved.
    augment : str, tuple, callable or None
        The augmentation (``"auto"`` resolved).
    augment_views : int
        Augmented views per image in the activation cache.
    cache : bool
        Whether the activation cache may be used (``cache=False`` turns it off).
    cache_dir : Path or None
        Where the activation cache is also written for other processes.
    runtime : RuntimePolicy
        Device, precision, memory format and engine of the fit.
    anatomy : Anatomy
        Where the body changes resolution (:func:`sktransfer._backbones.anatomy`):
        the default ``train_layers`` and the activation cache's checkpoint.
    """

    train_layers: Any
    trainable: frozenset[str]
    head_init: str
    augment: Any
    augment_views: int
    cache: bool
    cache_dir: Path | None
    runtime: RuntimePolicy
    anatomy: Any

    def report(self, cache, precision):
        """``policy_``: the resolved ``"auto"`` values, where the activation
        cache cut the network (``cache``) and the fit's arithmetic."""
        return {
            "train_layers": self.train_layers,
            "head_init": self.head_init,
            "augment": self.augment,
            "augment_views": self.augment_views,
            "cache": cache,
            "precision": precision,
        }


class BuiltModule(NamedTuple):
    """What :func:`build_module` returns."""

    module: FineTuneModule
    preprocessing: Any  # the backbone's Preprocessing, with the estimator's size
    drop_sites: list  # the blocks that got a drop-path rate
    head_name: str | None  # the original head's name (save_backbone)
    state_keys: list  # the original state dict's keys, in order
    anatomy: Any  # the body's Anatomy, from the one probe of the fit


def build_module(est, n_outputs, head_init, generator, probe):
    """The network to fine-tune: a pure function of ``est``'s parameters.

    Reads ``model``, ``weights``, ``input_size``, ``resize``, ``drop_path``,
    ``dropout``, ``bn`` and ``head`` (``"linear"`` when the estimator has
    none) of ``est``; ``head_init`` draws from ``generator`` (None: the head's
    weights come from elsewhere, as in ``load``). ``probe(net, preprocessing,
    n=...)`` runs the backbone on blank inputs (a clear error for a size the
    network cannot take); that one pass also reads the body's
    :class:`~sktransfer._backbones.Anatomy` and counts its features.
    """
    net, prep = load_backbone(est.model, est.weights)
    prep = prep.override(input_size=est.input_size, resize=est.resize)
    head_name = find_head(net)
    state_keys = list(net.state_dict())
    sizes = strip_head(net) if head_name is not None else None
    body, out = probe(lambda x: probe_anatomy(net, x), prep, n=2)
    n_features = int(out.flatten(1).shape[1]) if sizes is None else sizes[0]
    slots = body.drop_path_slots
    drop_sites = set_drop_path(net, est.drop_path, slots) if est.drop_path else []
    if est.drop_path > 0 and not drop_sites:
        raise ValueError(
            f"drop_path={est.drop_path} but {type(net).__name__} has no "
            f"residual blocks with a stochastic-depth slot (supported: timm "
            f"EfficientNet/MobileNet/ResNet/ConvNeXt/ViT, torchvision "
            f"EfficientNet/ConvNeXt/Swin). Use drop_path=0."
        )
    kind = getattr(est, "head", "linear")
    head = build_head(kind, head_init, n_features, n_outputs, generator)
    module = FineTuneModule(net, head, est.dropout, est.bn)
    return BuiltModule(module, prep, drop_sites, head_name, state_keys, body)


def resolve_train_layers(module, train_layers, bn, anatomy):
    """``train_layers`` with ``"auto"`` resolved, and the body parameters it trains.

    ``anatomy`` is the body's :class:`~sktransfer._backbones.Anatomy`;
    ``bn="train"`` adds every BatchNorm's scale and shift.
    """
    if train_layers == "auto":
        start = anatomy.first_after
        train_layers = AUTO_TRAIN_LAYERS if start is None else start
    trainable = resolve_trainable(module.body, train_layers, anatomy.stages)
    if bn == "train":
        trainable |= {
            f"{name}.{p}"
            for name, m in module.body.named_modules()
            if isinstance(m, _BN)
            for p, _ in m.named_parameters(recurse=False)
        }
    return train_layers, trainable


# ---------------------------------------------------------------------- freezing
def resolve_trainable(body, train_layers, stages=None):
    """Names of body parameters trained under ``train_layers``.

    ``stages`` are the body's :attr:`~sktransfer._backbones.Anatomy.stages`
    (read from ``body`` when None).
    """
    names = [n for n, _ in body.named_parameters()]
    if isinstance(train_layers, str) and train_layers in ("head", "all"):
        return set() if train_layers == "head" else set(names)
    stages = list(anatomy(body).stages if stages is None else stages)
    if isinstance(train_layers, (int, np.integer)) and not isinstance(
        train_layers, bool
    ):
        k = int(train_layers)
        if k < 0 or k > len(stages):
            raise ValueError(
                f"train_layers={k} but this backbone has {len(stages)} stages "
                f"{stages}; use 0..{len(stages)}, 'head' or 'all'."
            )
        start = stages[len(stages) - k] if k else None
    else:
        start = str(train_layers)
        if start not in dict(body.named_modules()) or not start:
            raise ValueError(
                f"train_layers={train_layers!r} is not 'head', 'all', an int or a "
                f"module name of the backbone. Stages: {stages} (an int k trains "
                f"the last k of them); any name of sktransfer.list_layers(model) "
                f"unfreezes from that module on."
            )
    if start is None:
        return set()
    first = next(
        (i for i, n in enumerate(names) if n.startswith(start + ".") or n == start),
        None,
    )
    if first is None:
        raise ValueError(f"module {start!r} has no parameters to train.")
    return set(names[first:])


def set_drop_path(net, rate, slots=None):
    """Enable stochastic depth ("drop layer") with rates growing linearly to ``rate``.

    ``slots`` are the network's :attr:`~sktransfer._backbones.Anatomy.drop_path_slots`
    (read from ``net`` when None): timm residual blocks with a ``drop_path``
    slot (EfficientNet, MobileNet, ResNet, ConvNeXt, ViT ...) and torchvision
    ``StochasticDepth`` modules (EfficientNet, ConvNeXt, Swin); blocks without
    a shortcut cannot be skipped and have none. Returns the names of the blocks
    that can be dropped, the deepest one dropping with probability ``rate``.
    """
    from timm.layers import DropPath

    sites = list(drop_path_slots(net) if slots is None else slots)
    n = len(sites)
    for i, site in enumerate(sites):
        p = rate * (i + 1) / n
        block = net.get_submodule(site.block)
        for slot in site.slots:
            if site.kind == "torchvision":
                getattr(block, slot).p = p
            else:
                setattr(block, slot, DropPath(p) if p > 0 else nn.Identity())
    return [site.block for site in sites]


def adabn(module, loader, device):
    """Re-estimate every BatchNorm's running statistics on the target data (AdaBN)."""
    recalibrate_bn(module, loader, device)


def _at_least_two(batches):
    """Re-group batches so that none holds a single item.

    A training-mode BatchNorm on one item with 1x1 maps has one value per
    channel and no variance (torch raises), so a lone item joins its
    neighbour.
    """
    pending = None
    for x in batches:
        if pending is None:
            pending = x
        elif len(pending) < 2 or len(x) < 2:
            pending = torch.cat([pending, x])
        else:
            yield pending
            pending = x
    if pending is not None:
        yield pending


def recalibrate_bn(module, loader, device, bns=None):
    """Set BatchNorm running statistics to exact averages over ``loader``.

    Training keeps an exponential moving average (momentum 0.1) of batch
    statistics, so after a few steps of fine-tuning -- or from random weights --
    the statistics still reflect the old data or the initial ones, and eval-mode
    predictions collapse. One pass over the training images with cumulative
    averaging (as SWA's ``update_bn`` does) fixes them for the final weights.
    ``bns`` limits the pass to some layers (default: all of the body's). The
    loader's items are what ``module.features`` takes (images, or cached
    activations when ``module.cut`` is set); a lone last item joins the batch
    before it, and with a single item in all the statistics are left as they are.
    """
    if bns is None:
        bns = [m for m in module.body.modules() if isinstance(m, _BN)]
    if not bns or len(loader.dataset) < 2:
        return
    saved = [m.momentum for m in bns]
    module.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    with torch.no_grad():
        for x in _at_least_two(x["x"] for x, _ in loader):
            module.features(x.to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    module.eval()


@torch.no_grad()
def frozen_features(module, loader, device):
    module.eval()
    feats, ys = [], []
    for x, y in loader:
        feats.append(module.features(x["x"].to(device)).float().cpu())
        ys.append(y)
    return torch.cat(feats), torch.cat(ys)


# ----------------------------------------------------------- mixed-precision steps
class FP32Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs in fp32 inside a bf16 autocast region.

    Swapped in (a class change, no new parameters) by :func:`fp32_convs` for
    the length of a fit only, for the two kinds of convolution that the bf16
    training steps keep in fp32 (:func:`bf16_unsafe_convs`).
    """

    def _conv_forward(self, input, weight, bias):
        with torch.autocast(input.device.type, enabled=False):
            return super()._conv_forward(input.float(), weight, bias)


def _is_depthwise(m):
    return m.groups > 1 and m.groups == m.in_channels


def bf16_unsafe_convs(module, probe):
    """The convolutions of ``module`` that bf16 training steps keep in fp32.

    * Depthwise convolutions: oneDNN's bf16 depthwise kernels (forward and
      backward) were slower than its fp32 ones on the CPU where bf16 steps were
      measured, while its bf16 1x1 convolutions were faster
      (``benchmarks/train_format.py``).
    * Convolutions whose input is smaller than their stride in some dimension
      (a 3x3 stride-2 convolution on a 1x1 map: the last stages of a small
      network at a small input size). oneDNN's bf16 weight gradient for them
      is garbage (up to 1e37, or NaN, different from run to run) while the
      forward pass and the input gradient are right:
      ``benchmarks/bf16_conv_grad.py`` scans the shapes on the CPU at hand.
      This is what made the bf16 steps' loss NaN on an AMX Xeon.

    Parameters
    ----------
    module : nn.Module
        Run once on ``probe`` (in eval mode, without gradients; every module's
        mode is restored after) to read the input shape of every convolution.
    probe : torch.Tensor
        A batch of inputs of the fit's size.

    Returns
    -------
    convs : list of nn.Conv2d
    """
    small = set()

    def record(m, inputs):
        h, w = inputs[0].shape[-2:]
        if h < m.stride[0] or w < m.stride[1]:
            small.add(m)

    convs = [m for m in module.modules() if type(m) is nn.Conv2d]
    hooks = [m.register_forward_pre_hook(record) for m in convs]
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            module(probe)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return [m for m in convs if m in small or _is_depthwise(m)]


@contextlib.contextmanager
def fp32_convs(convs):
    """Inside the block, the convolutions ``convs`` run in fp32 (see above)."""
    for m in convs:
        m.__class__ = FP32Conv2d
    try:
        yield
    finally:
        for m in convs:
            m.__class__ = nn.Conv2d


# ------------------------------------------------------------------------ the RNG
class OwnedRNG:
    """A fit's own stream of torch's global RNG, swapped in where it is needed.

    Dropout and stochastic depth can only draw from torch's global RNG. Two fits
    running in threads would interleave their draws there, so neither would be
    reproducible. Inside :meth:`active` (serialized by the process-wide
    ``GLOBAL_RNG_LOCK``) the global CPU RNG -- and the CUDA RNG of ``device`` --
    holds this fit's state, which is saved back afterwards; outside, the fit
    never reads the global RNG (its head init, split, shuffling and
    augmentation use generators of their own).
    """

    def __init__(self, seed, device=None):
        self.seed = int(seed)
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        self.state = gen.get_state()
        self.cuda = device if device is not None and device.type == "cuda" else None
        self.cuda_state = None

    @contextlib.contextmanager
    def active(self):
        with GLOBAL_RNG_LOCK:
            saved = torch.random.get_rng_state()
            torch.random.set_rng_state(self.state)
            cuda_saved = None
            if self.cuda is not None:
                cuda_saved = torch.cuda.get_rng_state(self.cuda)
                if self.cuda_state is None:
                    with torch.cuda.device(self.cuda):
                        torch.cuda.manual_seed(self.seed)
                else:
                    torch.cuda.set_rng_state(self.cuda_state, self.cuda)
            try:
                yield
            finally:
                self.state = torch.random.get_rng_state()
                torch.random.set_rng_state(saved)
                if self.cuda is not None:
                    self.cuda_state = torch.cuda.get_rng_state(self.cuda)
                    torch.cuda.set_rng_state(cuda_saved, self.cuda)

    def __getstate__(self):
        return {**self.__dict__, "cuda": None, "cuda_state": None}


class SeededTransform:
    """A transform that draws from an :class:`OwnedRNG` in the fitting process.

    In DataLoader worker processes (``num_workers > 0``) the owned stream is not
    carried over; each worker's RNG is seeded by the loader's own generator.
    """

    def __init__(self, transform, rng):
        self.transform = transform
        self.rng = rng

    def __call__(self, x):
        if self.rng is None:
            return self.transform(x)
        with self.rng.active():
            return self.transform(x)

    def __getstate__(self):
        return {**self.__dict__, "rng": None}


def is_stochastic(module):
    """True when ``module`` draws random numbers in training mode."""
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        if isinstance(m, DropPath) and m.drop_prob > 0:
            return True
        if isinstance(m, StochasticDepth) and m.p > 0:
            return True
        if getattr(m, "drop_rate", 0):
            return True
    return False


# -------------------------------------------------------------------------- data
class ImageDataset(torch.utils.data.Dataset):
    """Items ``({"x": image, "sample_weight": w}, y)`` for skorch.

    ``cache`` holds the resized ``[0, 1]`` images when they fit in memory;
    otherwise each item is decoded and resized on access. ``transform`` (the
    augmentation) runs before normalization, per sample.
    """

    def __init__(self, images, pre, y=None, sample_weight=None, transform=None):
        self.images = images
        self.pre = pre
        self.y = y
        self.sample_weight = sample_weight
        self.transform = transform
        self.cache = None
        c, (h, w) = pre.p.in_chans, pre.p.input_size
        if len(images) * c * h * w * 4 <= _CACHE_BYTES:
            chunks = []
            for start in range(0, len(images), 256):
                idx = range(start, min(start + 256, len(images)))
                chunks.append(pre.load_batch(images, idx))
            self.cache = torch.cat(chunks).contiguous()
        self.X = self.cache if self.cache is not None else images  # skorch's view

    def __len__(self):
        return len(self.images)

    def image(self, i):
        """Image ``i`` resized, in ``[0, 1]``, before augmentation."""
        return (
            self.cache[i] if self.cache is not None else self.pre.load(self.images, i)
        )

    def __getitem__(self, i):
        x = self.image(i)
        if self.transform is not None:
            x = self.transform(x)
        x = self.pre.normalize(x[None])[0]
        item = {"x": x}
        if self.sample_weight is not None:
            item["sample_weight"] = torch.tensor(self.sample_weight[i])
        return item, target_item(self.y, i)

    def with_transform(self, transform):
        """A shallow copy that shares the cache but augments differently."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def subset(self, idx):
        """A shallow copy restricted to ``idx`` (the cache is sliced, not rebuilt)."""
        other = copy.copy(self)
        idx = np.asarray(idx)
        other.images = self.images.subset(idx)
        other.cache = None if self.cache is None else self.cache[idx]
        other.X = other.cache if other.cache is not None else other.images
        other.y = None if self.y is None else self.y[idx]
        if self.sample_weight is not None:
            other.sample_weight = self.sample_weight[idx]
        return other


def make_loader(
    dataset, batch_size, shuffle=False, seed=0, num_workers=0, drop_last=False
):
    """DataLoader whose shuffling (and worker seeds) follow ``seed``.

    A factory (not a Generator object in skorch's params) so fitted nets pickle.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
    )
