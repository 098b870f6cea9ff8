"""A network's anatomy: head, stages, cut points and drop-path slots, read once.

The one owner of "stage". Everything that speaks of stages, cuts or blocks
reads one :class:`Anatomy`: the default and int ``train_layers``
(:mod:`sktransfer._training`), the activation cache's units and checkpoint
(:mod:`sktransfer._activations`), ``top_blocks`` / ``earlier_layer``
(:mod:`sktransfer._strategies`) and stochastic depth (``set_drop_path``).

Apart from :mod:`sktransfer._backbones` (the spec side of each backbone family:
names, build, preprocessing, caching) because this side reads the *network*,
not its spec: a timm network passed as an ``nn.Module`` has the same anatomy as
the one named ``"timm/..."``. What a family's network says of itself is used
where it exists: timm's ``pretrained_cfg["classifier"]`` / ``get_classifier``
for the head and ``feature_info`` for the cut points, timm's ``drop_path``
slots and torchvision's ``StochasticDepth`` modules for stochastic depth; the
rest (stage containers, downsampling) is read from the module tree and from
one probe. Imports torch only (timm / torchvision classes lazily).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "Anatomy",
    "DropPathSlot",
    "anatomy",
    "backbone_stages",
    "drop_path_slots",
    "find_head",
    "probe_anatomy",
    "sequential_units",
    "set_submodule",
    "strip_head",
]

#: Stage containers: a top-level child of one of these names that is an
#: ``nn.Sequential`` or ``nn.ModuleList`` holds one stage per child.
_STAGE_CONTAINERS = ("blocks", "features", "layers", "stages", "layer", "trunk")


# ------------------------------------------------------------------------ the head
def find_head(net):
    """Qualified name of the final classification layer, or None.

    timm models say it in their pretrained config (or ``get_classifier()``);
    otherwise it is the last ``nn.Linear`` registered in the network.
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
    get_classifier = getattr(net, "get_classifier", None)
    if callable(get_classifier) and not cfg:
        try:
            head = get_classifier()
        except Exception:  # noqa: BLE001 - a model whose method needs arguments
            head = None
        if isinstance(head, nn.Linear):
            found = next((n for n, m in net.named_modules() if m is head), None)
            if found:
                return found
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last


