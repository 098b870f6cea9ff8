"""Tasks beyond one label per image, made of real images (offline).

``make_rotated`` (a geometric regression target), ``make_mosaics`` (a count,
or the multi-label indicator of the classes that appear): built from any
grayscale or RGB images, e.g. Fashion-MNIST's, for the tests, the benchmarks
and the gallery.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from sklearn.utils import check_random_state

__all__ = ["make_mosaics", "make_rotated"]


def _gray_uint8(images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"images must be a uint8 array of shape (n, h, w) or (n, h, w, 3), got "
            f"{images.dtype} of shape {images.shape}."
        )
    return images if images.ndim == 3 else images.mean(-1).astype(np.uint8)


def _rgb(gray):
    return np.repeat(gray[..., None], 3, axis=-1)


def make_rotated(images, n_samples, *, max_angle=45.0, size=56, random_state=None):
    """Images turned by a random angle; the target is the angle.

    Parameters
    ----------
    images : uint8 array of shape (n, h, w) or (n, h, w, 3)
        The images to draw from (without replacement when there are enough).
    n_samples : int
        How many rotated images to make.
    max_angle : float, default=45.0
        Angles are drawn uniformly in ``[-max_angle, max_angle]`` degrees
        (counter-clockwise positive). A left-right flip negates the angle:
        augment such targets without flips.
    size : int, default=56
        Side of the output images (the inputs are resized to it first).
    random_state : int, RandomState or None, default=None

    Returns
    -------
    X : uint8 ndarray of shape (n_samples, size, size, 3)
    angles : ndarray of shape (n_samples,)
    """
    gray = _gray_uint8(images)
    rng = check_random_state(random_state)
    idx = rng.choice(len(gray), n_samples, replace=n_samples > len(gray))
    angles = rng.uniform(-max_angle, max_angle, size=n_samples)
    out = np.empty((n_samples, size, size, 3), np.uint8)
    for i, (j, angle) in enumerate(zip(idx, angles, strict=True)):
        img = Image.fromarray(gray[j]).resize((size, size), Image.BILINEAR)
        out[i] = _rgb(np.asarray(img.rotate(angle, resample=Image.BILINEAR)))
    return out, angles


def make_mosaics(images, labels, n_samples, *, target="count", random_state=None):
    """2 x 2 mosaics of images in random cells (the others black).

    Parameters
    ----------
    images : uint8 array of shape (n, h, w) or (n, h, w, 3)
        The tiles (all of one size).
    labels : array-like of shape (n,), ints in ``[0, n_classes)``
        The tiles' classes (used by ``target="tags"``).
    n_samples : int
        How many mosaics to make.
    target : {"count", "tags"}, default="count"
        ``"count"``: 1 to 4 tiles; the target is their number.
        ``"tags"``: 2 to 4 tiles of 1 to 3 distinct classes (every class drawn
        appears at least once); the target is the 0/1 indicator of the
        classes present (multi-label).
    random_state : int, RandomState or None, default=None

    Returns
    -------
    X : uint8 ndarray of shape (n_samples, 2 h, 2 w, 3)
    y : ndarray of shape (n_samples,) (counts, float) or
        (n_samples, n_classes) (0/1 ints)
    """
    gray = _gray_uint8(images)
    labels = np.asarray(labels)
    if target not in ("count", "tags"):
        raise ValueError(f"target must be 'count' or 'tags', got {target!r}.")
    rng = check_random_state(random_state)
    h, w = gray.shape[1:3]
    out = np.zeros((n_samples, 2 * h, 2 * w), np.uint8)
    classes = np.unique(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    if target == "count":
        y = rng.randint(1, 5, size=n_samples).astype(float)
    else:
        y = np.zeros((n_samples, int(classes.max()) + 1), int)
    for i in range(n_samples):
        if target == "count":
            tiles = rng.choice(len(gray), int(y[i]))
        else:
            present = rng.choice(classes, rng.randint(1, 4), replace=False)
            n_tiles = rng.randint(len(present), 5)
            drawn = list(present) + list(rng.choice(present, n_tiles - len(present)))
            tiles = [rng.choice(by_class[c]) for c in drawn]
            y[i, present] = 1
        for cell, t in zip(
            rng.choice(4, len(tiles), replace=False), tiles, strict=True
        ):
            r, c = divmod(int(cell), 2)
            out[i, r * h : (r + 1) * h, c * w : (c + 1) * w] = gray[t]
    return _rgb(out), y
