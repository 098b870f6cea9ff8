"""Turning user images (arrays, PIL images, file paths) into normalized batches.

Everything a user may call "images" becomes an :class:`ImageData`: an indexable,
validated view that decodes lazily. :class:`Preprocessor` resizes (``"squash"`` or
``"crop"``), converts channels and normalizes per the backbone's
:class:`~sktransfer._backbones.Preprocessing`, and :func:`iter_batches` streams
batches so memory is bounded by the batch, never by the dataset.

The same pixels give the same codes whatever their kind (an array, a list of
arrays, PIL images, lossless files), at any image size. Two rules make it so:

* **Pixel scale by dtype, never by the data.** uint8 is divided by 255, uint16
  by 65535, bool is 0 / 1; other integers are 8-bit (0-255) and floats must lie
  in [0, 1]; values outside those ranges are an error that says how to convert,
  never a guess (:func:`_pixel_divisor`). An image's scale cannot depend on the
  other images of the call, nor a stacked array differ from a list of the same
  images (scikit-learn's subset invariance). PIL images follow the rule of
  their depth (``L`` / ``RGB`` uint8, ``I;16`` uint16, ``I`` int32, ``F``
  float32). ``pixel_range=None`` takes array values as they are.
* **One resize gate per image** (:func:`_pixels_to_target`): 8-bit pixels that
  shrink in either dimension are resized (and cropped) in uint8 by PIL; all
  others (only upsampled, 16-bit, float, or taken as they are) in float by
  torch (:meth:`Preprocessor.resize`). The gate reads the image's own depth and
  size only, so an array takes the same path as the PIL image or PNG file of
  its pixels. The uint8 path is the photo path's: files are decoded at a
  reduced JPEG DCT scale (:func:`_draft`, so JPEGs are exempt from exact
  equality with their pixels), turned upright per their EXIF orientation and
  resized before any float copy, so memory and time per photo are bounded by
  the target size (``benchmarks/photo_folder.py``). Resizing arrays in float
  instead would have made PIL images and files differ from arrays by uint8
  rounding (4e-3 in probabilities), and resizing photos in float would have
  cost a full-size float copy of each.

Errors raised while decoding (a corrupt file, NaN pixels) are of classes that
leave a DataLoader worker with their own message (:class:`_WorkerSafeError`):
the training and prediction loaders both raise the same error, naming the file,
with and without ``num_workers``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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


class _WorkerSafeError:
    """Mixin for our decoding errors: they leave DataLoader workers unchanged.

    torch re-raises an error of a worker process as ``type(exc)(text)``, the
    text being "Caught ValueError in DataLoader worker process 0. Original
    Traceback ..." with our message on its last line. Constructed from such a
    text, these errors keep only the message, so the user gets the same error,
    naming the file, with and without workers (the training loader included).
    """

    def __init__(self, message=""):
        name = f"{type(self).__module__}.{type(self).__qualname__}: "
        if isinstance(message, str) and message.startswith("Caught "):
            message = message.rpartition(name)[2].strip() or message
        super().__init__(message)


class _PixelError(_WorkerSafeError, ValueError):
    """Bad pixel values (NaN, out of the dtype's range); never re-wrapped."""


class _ImageFileError(_WorkerSafeError, ValueError):
    """An image file that cannot be decoded."""


class _MissingImageFile(_WorkerSafeError, FileNotFoundError):
    """An image file that disappeared after ``check_images``."""


def _is_8bit(dtype):
    """Pixels resized in uint8 (the photo path): uint8, bool, other integers.

    uint16 is the one 16-bit dtype; other integers are 8-bit by rule (see
    :func:`_pixel_divisor`), and bool is 0 / 255.
    """
    return dtype.kind == "b" or (dtype.kind in "iu" and not _is_16bit(dtype))


def _is_16bit(dtype):
    return dtype.kind == "u" and dtype.itemsize == 2  # any byte order (I;16B)


def _pixel_divisor(a, what="X", raw=False):
    """Validate pixel values and return what they must be divided by.

    Decided by the dtype alone, never by the values (see the module doc):
    uint8 / 255, uint16 / 65535, bool / 1; other integers must lie in 0-255
    (divided by 255) and floats in [0, 1]. ``raw=True`` takes values as they
    are (only finiteness is checked).
    """
    kind = a.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{what} has dtype {a.dtype}; pixel arrays must be numeric (uint8, "
            f"uint16 or float)."
        )
    if kind == "f" and a.size and not np.isfinite(a).all():
        raise _PixelError(
            f"{what} contains NaN or infinite pixel values; clean or impute them "
            f"before extracting features."
        )
    if raw or kind == "b":
        return 1.0
    if kind == "u" and a.dtype.itemsize == 1:
        return 255.0
    if _is_16bit(a.dtype):
        return 65535.0
    lo, hi = (a.min(), a.max()) if a.size else (0, 0)
    if kind in "iu":
        if lo < 0 or hi > 255:
            raise _PixelError(
                f"{what} has {a.dtype} pixel values in [{lo}, {hi}]; integer pixels "
                f"other than uint16 are 8-bit (0-255): pass 16-bit images as uint16 "
                f"(X.astype(np.uint16))."
            )
        return 255.0
    if lo < 0 or hi > 1:
        fix = (
            "for 0-255 values divide by 255 (X / 255) or pass uint8 "
            "(X.astype(np.uint8))"
            if lo >= 0 and hi <= 255
            else "map standardized data back to [0, 1] (the backbone's own "
            "normalization is applied for you), or pass pixel_range=None to use "
            "the values as they are"
        )
        raise _PixelError(
            f"{what} has float pixel values in [{lo:.3g}, {hi:.3g}]; float pixels "
            f"must lie in [0, 1]: {fix}."
        )
    return 1.0


def _as_uint8(a):
    """8-bit pixels (:func:`_is_8bit`, range already checked) as uint8."""
    if a.dtype.kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    return a.astype(np.uint8, copy=False)


_GRAY_MODES = ("1", "L", "LA", "La")
_HIGH_DEPTH = ("I", "F")  # + "I;16*": their own dtype, see _pil_pixels


def _is_high_depth(img):
    return img.mode in _HIGH_DEPTH or img.mode.startswith("I;16")


def _pil_pixels(img):
    """An upright PIL image's pixels: an (h, w, c) array of its own depth.

    ``I;16*`` gives uint16, ``I`` int32 and ``F`` float32 (one channel); every
    8-bit mode gives uint8, ``L`` for the grayscale modes and ``RGB`` for the
    others (palettes expanded, alpha and CMYK converted as PIL does).
    """
    if _is_high_depth(img):
        return np.asarray(img)[..., None]
    mode = "L" if img.mode in _GRAY_MODES else "RGB"
    a = np.asarray(img if img.mode == mode else img.convert(mode))
    return a[..., None] if a.ndim == 2 else a


_ORIENTATION = 0x0112  # EXIF tag


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


def _shrinks(height, width, p):
    """True when resizing an image of this size to ``p``'s plan shrinks an axis."""
    (nh, nw), _ = p.resize_plan(height, width)
    return height > nh or width > nw


def _resize_uint8(img, p):
    """An 8-bit PIL image -> float (c, H, W) tensor in [0, 1] at ``p``'s size.

    Converted to ``L`` / ``RGB`` and resized (and cropped) in uint8 by PIL with
    the weights' interpolation: no float copy larger than the target is made.
    """
    (nh, nw), (top, left) = p.resize_plan(img.height, img.width)
    mode = "L" if p.in_chans == 1 or img.mode in _GRAY_MODES else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (nw, nh):
        img = img.resize((nw, nh), _resample(p.interpolation))
    th, tw = p.input_size
    if (nh, nw) != (th, tw):
        img = img.crop((left, top, left + tw, top + th))
    a = np.array(img)  # a small (target-size) writable copy that torch can own
    t = torch.from_numpy(a[..., None] if a.ndim == 2 else a)
    return t.permute(2, 0, 1).float().div_(255.0)


def _pixels_to_target(a, p, divisor, raw=False):
    """The resize gate of every kind: (h, w, c) pixels -> ``(ready, full)``.

    ``a`` is validated and ``divisor`` is its :func:`_pixel_divisor`. 8-bit
    pixels that shrink in either axis are resized in uint8 by PIL
    (:func:`_resize_uint8`): ``ready`` is at ``p``'s size, ``full`` None.
    Others come back as ``full``, float (c, h, w) in [0, 1] at their own size,
    for :meth:`Preprocessor.resize`; ``ready`` is then None.
    """
    if not raw and _is_8bit(a.dtype) and _shrinks(a.shape[0], a.shape[1], p):
        from PIL import Image

        u8 = _as_uint8(a)
        if u8.shape[-1] == 4:
            u8 = u8[..., :3]  # alpha dropped, as on the float path
        img = Image.fromarray(
            np.ascontiguousarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
        )
        return _resize_uint8(img, p), None
    return None, _to_chw_tensor(_scale(a, divisor))


def _pil_to_target(img, p, what):
    """Upright PIL image -> ``(ready, full)`` as :func:`_pixels_to_target`.

    An 8-bit image that shrinks is resized from the PIL image itself (no
    full-size array copy); every other image goes through its pixels.
    """
    if not _is_high_depth(img) and _shrinks(img.height, img.width, p):
        return _resize_uint8(img, p), None
    a = _pil_pixels(img)
    return _pixels_to_target(a, p, _pixel_divisor(a, what))


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
            raise _MissingImageFile(
                f"image file {self.path!r} does not exist."
            ) from None
        if isinstance(exc, Image.DecompressionBombError):
            raise _ImageFileError(
                f"image file {self.path!r} is too large to decode safely ({exc}). If "
                f"you trust the file, raise Pillow's limit before transforming: "
                f"PIL.Image.MAX_IMAGE_PIXELS = None (or a larger pixel count)."
            ) from None
        if isinstance(exc, (UnidentifiedImageError, OSError, SyntaxError, ValueError)):
            raise _ImageFileError(
                f"cannot read image file {self.path!r} ({type(exc).__name__}: {exc}). "
                f"Is it a complete image file?"
            ) from None
        return False


def _open_image(path):
    """An image file -> float32 (h, w, c) array in [0, 1], upright, full size."""
    from PIL import Image

    what = f"image file {str(path)!r}"
    with _ReadErrors(path), Image.open(path) as img:
        img.load()
        a = _pil_pixels(_upright(img))
        return _scale(a, _pixel_divisor(a, what))


def _decode_file(path, p):
    """An image file -> ``(ready, full)`` as :func:`_pixels_to_target` returns them.

    JPEGs are decoded at a reduced DCT scale (:func:`_draft`), every file is
    turned upright per its EXIF orientation, and 8-bit images that shrink are
    resized in uint8: no full-resolution float copy of a photo is ever made.
    """
    from PIL import Image

    what = f"image file {str(path)!r}"
    with _ReadErrors(path), Image.open(path) as img:
        _draft(img, p)
        img.load()
        return _pil_to_target(_upright(img), p, what)


def _hwc(a, i):
    """One image array (h, w), (h, w, c) or (c, h, w) -> (h, w, c), c in {1, 3, 4}."""
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
    return a


def _scale(a, divisor):
    """float32 copy of ``a`` divided by ``divisor``."""
    a = a.astype(np.float32)
    if divisor != 1.0:
        a /= divisor
    return a


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
        self.divisor = divisor  # stacked arrays: the dtype's pixel scale

    def __len__(self):
        return len(self.items)

    @property
    def image_shape(self):
        """(h, w) of stacked arrays, else None (sizes vary or are unknown)."""
        return tuple(self.items.shape[1:3]) if self.kind == "array" else None

    def pixels(self, i):
        """Image ``i``'s validated (h, w, c) pixels and their divisor (not files)."""
        if self.kind == "array":
            return self.items[i], self.divisor
        item = self.items[i]
        if _is_pil(item):
            a = _pil_pixels(_upright(item))
            return a, _pixel_divisor(a, f"image {i}")
        a = _hwc(item, i)
        return a, _pixel_divisor(a, f"image {i}", self.raw)

    def get(self, i):
        """Image ``i`` at its own size as a float tensor (c, h, w) in [0, 1]."""
        if self.kind == "paths":
            return _to_chw_tensor(_open_image(self.items[i]))
        return _to_chw_tensor(_scale(*self.pixels(i)))

    def get_batch(self, indices):
        """Images as a stacked (b, c, h, w) tensor when sizes agree, else a list.

        At their own size, not resized: :meth:`Preprocessor.load_batch` gives
        the network's input.
        """
        if self.kind == "array":
            a = _scale(self.items[np.asarray(indices)], self.divisor)
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
        ``"auto"``: the dtype decides, never the values: uint8 is divided by
        255, uint16 by 65535, bool is 0 / 1, other integers must lie in 0-255
        (divided by 255) and floats in [0, 1]; other values are an error that
        says how to convert them. ``None``: array values are used as they are
        (e.g. already scaled or standardized data); only finiteness is checked.

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
            items = [np.asarray(x) for x in items]
            # Stacked only when shapes and dtypes agree: np.stack would cast a
            # uint8 image to the float dtype of its neighbours, and the dtype
            # decides the pixel scale.
            if (
                len({(a.shape, a.dtype) for a in items}) == 1
                and items[0].dtype != object
            ):
                return check_images(
                    np.stack(items), input_shape=input_shape, pixel_range=pixel_range
                )
        images = ImageData("list", items, raw=pixel_range is None)
        for i, x in enumerate(items):  # validate arrays now, not mid-transform
            if not _is_pil(x):
                images.pixels(i)
        return images
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

        Every kind goes through the same gate (:func:`_pixels_to_target`):
        8-bit images that shrink are resized in uint8 by PIL (files decoded at
        a reduced JPEG scale and turned upright first), the others by
        :meth:`resize`.
        """
        item = images.items[i]
        if images.kind == "paths":
            ready, full = _decode_file(item, self.p)
        elif _is_pil(item):
            ready, full = _pil_to_target(_upright(item), self.p, f"image {i}")
        else:
            a, divisor = images.pixels(i)
            ready, full = _pixels_to_target(a, self.p, divisor, images.raw)
        if full is not None:
            return self.resize(full)
        return _match_channels(ready[None], self.p.in_chans)[0]

    def load_batch(self, images, indices):
        """Images ``indices`` as a (b, c, H, W) float tensor in [0, 1].

        A stacked array whose images do not take the uint8 path is converted
        and resized as one batch; other images one by one (:meth:`load`).
        """
        if images.kind == "array" and (
            images.raw
            or not _is_8bit(images.items.dtype)
            or not _shrinks(*images.image_shape, self.p)
        ):
            return self.resize(images.get_batch(indices))
        return torch.stack([self.load(images, i) for i in indices])

    def normalize(self, x):
        """Scale [0, 1] pixels of a (b, c, h, w) batch by the weights' mean / std."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, batch):
        """Images -> the network's normalized (b, c, H, W) input.

        ``batch`` is an :class:`ImageData` (every image, as :func:`iter_batches`
        prepares it), or a stacked tensor or list of (c, h, w) float tensors in
        [0, 1], resized by :meth:`resize`.
        """
        if isinstance(batch, ImageData):
            batch = self.load_batch(batch, range(len(batch)))
        elif isinstance(batch, (list, tuple)):
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


class _ResizedDataset(torch.utils.data.Dataset):
    """Decodes and resizes one image per item (runs in DataLoader workers)."""

    def __init__(self, images, preprocessor):
        self.images = images
        self.pre = preprocessor

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.pre.load(self.images, i)


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


def iter_batches(
    images, preprocessor, batch_size, *, num_workers=0, indices=None, normalize=True
):
    """Yield normalized (b, c, H, W) float32 batches in order.

    ``normalize=False`` yields the [0, 1] pixels at the network's size instead
    (test-time augmentation transforms them before normalizing).

    Stacked arrays are converted a batch at a time in this process; files and
    PIL images are decoded and resized per image (:meth:`Preprocessor.load`), in
    DataLoader worker processes when ``num_workers`` (an int, or ``"auto"``: see
    :func:`resolve_num_workers`) asks for them, else one batch ahead in a
    thread. A decoding error in a worker is raised here with its own message
    naming the file (:class:`_WorkerSafeError`).
    """
    if indices is not None:
        images = images.subset(indices)
    n = len(images)
    finish = preprocessor.normalize if normalize else (lambda batch: batch)
    workers = resolve_num_workers(num_workers, images)
    if images.kind != "array" and workers > 0:
        loader = torch.utils.data.DataLoader(
            _ResizedDataset(images, preprocessor),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=torch.stack,
            persistent_workers=False,
        )
        for batch in loader:
            yield finish(batch)
        return
    starts = range(0, n, batch_size)

    def load(start):
        return preprocessor.load_batch(images, range(start, min(start + batch_size, n)))

    if images.kind == "array" or len(starts) < 2:
        for start in starts:
            yield finish(load(start))
        return
    # Files and PIL images without workers: threads decode the next batch
    # (its images over the cores) while the caller runs the network on this
    # one -- PIL and the engines release the GIL --, the pipelining that
    # worker processes would give, without their start-up cost or a second
    # copy of the data. An image's pixels are load()'s, as in load_batch.
    # PIL images decode in one thread: a list may hold one image object
    # twice, and a lazily loaded image is not safe to load from two threads.
    threads = available_cores() if images.kind == "paths" else 1
    with (
        ThreadPoolExecutor(max_workers=1) as ahead_pool,
        ThreadPoolExecutor(max_workers=threads) as decoders,
    ):

        def decode(start):
            idx = range(start, min(start + batch_size, n))
            return torch.stack(
                list(decoders.map(lambda i: preprocessor.load(images, i), idx))
            )

        ahead = ahead_pool.submit(decode, starts[0])
        for k in range(len(starts)):
            batch = ahead.result()
            if k + 1 < len(starts):
                ahead = ahead_pool.submit(decode, starts[k + 1])
            yield finish(batch)