def set_submodule(root, name, new):
    """Replace the module ``name`` (a dotted path) of ``root`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def strip_head(net):
    """Replace the head by ``nn.Identity`` in place; returns its (in, out) sizes."""
    head = find_head(net)
    if head is None:
        return None
    old = net.get_submodule(head)
    set_submodule(net, head, nn.Identity())
    if isinstance(old, nn.Linear):
        return old.in_features, old.out_features
    return None


# ---------------------------------------------------------------------- the stages
def _has_params(module):
    return any(True for _ in module.parameters())


def sequential_units(net):
    """The one definition of a backbone's stages: ordered ``(name, module)`` units.

    Top-level children, input side first, with the usual stage containers
    (``blocks``, ``features``, ``layers``, ``stages``, ``layer``, ``trunk``)
    opened one level, so that a unit is ``layer3`` of a ResNet, ``blocks.4`` of
    an EfficientNet or ``features.5`` of a torchvision network. The activation
    cache cuts between units (:func:`sktransfer._activations.plan_cut` checks
    that their composition in order is the network's forward);
    :func:`backbone_stages` keeps those that own parameters.
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


def _composite(stages):
    """The composite stages (``blocks.5``, ``layer3``), or all when none are."""
    names = [
        n
        for n, m in stages
        if "." in n or isinstance(m, (nn.Sequential, nn.ModuleList))
    ]
    return names or [n for n, _ in stages]


def _blocks(net):
    """The body's blocks: the units with every Sequential / ModuleList opened once."""
    blocks = []
    for name, unit in sequential_units(net):
        if isinstance(unit, (nn.Sequential, nn.ModuleList)) and len(unit):
            blocks.extend((f"{name}.{sub}", m) for sub, m in unit.named_children())
        else:
            blocks.append((name, unit))
    return blocks


# ----------------------------------------------------------------- stochastic depth
class DropPathSlot(NamedTuple):
    """A block that stochastic depth can skip.

    ``block``: its name; ``slots``: the attributes holding the drop path (timm:
    ``drop_path``, or ``drop_path1`` / ``drop_path2`` in a ViT block;
    torchvision: the ``StochasticDepth`` child, whose ``p`` is set);
    ``kind``: ``"timm"`` or ``"torchvision"``.
    """

    block: str
    slots: tuple
    kind: str


def drop_path_slots(net):
    """The :class:`DropPathSlot` s of ``net``, input side first.

    timm residual blocks with a ``drop_path`` slot (EfficientNet, MobileNet,
    ResNet, ConvNeXt, ViT ...) and torchvision ``StochasticDepth`` modules
    (EfficientNet, ConvNeXt, Swin). Blocks without a shortcut (``has_skip=
    False``: a stride or a channel change) cannot be skipped: not a slot.
    """
    from torchvision.ops import StochasticDepth

    found = []
    for name, m in net.named_modules():
        if isinstance(m, StochasticDepth):
            parent, _, child = name.rpartition(".")
            found.append(DropPathSlot(parent, (child,), "torchvision"))
            continue
        slots = tuple(
            s
            for s in ("drop_path", "drop_path1", "drop_path2")
            if s in m._modules or (hasattr(m, s) and m.__dict__.get(s, 0) is None)
        )
        if slots and getattr(m, "has_skip", True):
            found.append(DropPathSlot(name, slots, "timm"))
    return found


# --------------------------------------------------------------------- the anatomy
class Anatomy(NamedTuple):
    """What a network is made of, read once per fit (:func:`probe_anatomy`).

    Attributes
    ----------
    last_downsampling : str or None
        Its last downsampling block (the activation cache's shared checkpoint
        is at its input); None without a probe or when nothing downsamples.
    first_after : str or None
        The first parametrized block after it (where the default fine-tuning
        policy starts training), or None.
    units : tuple of str
        :func:`sequential_units`: where the activation cache may cut.
    stages : tuple of str
        :func:`backbone_stages`: what an int ``train_layers`` counts.
    blocks : tuple of str
        The composite stages (``blocks.5``, ``layer3``): what ``top_blocks`` /
        ``earlier_layer`` pick from.
    head : str or None
        The classification head's name (:func:`find_head`).
    cut_points : tuple of str
        The network's feature levels: the last module at each resolution
        (timm's ``feature_info`` where the network has one, else read by the
        probe), input side first.
    drop_path_slots : tuple of DropPathSlot
        The blocks stochastic depth can skip.
    """

    last_downsampling: str | None
    first_after: str | None
    units: tuple = ()
    stages: tuple = ()
    blocks: tuple = ()
    head: str | None = None
    cut_points: tuple = ()
    drop_path_slots: tuple = ()


def _feature_info_modules(net):
    info = getattr(net, "feature_info", None)
    if not isinstance(info, (list, tuple)):  # timm's FeatureInfo of features_only
        info = getattr(info, "info", None)
    if not isinstance(info, (list, tuple)):
        return ()
    return tuple(d["module"] for d in info if isinstance(d, dict) and d.get("module"))


def _static_fields(net):
    stages = backbone_stages(net)
    return {
        "units": tuple(n for n, _ in sequential_units(net)),
        "stages": tuple(n for n, _ in stages),
        "blocks": tuple(_composite(stages)),
        "head": find_head(net),
        "drop_path_slots": tuple(drop_path_slots(net)),
    }


def _levels(blocks, down, shapes):
    """The last block of maps at each resolution, as timm's feature_info."""
    params = [i for i, (n, m) in enumerate(blocks) if n in shapes and _has_params(m)]
    ends = [max((p for p in params if p < i), default=None) for i in down]
    ends.append(params[-1] if params else None)
    return tuple(dict.fromkeys(blocks[i][0] for i in ends if i is not None))


def anatomy(net, probe=None):
    """The :class:`Anatomy` of ``net``; with ``probe``, its resolution too.

    Without a probe (names only: ``top_blocks``, ``earlier_layer``) the
    resolution fields are None and the cut points are timm's ``feature_info``
    alone. Use :func:`probe_anatomy` where the probe's output is needed too.
    """
    if probe is None:
        fields = _static_fields(net)
        return Anatomy(None, None, cut_points=_feature_info_modules(net), **fields)
    return probe_anatomy(net, probe)[0]


def probe_anatomy(net, probe):
    """``(anatomy, output)``: :class:`Anatomy` of ``net`` from one forward pass.

    The block whose output maps are smaller than its input maps (and not
    1 x 1: pooling) is a downsampling one; pooling layers and activations (no
    parameters) are not blocks. ``output`` is ``net(probe)`` in eval mode
    without gradients, so the same pass checks the input size and counts the
    features.
    """
    blocks = _blocks(net)
    shapes = {}

    def hook(name):
        def record(module, args, out):
            x = args[0] if args else None
            if _is_patch_embed(module):
                # a transformer's stem turns the image into tokens: not a
                # change of resolution between blocks (its output is (b, n, d),
                # or (b, h, w, d) when the ViT takes any image size)
                return
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
            out = net.eval()(probe)
    finally:
        for h in handles:
            h.remove()
    down = []
    for i, (name, m) in enumerate(blocks):
        if name not in shapes or not _has_params(m):
            continue
        (h_in, w_in), (h_out, w_out) = shapes[name]
        if (h_out, w_out) != (1, 1) and h_out * w_out < h_in * w_in:
            down.append(i)
    fields = _static_fields(net)
    cuts = _feature_info_modules(net) or _levels(blocks, down, shapes)
    if not down:
        return Anatomy(None, None, cut_points=cuts, **fields), out
    last = down[-1]
    after = next((name for name, m in blocks[last + 1 :] if _has_params(m)), None)
    return Anatomy(blocks[last][0], after, cut_points=cuts, **fields), out


def _is_patch_embed(module):
    """timm's patch embedding (ViT, DeiT, DINOv2 stems)."""
    try:
        from timm.layers import PatchEmbed
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(module, PatchEmbed)
