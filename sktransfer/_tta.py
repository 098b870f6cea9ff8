"""Test-time augmentation: a fitted network's outputs averaged over views.

The views of an image are a pure function of its content: view ``v`` of an
image draws its random augmentation parameters from a generator seeded by the
image's digest and ``v`` (:func:`sktransfer._cache.image_digests`), so the same
image gets the same views in every call, batch, order and process, and two
copies of an image get the same prediction.

``tta="flip"`` averages the image and its mirror image (no randomness); an int
``k`` averages the image and ``k`` views drawn from the fit's own training
augmentation (``policy_["augment"]``). The network's outputs (logits, or
standardized values) are averaged, so ``predict`` is the argmax of the averaged
``decision_function`` and ``predict_proba`` its softmax.
"""

from __future__ import annotations

import hashlib
from numbers import Integral

import torch

from ._augment import make_augmentation

__all__ = ["apply_view", "check_tta", "view_transforms"]


def check_tta(tta, augment):
    """``tta``, checked (a bool is no number of views); ValueError when an
    int asks for views of a fit that had no augmentation (``augment``: the
    fit's resolved augmentation)."""
    if tta is None or tta == "flip":
        return tta
    if isinstance(tta, bool) or not isinstance(tta, Integral) or tta < 1:
        raise ValueError(
            f"tta must be None, 'flip' or an int >= 1 (a number of augmented "
            f"views), got {tta!r}."
        )
    if augment is None:
        raise ValueError(
            f"tta={tta} averages {tta} views drawn from the fit's training "
            f"augmentation, but this model has none (it is fit without "
            f"augmentation: policy_['augment'] is None). Use tta='flip' (the "
            f"image and its mirror image), or fit with augment=... (e.g. 'light')."
        )
    return tta


def view_transforms(tta, augment, size):
    """``[None, transform, ...]``: the un-augmented view first, then the others.

    Parameters
    ----------
    tta : None, "flip" or int
    augment : the fit's resolved augmentation (``policy_["augment"]``)
    size : (int, int)
        The network's input size.
    """
    if tta is None:
        return [None]
    if tta == "flip":
        return [None, _mirror]
    transform = make_augmentation(augment, size)
    return [None] + [transform] * int(tta)


def _mirror(x):
    return x.flip(-1)


def _seed(digest, view):
    h = hashlib.blake2b(bytes(digest) + view.to_bytes(4, "little"), digest_size=8)
    return int.from_bytes(h.digest(), "little") & (2**63 - 1)


def apply_view(batch, digests, view, transform):
    """View ``view`` of each image of a [0, 1] ``(b, c, H, W)`` batch.

    ``digests[i]`` is image i's content digest: its random draws come from a
    generator seeded by it and ``view``, whatever else is in the batch. The
    caller's global RNG is left where it was.
    """
    if transform is None:
        return batch
    if transform is _mirror:
        return _mirror(batch)
    out = torch.empty_like(batch)
    with torch.random.fork_rng(devices=[]):
        for i, digest in enumerate(digests):
            torch.manual_seed(_seed(digest, view))
            out[i] = transform(batch[i])
    return out
