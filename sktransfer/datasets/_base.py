"""Dataset loaders: the bundled Fashion-MNIST sample, full Fashion-MNIST, folders."""

from __future__ import annotations

import gzip
import os
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "load_fashion_mnist_sample",
    "load_image_folder",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)


def _pick(subset, parts, return_X_y, descr):
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}.")
    if subset == "all":
        images = np.concatenate([parts["train"][0], parts["test"][0]])
        target = np.concatenate([parts["train"][1], parts["test"][1]])
    else:
        images, target = parts[subset]
    if return_X_y:
        return images, target
    return Bunch(
        images=images,
        data=images.reshape(len(images), -1),
        target=target,
        target_names=np.asarray(FASHION_MNIST_CLASSES),
        DESCR=descr,
    )


def load_fashion_mnist_sample(*, subset="train", return_X_y=False):
    """Load the small Fashion-MNIST sample bundled with sktransfer (offline).

    100 images per class for ``"train"`` and 100 per class for ``"test"``, drawn
    stratified (seed 0) from the official Fashion-MNIST train and test sets:
    28x28 grayscale, uint8 0-255.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="train"
        Which part to return.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``images`` (n, 28, 28) uint8, ``data`` (n, 784) the same flattened,
        ``target`` (n,) int labels 0-9, ``target_names`` and ``DESCR``.
    (images, target) : tuple if ``return_X_y`` is True

    Notes
    -----
    Fashion-MNIST is (c) 2017 Zalando SE, MIT (Expat) licensed; the sample was made
    from Debian's ``dataset-fashion-mnist`` package by
    ``python -m sktransfer.datasets._make_sample``.

    Examples
    --------
    >>> from sktransfer.datasets import load_fashion_mnist_sample
    >>> X, y = load_fashion_mnist_sample(return_X_y=True)
    >>> X.shape, X.dtype, len(set(y))
    ((1000, 28, 28), dtype('uint8'), 10)
    """
    ref = resources.files("sktransfer.datasets") / "data" / "fashion_mnist_sample.npz"
    with resources.as_file(ref) as path, np.load(path) as z:
        parts = {
            "train": (z["train_images"], z["train_labels"].astype(np.int64)),
            "test": (z["test_images"], z["test_labels"].astype(np.int64)),
        }
    return _pick(subset, parts, return_X_y, "Fashion-MNIST sample (sktransfer)")


_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, Fashion-MNIST's only type


