"""Turning user images (arrays, PIL images, file paths) into normalized batches.

Everything a user may call "images" becomes an :class:`ImageData`: an indexable,
validated view that decodes lazily. :class:`Preprocessor` resizes (``"squash"`` or
``"crop"``), converts channels and normalizes per the backbone's
:class:`~sktransfer._backbones.Preprocessing`, and :func:`iter_batches` streams
batches so memory is bounded by the batch, never by the dataset.

Files and PIL images take the photo path (:meth:`Preprocessor.load`): JPEGs are
decoded at a reduced DCT scale, every image is turned upright per its EXIF
orientation, and 8-bit images larger than the target are resized in uint8 by PIL
before any float conversion, so memory per image is bounded by the target size.
Arrays, and images that are only upsampled, take the tensor path (float resize
by torch), so a small image gives the same codes as a file, a PIL image or an
array.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ImageData",
    "Preprocessor",
    "check_images",
    "iter_batches",
    "resolve_num_workers",
]

_CHANNELS = (1, 3, 4)
RESIZE_MODES = ("squash", "crop")
_HINT_SHAPES = (
    "Images must be a (n, h, w) grayscale array, an (n, h, w, c) or (n, c, h, w) array "
    "with c in {1, 3, 4}, a list of PIL images or arrays, or a list of image file paths"
)


def _pixel_divisor(a, what="X", raw=False):
    """Validate pixel values and return what they must be divided by.

    Decided once for a whole array (never per batch, so an image's code does not
    depend on its batch mates). ``raw=True`` takes values as they are (only
    finiteness is checked).
    """
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"{what} has dtype {a.dtype}; pixel arrays must be numeric (uint8, "
            f"uint16 or float)."
        )
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise ValueError(
            f"{what} contains NaN or infinite pixel values; clean or impute them "
            f"before extracting features."
        )
    if raw or a.dtype == bool:
        return 1.0
    if a.dtype == np.uint8:
        return 255.0
    if a.dtype == np.uint16:
        return 65535.0
    if a.dtype.kind in "iu":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"{what} has integer pixel values in [{lo}, {hi}]; expected 0-255 "
                f"(8-bit) or 0-65535 (16-bit)."
            )
        return 255.0 if hi <= 255 else 65535.0
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{what} has float pixel values in [{lo:.3g}, {hi:.3g}]; expected "
            f"floats in [0, 1] (or 0-255). Standardized data must be mapped back "
            f"to pixel range (or pass pixel_range=None): the backbone's own "
            f"normalization is applied for you."
        )
    return 255.0 if hi > 1.0 else 1.0


def _scale_array(a, what="X", raw=False):
    """Return the float32 pixels of ``a`` in [0, 1] (see :func:`_pixel_divisor`)."""
    divisor = _pixel_divisor(a, what, raw)
    a = a.astype(np.float32)
    return a / divisor if divisor != 1.0 else a


def _pil_to_array(img):
    """PIL image of any mode -> float32 (h, w, c) array in [0, 1], c in {1, 3}."""
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32)[..., None] / 65535.0
    if mode == "I":
        a = np.asarray(img, dtype=np.float32)
        return (a / (65535.0 if a.max(initial=0) > 255 else 255.0))[..., None]
    if mode == "F":
        a = np.array(img, dtype=np.float32)  # writable: torch shares it
        return (a / 255.0 if a.max(initial=0) > 1 else a)[..., None]
    if mode == "L":
        return np.asarray(img, dtype=np.float32)[..., None] / 255.0
    if mode in ("LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


class _PixelError(ValueError):
    """Bad pixel values in a decoded image (raised as is, never re-wrapped)."""


_ORIENTATION = 0x0112  # EXIF tag
_HIGH_DEPTH = ("I", "F")  # + "I;16*": decoded to float, resized with torch


def _orientation(img):
    try:
        o = int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return o if 1 <= o <= 8 else 1


def _upright(img):
    """``img`` turned as its EXIF orientation says (phones store portraits sideways)."""
    if _orientation(img) == 1:
        return img
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def _resample(interpolation):
    from PIL import Image

    return {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
    }[interpolation]


def _check_finite(a, what):
    if not np.isfinite(a).all():
        raise _PixelError(
            f"{what} contains NaN or infinite pixel values; clean or impute them "
            f"before extracting features."
        )


def _draft(img, p):
    """Ask a JPEG decoder for the smallest DCT scale that still covers the target.

    libjpeg decodes at 1/2, 1/4 or 1/8 scale for a fraction of the work and
    memory; the size asked for is what :meth:`Preprocessing.resize_plan` resizes
    to, so the result is never upsampled. Other formats ignore this.
    """
    if getattr(img, "format", None) != "JPEG":
        return
    w, h = img.size
    turned = _orientation(img) in (5, 6, 7, 8)
    if turned:
        w, h = h, w
    (nh, nw), _ = p.resize_plan(h, w)
    size = (nh, nw) if turned else (nw, nh)
    img.draft("L" if p.in_chans == 1 else "RGB", size)


def _pil_to_target(img, p, what):
    """Upright PIL image -> ``(ready, raw)`` float (c, h, w) tensors in [0, 1].

    An 8-bit image larger than its resize target is converted to ``L`` / ``RGB``
    and resized (and cropped) in uint8 by PIL with the weights' interpolation,
    so memory is bounded by the target size: ``ready`` is at ``p``'s size and
    ``raw`` is None. 16-bit and float images (precision kept) and images no
    larger than the target (only upsampled: their float copy is smaller than
    the target's, and their codes equal those of the same pixels given as an
    array) come back as ``raw``, the whole image checked finite, for
    :meth:`Preprocessor.resize`; ``ready`` is then None.
    """
    (nh, nw), (top, left) = p.resize_plan(img.height, img.width)
    high_depth = img.mode in _HIGH_DEPTH or img.mode.startswith("I;16")
    if high_depth or (img.width <= nw and img.height <= nh):
        a = _pil_to_array(img)
        _check_finite(a, what)
        return None, _to_chw_tensor(a)
    if p.in_chans == 1 or img.mode in ("1", "L", "LA", "La"):
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (nw, nh):
        img = img.resize((nw, nh), _resample(p.interpolation))
    th, tw = p.input_size
    if (nh, nw) != (th, tw):
        img = img.crop((left, top, left + tw, top + th))
    a = np.array(img)  # a small (target-size) writable copy that torch can own
    t = torch.from_numpy(a[..., None] if a.ndim == 2 else a)
    return t.permute(2, 0, 1).float().div_(255.0), None


class _ReadErrors:
    """Context manager turning every decoding failure into one clear error."""

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, _PixelError):
            return False
        from PIL import Image, UnidentifiedImageError

        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(
                f"image file {self.path!r} does not exist."
            ) from None
        if isinstance(exc, Image.DecompressionBombError):
            raise ValueError(
                f"image file {self.path!r} is too large to decode safely ({exc}). If "
                f"you trust the file, raise Pillow's limit before transforming: "
                f"PIL.Image.MAX_IMAGE_PIXELS = None (or a larger pixel count)."
            ) from None
        if isinstance(exc, (UnidentifiedImageError, OSError, SyntaxError, ValueError)):
            raise ValueError(
                f"cannot read image file {self.path!r} ({type(exc).__name__}: {exc}). "
                f"Is it a complete image file?"
            ) from None
        return False


def _open_image(path):
    """An image file -> float32 (h, w, c) array in [0, 1], upright, full size."""
    from PIL import Image

    with _ReadErrors(path), Image.open(path) as img:
        img.load()
        a = _pil_to_array(_upright(img))
    _check_finite(a, f"image file {str(path)!r}")
    return a


def _decode_file(path, p):
    """An image file -> ``(ready, raw)`` as :func:`_pil_to_target` returns them.

    JPEGs are decoded at a reduced DCT scale (:func:`_draft`), every file is
    turned upright per its EXIF orientation, and 8-bit images are resized in
    uint8: no full-resolution float copy of a photo is ever made.
    """
    from PIL import Image

    what = f"image file {str(path)!r}"
    with _ReadErrors(path), Image.open(path) as img:
        _draft(img, p)
        img.load()
        return _pil_to_target(_upright(img), p, what)


def _hwc_from_single(a, i, raw=False):
    """One image array (h, w), (h, w, c) or (c, h, w) -> float (h, w, c) in [0, 1]."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[..., None]
    elif a.ndim == 3:
        if a.shape[-1] not in _CHANNELS and a.shape[0] in _CHANNELS:
            a = np.moveaxis(a, 0, -1)
    else:
        raise ValueError(f"image {i} has shape {a.shape}; {_HINT_SHAPES}.")
    if a.shape[-1] not in _CHANNELS:
        raise ValueError(
            f"image {i} has {a.shape[-1]} channels (shape {a.shape}); expected 1 "
            f"(grayscale), 3 (RGB) or 4 (RGBA)."
        )
    return _scale_array(a, what=f"image {i}", raw=raw)


