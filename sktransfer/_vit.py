"""Token transformers (ViT / DeiT / DINOv2-style): what their tokens are.

Private. A timm ``VisionTransformer`` turns an image into a sequence of
tokens: ``num_prefix_tokens`` prefix tokens (the class token first, then
register or distillation tokens) before one token per patch, and every block
maps such a sequence to one of the same length. Two readers need that:

* the extractor's pooling (:func:`sktransfer._extractor.pool_features`):
  ``pooling="cls"`` is the class token, ``"avg" | "max" | "avgmax"`` reduce
  the patch tokens only (:func:`token_prefix`);
* the activation cache, which cuts a token transformer between its
  transformer blocks (:func:`token_units`).

Read off the network (timm's own attributes), so a ViT passed as an
``nn.Module`` is one too. The backbone family adapters
(:mod:`sktransfer._backbones`, :mod:`sktransfer._anatomy`) do not expose these
facts yet; this module is their one owner until they do.
"""

from __future__ import annotations

from torch import nn

__all__ = ["has_class_token", "prefix_tokens", "token_prefix", "token_units"]

#: The module whose output is the patch tokens alone: the prefix tokens are
#: prepended to its output (timm's ``VisionTransformer._pos_embed``).
_PATCH_EMBED = "patch_embed"


def prefix_tokens(net):
    """timm's ``num_prefix_tokens``: class + register / distillation tokens."""
    return int(getattr(net, "num_prefix_tokens", 0) or 0)


def has_class_token(net):
    """Whether the network's token sequences start with a class token."""
    return getattr(net, "cls_token", None) is not None and prefix_tokens(net) > 0


def token_prefix(net, layer):
    """The prefix tokens at the start of ``layer``'s token outputs (0: none).

    Every token sequence of a ViT carries them, except the patch embedding's
    output (and its submodules'), to which they are prepended.
    """
    n = prefix_tokens(net)
    if not n or layer is None:
        return 0
    if layer == _PATCH_EMBED or layer.startswith(_PATCH_EMBED + "."):
        return 0
    return n


def _is_vit(net):
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(net, VisionTransformer) and isinstance(
        getattr(net, "blocks", None), nn.Sequential
    )


class _Embed(nn.Module):
    """Patch embedding, prefix tokens and position embedding: the tokens entering
    the first block (timm's ``forward_features`` up to its blocks).

    Holds the ViT's own modules and token parameters (shared, not copied), so
    that the units' parameters are the network's; ``_pos_embed`` is the ViT's.
    """

    def __init__(self, vit):
        super().__init__()
        self.__dict__["_vit"] = vit  # not a submodule: its blocks are other units
        self.patch_embed = vit.patch_embed
        self.patch_drop = vit.patch_drop
        self.norm_pre = vit.norm_pre
        for name in ("cls_token", "reg_token", "pos_embed"):
            p = getattr(vit, name, None)
            if isinstance(p, nn.Parameter):
                self.register_parameter(name, p)

    def forward(self, x):
        x = self._vit._pos_embed(self.patch_embed(x))
        return self.norm_pre(self.patch_drop(x))


class _Pool(nn.Module):
    """The final norm and timm's ``forward_head(pre_logits=True)``: the normed
    class token or pooled tokens, what the (stripped) head receives."""

    def __init__(self, vit):
        super().__init__()
        self.__dict__["_vit"] = vit
        for name in ("norm", "attn_pool", "fc_norm", "head_drop"):
            m = getattr(vit, name, None)
            if isinstance(m, nn.Module):
                self.add_module(name, m)

    def forward(self, x):
        return self._vit.forward_head(self.norm(x), pre_logits=True)


def token_units(net):
    """A timm ViT as cut units: ``embed``, ``blocks.0`` .. ``blocks.N-1``, ``pool``.

    The activation cache's cut rule for a token transformer: it cuts between
    transformer blocks. ``embed`` (patch and position embeddings, prefix
    tokens) and ``pool`` (the final norm and the head's pooling) are one unit
    each, since their work is not a sequence of the network's children. The
    units' composition in order is the network's forward (the cache checks it
    on a probe). None for any other network.
    """
    if not _is_vit(net):
        return None
    blocks = [(f"blocks.{i}", b) for i, b in enumerate(net.blocks)]
    return [("embed", _Embed(net)), *blocks, ("pool", _Pool(net))]