def _read_idx(path, ndim=None):
    """An IDX file of unsigned bytes, gzipped or plain, as an array.

    Gzip is recognised by its content (the magic bytes ``1f 8b``), not the file
    name. A file that is not an IDX file of unsigned bytes (bad magic number, or
    another number of dimensions than ``ndim``), or whose length differs from
    what its header's dimensions say (truncated, trailing bytes), or a truncated
    or corrupt gzip stream, is a ``ValueError`` naming the file and the problem.
    """
    name = str(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(
                f"Fashion-MNIST file {name!r} is not a complete gzip file "
                f"({type(exc).__name__}: {exc}); download it again."
            ) from None
    if len(data) < 4:
        raise ValueError(
            f"Fashion-MNIST file {name!r} is truncated: {len(data)} bytes, fewer "
            f"than the 4 of an IDX magic number."
        )
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] == 0:
        raise ValueError(
            f"Fashion-MNIST file {name!r} is not an IDX file of unsigned bytes: bad "
            f"magic number 0x{magic:08X} (expected 0x000008NN, NN the number of "
            f"dimensions)."
        )
    if ndim is not None and data[3] != ndim:
        raise ValueError(
            f"Fashion-MNIST file {name!r} holds {data[3]}-dimensional data (magic "
            f"number 0x{magic:08X}); expected {ndim} dimensions."
        )
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise ValueError(
            f"Fashion-MNIST file {name!r} is truncated: {len(data)} bytes, fewer "
            f"than the {header} of its header."
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != size:
        problem = "is truncated" if len(data) - header < size else "is too long"
        raise ValueError(
            f"Fashion-MNIST file {name!r} {problem}: its header says {dims} "
            f"({size} bytes of data) but it holds {len(data) - header} bytes of data."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(data_home, stem):
    dirs = []
    if data_home is not None:
        dirs.append(Path(data_home))
    env = os.environ.get("SKTRANSFER_DATA")
    if env:
        dirs.append(Path(env))
    dirs += [Path.home() / "sktransfer_data" / "fashion-mnist", Path(_DEBIAN_DIR)]
    for d in dirs:
        for candidate in (
            d / stem,
            d / f"{stem}.gz",
            d / "fashion-mnist" / f"{stem}.gz",
        ):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {[str(d) for d in dirs]}. "
        f"Install it with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or "
        f"download the four IDX files from "
        f"https://github.com/zalandoresearch/fashion-mnist into a folder and pass "
        f"data_home=that folder. The bundled subset works offline: "
        f"load_fashion_mnist_sample()."
    )


def load_fashion_mnist(*, subset="train", data_home=None, return_X_y=False):
    """Load the full Fashion-MNIST dataset from local IDX files.

    Looks in ``data_home``, ``$SKTRANSFER_DATA``, ``~/sktransfer_data/fashion-mnist``
    and Debian's ``/usr/share/datasets/fashion-mnist`` (package
    ``dataset-fashion-mnist``); never downloads.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="train"
        60,000 training images, 10,000 test images, or both.
    data_home : str or path, default=None
        A folder holding the four (optionally gzipped) IDX files.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : Bunch or tuple
        As :func:`load_fashion_mnist_sample`.

    Raises
    ------
    FileNotFoundError
        When the files are absent; the message says how to get them.
    ValueError
        A file that is not an IDX file of unsigned bytes (bad magic number, or
        not 3-D images / 1-D labels), is truncated or has trailing bytes, a
        corrupt gzip stream, images and labels files of different lengths, or a
        label outside 0-9. The message names the file.

    Examples
    --------
    >>> from sktransfer.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist(subset="test", return_X_y=True)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (10000, 28, 28)
    """
    needed = ("train", "test") if subset == "all" else (subset,)
    parts = {}
    for name in needed:
        if name not in _FILES:
            break
        img_stem, lab_stem = _FILES[name]
        img_path = _find_idx(data_home, img_stem)
        lab_path = _find_idx(data_home, lab_stem)
        images = _read_idx(img_path, ndim=3)
        labels = _read_idx(lab_path, ndim=1)
        if len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST files {str(img_path)!r} and {str(lab_path)!r} do not "
                f"match: {len(images)} images but {len(labels)} labels."
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(
                f"Fashion-MNIST file {str(lab_path)!r} holds label {labels.max()}; "
                f"labels are 0-{len(FASHION_MNIST_CLASSES) - 1}."
            )
        parts[name] = (images, labels.astype(np.int64))
    return _pick(subset, parts, return_X_y, "Fashion-MNIST (Zalando, MIT license)")


def _suffixes(extensions):
    """``extensions`` as a tuple of lower-case suffixes with their dot.

    A single string is one suffix: matched against a tuple it would otherwise be
    a substring test (``".png"`` would count ``.p`` files and files without a
    suffix).
    """
    items = [extensions] if isinstance(extensions, str) else extensions
    try:
        items = list(items)
    except TypeError:
        items = None
    if items is None or not all(isinstance(e, str) for e in items):
        raise TypeError(
            f"extensions must be a suffix such as '.png' or a list of them, got "
            f"{extensions!r}."
        )
    if not items or not all(e.strip(".") for e in items):
        raise ValueError(
            f"extensions must name at least one suffix such as '.png', got "
            f"{extensions!r}."
        )
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in items)


def load_image_folder(path, *, extensions=IMAGE_EXTENSIONS, return_X_y=False):
    """List an ImageFolder-style directory: one subfolder of images per class.

    Parameters
    ----------
    path : str or path
        ``path/<class name>/<image file>`` (images in nested folders of a class
        count for it); hidden files and folders (names starting with ``.``,
        e.g. ``.thumbs``) and other extensions are skipped.
    extensions : str or iterable of str, default=common image extensions
        File suffixes counted as images, e.g. ``(".png", ".jpg")``; a single
        string is one suffix. Case and a missing leading dot do not matter.
    return_X_y : bool, default=False
        Return ``(filenames, target)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``filenames`` (n,) object array of paths, ``target`` (n,) class-name
        strings, ``target_names`` sorted class names. Images are not decoded:
        estimators decode them lazily, batch by batch.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or is not a directory.
    ValueError
        No class subfolder holds an image.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> from sktransfer.datasets import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / cls / "a.png")
    >>> X, y = load_image_folder(root, return_X_y=True)
    >>> list(y)
    ['cat', 'dog']
    """
    extensions = _suffixes(extensions)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise FileNotFoundError(
            f"{str(root)!r} is not a directory; expected a folder with one subfolder "
            f"of images per class."
        )
    files, labels = [], []
    classes = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    for cls in classes:
        for f in sorted((root / cls).rglob("*")):
            # Hidden anywhere below the class folder (``a/.thumbs/0.png``, a
            # ``.ipynb_checkpoints`` copy) is not an image of class ``a``.
            hidden = any(part.startswith(".") for part in f.relative_to(root).parts)
            if f.is_file() and not hidden and f.suffix.lower() in extensions:
                files.append(str(f))
                labels.append(cls)
    if not files:
        raise ValueError(
            f"no images found in {str(root)!r}: expected class subfolders "
            f"(path/<class>/<image>) holding files with extensions {extensions}; "
            f"found {len(classes)} subfolder(s)."
        )
    filenames = np.asarray(files, dtype=object)
    target = np.asarray(labels, dtype=object)
    if return_X_y:
        return filenames, target
    return Bunch(
        filenames=filenames,
        target=target,
        target_names=np.asarray(sorted(set(labels)), dtype=object),
        DESCR=f"Image folder {root}",
    )