def _to_chw_tensor(hwc):
    """float (h, w, c) -> tensor (c', h, w) with alpha dropped, c' in {1, 3}."""
    if hwc.shape[-1] == 4:
        hwc = hwc[..., :3]
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)


class ImageData:
    """A validated, indexable, lazily decoded collection of images.

    Use :func:`check_images` to build one. ``kind`` is ``"array"`` (one stacked
    array, converted batch by batch), ``"list"`` (PIL images or arrays of varying
    sizes) or ``"paths"`` (files decoded on demand, in DataLoader workers if asked).
    """

    def __init__(self, kind, items, raw=False, divisor=None):
        self.kind = kind
        self.items = items
        self.raw = raw
        self.divisor = divisor  # stacked arrays: one pixel scale for all images

    def __len__(self):
        return len(self.items)

    @property
    def image_shape(self):
        """(h, w) of stacked arrays, else None (sizes vary or are unknown)."""
        return tuple(self.items.shape[1:3]) if self.kind == "array" else None

    def get(self, i):
        """Image ``i`` as a float tensor (c, h, w) in [0, 1], c in {1, 3}."""
        if self.kind == "array":
            return self.get_batch([i])[0]
        item = self.items[i]
        if self.kind == "paths":
            return _to_chw_tensor(_open_image(item))
        if _is_pil(item):
            a = _pil_to_array(_upright(item))
            _check_finite(a, f"image {i}")
            return _to_chw_tensor(a)
        return _to_chw_tensor(_hwc_from_single(item, i, self.raw))

    def get_batch(self, indices):
        """Images as a stacked (b, c, h, w) tensor when sizes agree, else a list."""
        if self.kind == "array":
            a = self.items[np.asarray(indices)].astype(np.float32)
            if self.divisor != 1.0:
                a /= self.divisor
            return _to_chw_tensor_batch(a)
        return [self.get(i) for i in indices]

    def subset(self, indices):
        """A new ImageData over ``indices`` (no pixels are copied for files)."""
        indices = np.asarray(indices)
        if self.kind == "array":
            return ImageData("array", self.items[indices], self.raw, self.divisor)
        items = [self.items[i] for i in indices]
        return ImageData(self.kind, items, self.raw)


def _to_chw_tensor_batch(a):
    # a: (b, h, w, c) float
    if a.shape[-1] == 4:
        a = a[..., :3]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def _is_path(x):
    return isinstance(x, (str, os.PathLike))


def _is_pil(x):
    return hasattr(x, "mode") and hasattr(x, "convert")


def check_images(X, *, input_shape=None, check_files=True, pixel_range="auto"):
    """Validate ``X`` and wrap it as :class:`ImageData` (decoding nothing yet).

    Parameters
    ----------
    X : array-like, list of PIL images, list of arrays or list of paths
        The images (see ``CNNFeatureExtractor`` for the accepted forms).
    input_shape : tuple, default=None
        When given, a 2-D ``X`` of flattened images is reshaped to
        ``(n_samples, *input_shape)`` first (e.g. ``(8, 8)`` for ``load_digits``).
    check_files : bool, default=True
        Check up front that every file path exists.
    pixel_range : {"auto"} or None, default="auto"
        ``"auto"``: uint8 is divided by 255, uint16 by 65535, floats must lie in
        [0, 1] (or [0, 255], then divided by 255), anything else is an error.
        ``None``: array values are used as they are (e.g. already scaled or
        standardized data); only finiteness is checked.

    Returns
    -------
    images : ImageData
    """
    if _is_path(X):
        raise TypeError(
            f"X is a single path ({str(X)!r}); pass a list of image paths, or load a "
            f"folder of class subfolders with sktransfer.datasets.load_image_folder."
        )
    if hasattr(X, "mode") and hasattr(X, "convert"):
        raise TypeError("X is a single PIL image; pass a list of images, e.g. [img].")
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS" and X.shape[1:] == (1,):
        # one column of paths or PIL images: what ColumnTransformer passes for
        # ["path"] (a DataFrame of one column)
        X = X[:, 0]
    if isinstance(X, (list, tuple)) or (
        isinstance(X, np.ndarray) and X.dtype.kind in "OUS"
    ):
        items = list(X) if not isinstance(X, np.ndarray) or X.ndim == 1 else None
        if items is None:
            raise TypeError(
                f"X is an array of shape {X.shape} and dtype {X.dtype}; {_HINT_SHAPES}."
            )
        if len(items) == 0:
            raise ValueError("X holds 0 images; at least one image is required.")
        if all(_is_path(x) for x in items):
            paths = [os.fspath(x) for x in items]
            if check_files:
                missing = [p for p in paths if not os.path.isfile(p)]
                if missing:
                    raise FileNotFoundError(
                        f"{len(missing)} of {len(paths)} image files do not exist, "
                        f"e.g. {missing[:3]}."
                    )
            return ImageData("paths", np.asarray(paths, dtype=object))
        if any(_is_path(x) for x in items):
            raise TypeError("X mixes file paths with other objects; use one kind.")
        kinds = set()
        for i, x in enumerate(items):
            if hasattr(x, "mode") and hasattr(x, "convert"):
                kinds.add("pil")
            elif isinstance(x, (np.ndarray, torch.Tensor)) or (
                isinstance(x, (list, tuple)) and len(x) and not np.isscalar(x[0])
            ):
                kinds.add("array")
            else:
                raise TypeError(f"X[{i}] is a {type(x).__name__}; {_HINT_SHAPES}.")
        if kinds == {"array"}:
            arrays = [np.asarray(x) for x in items]
            if len({a.shape for a in arrays}) == 1 and arrays[0].dtype != object:
                return check_images(
                    np.stack(arrays), input_shape=input_shape, pixel_range=pixel_range
                )
            raw = pixel_range is None
            for i, a in enumerate(arrays):  # validate now, not mid-transform
                _hwc_from_single(a, i, raw)
            return ImageData("list", arrays, raw=raw)
        return ImageData("list", items)
    X = np.asarray(X)
    if X.dtype.kind in "USO":
        raise TypeError(f"X has dtype {X.dtype}; {_HINT_SHAPES}.")
    if X.ndim == 2 and input_shape is not None:
        if X.shape[0] == 0:
            raise ValueError("X holds 0 images; at least one image is required.")
        try:
            X = X.reshape((X.shape[0], *input_shape))
        except ValueError:
            raise ValueError(
                f"X has {X.shape[1]} features per row, which cannot be reshaped to "
                f"input_shape={tuple(input_shape)}."
            ) from None
    if X.ndim < 3 or X.ndim > 4:
        extra = (
            " For flattened images (e.g. load_digits().data) pass input_shape=(h, w)."
            if X.ndim == 2
            else ""
        )
        raise ValueError(
            f"X has {X.ndim} dimension(s) (shape {X.shape}); {_HINT_SHAPES}.{extra}"
        )
    if X.shape[0] == 0:
        raise ValueError("X holds 0 images; at least one image is required.")
    if X.ndim == 3:
        X = X[..., None]
    elif X.shape[-1] not in _CHANNELS:
        if X.shape[1] in _CHANNELS:
            X = np.moveaxis(X, 1, -1)
        else:
            raise ValueError(
                f"X has shape {X.shape}: neither axis 1 nor the last axis is a channel "
                f"axis of size 1, 3 or 4 (got {X.shape[1]} and {X.shape[-1]} "
                f"channels). Convert to grayscale or RGB first."
            )
    if min(X.shape[1:3]) < 1:
        raise ValueError(f"X has images of size {X.shape[1:3]}; they must be >= 1x1.")
    raw = pixel_range is None
    divisor = _pixel_divisor(X, raw=raw)  # all pixels checked before any work
    return ImageData("array", X, raw=raw, divisor=divisor)


class Preprocessor:
    """Resize, convert channels and normalize per a backbone's preprocessing.

    Parameters
    ----------
    preprocessing : Preprocessing
        Target size, mean, std, interpolation and channel count.
    """

    def __init__(self, preprocessing):
        self.p = preprocessing
        c = preprocessing.in_chans
        self.mean = torch.tensor(_expand(preprocessing.mean, c)).view(1, c, 1, 1)
        self.std = torch.tensor(_expand(preprocessing.std, c)).view(1, c, 1, 1)

    def resize(self, x):
        """(b, c, h, w) or (c, h, w) float -> same at the target size, c matched.

        The tensor path (arrays): resized with ``F.interpolate`` (antialiased, as
        PIL does), then centre-cropped when ``resize="crop"``.
        """
        single = x.ndim == 3
        if single:
            x = x[None]
        x = _match_channels(x, self.p.in_chans)
        (nh, nw), (top, left) = self.p.resize_plan(*x.shape[-2:])
        if tuple(x.shape[-2:]) != (nh, nw):
            mode = self.p.interpolation
            x = F.interpolate(
                x,
                size=(nh, nw),
                mode=mode,
                align_corners=False if mode != "nearest" else None,
                antialias=mode != "nearest",
            )
            if mode == "bicubic":
                x = x.clamp_(0, 1)
        th, tw = self.p.input_size
        if (nh, nw) != (th, tw):
            x = x[..., top : top + th, left : left + tw]
        return x[0] if single else x

    def load(self, images, i):
        """Image ``i`` of an :class:`ImageData` as a (c, H, W) float tensor in [0, 1].

        Files and PIL images take the uint8 PIL path (reduced JPEG decoding, EXIF
        orientation, resize before any float conversion); arrays the tensor path.
        """
        if images.kind == "array":
            return self.resize(images.get_batch([i]))[0]
        item = images.items[i]
        if images.kind == "paths":
            ready, raw = _decode_file(item, self.p)
        elif _is_pil(item):
            ready, raw = _pil_to_target(_upright(item), self.p, f"image {i}")
        else:
            return self.resize(images.get(i))
        if raw is not None:
            return self.resize(raw)
        return _match_channels(ready[None], self.p.in_chans)[0]

    def load_batch(self, images, indices):
        """Images ``indices`` as a (b, c, H, W) float tensor in [0, 1]."""
        if images.kind == "array":
            return self.resize(images.get_batch(indices))
        return torch.stack([self.load(images, i) for i in indices])

    def normalize(self, x):
        """Scale [0, 1] pixels of a (b, c, h, w) batch by the weights' mean / std."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, batch):
        """Stacked tensor or list of (c, h, w) tensors -> normalized (b, c, H, W)."""
        if isinstance(batch, (list, tuple)):
            batch = torch.stack([self.resize(t) for t in batch])
        else:
            batch = self.resize(batch)
        return self.normalize(batch)


def _expand(values, c):
    values = tuple(values)
    if len(values) == c:
        return values
    if len(values) == 1:
        return values * c
    if c == 1:
        return (sum(values) / len(values),)
    raise ValueError(f"{len(values)} normalization values for {c} channels.")


_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _match_channels(x, c):
    if x.shape[1] == c:
        return x
    if c == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 1 and x.shape[1] == 3:
        return (x * _LUMA.to(x)).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {x.shape[1]}-channel images to {c} channels.")


class _DecodeFailure:
    """An error raised in a DataLoader worker, carried to the main process.

    torch re-raises worker errors wrapped in "Caught ValueError in DataLoader
    worker process 0" with the message buried in a traceback; the user must get
    the same clear error as without workers.
    """

    def __init__(self, exc):
        self.type = type(exc) if isinstance(exc, (ValueError, OSError)) else None
        self.message = str(exc)
        self.exc = None if self.type is not None else exc

    def reraise(self):
        if self.type is not None:
            raise self.type(self.message)
        raise self.exc


class _ResizedDataset(torch.utils.data.Dataset):
    """Decodes and resizes one image per item (runs in DataLoader workers)."""

    def __init__(self, images, preprocessor, transform=None):
        self.images = images
        self.pre = preprocessor
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        try:
            x = self.pre.load(self.images, i)
        except (ValueError, OSError, TypeError) as exc:
            return _DecodeFailure(exc)
        if self.transform is not None:
            x = self.transform(x)
        return x


def _collate(items):
    for x in items:
        if isinstance(x, _DecodeFailure):
            return x
    return torch.stack(items)


def available_cores():
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


_AUTO_MIN_IMAGES = 32  # below one batch, starting worker processes costs more


def resolve_num_workers(num_workers, images):
    """The DataLoader worker count for decoding ``images``.

    ``"auto"``: no workers for arrays (converted a batch at a time in this
    process), fewer than 32 images, or at most 2 cores; otherwise one worker
    per core beyond the first, at most 4, so decoding overlaps the network. On
    2 cores a worker competes with the engine's threads: 64 camera JPEGs ran
    at 113 images/s without workers and 98 with one (2-core AMD EPYC,
    ``benchmarks/photo_folder.py``); more cores were not measured.
    """
    if num_workers != "auto":
        return int(num_workers)
    if images.kind == "array" or len(images) < _AUTO_MIN_IMAGES:
        return 0
    if images.kind == "list" and not any(_is_pil(x) for x in images.items):
        return 0
    cores = available_cores()
    if cores <= 2:
        return 0
    return min(4, cores - 1)


def iter_batches(images, preprocessor, batch_size, *, num_workers=0, indices=None):
    """Yield normalized (b, c, H, W) float32 batches in order.

    Stacked arrays are converted a batch at a time in this process; files and
    PIL images are decoded and resized per image (:meth:`Preprocessor.load`), in
    DataLoader worker processes when ``num_workers`` (an int, or ``"auto"``: see
    :func:`resolve_num_workers`) asks for them. A decoding error in a worker is
    raised here unchanged (same type, same message naming the file).
    """
    if indices is not None:
        images = images.subset(indices)
    n = len(images)
    workers = resolve_num_workers(num_workers, images)
    if images.kind != "array" and workers > 0:
        loader = torch.utils.data.DataLoader(
            _ResizedDataset(images, preprocessor),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        for batch in loader:
            if isinstance(batch, _DecodeFailure):
                batch.reraise()
            yield preprocessor.normalize(batch)
        return
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        yield preprocessor.normalize(preprocessor.load_batch(images, idx))
