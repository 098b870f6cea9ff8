"""Datasets: a bundled Fashion-MNIST sample, full Fashion-MNIST, image folders,
and tasks beyond one label per image made from them (rotations, mosaics)."""

from ._base import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_fashion_mnist_sample,
    load_image_folder,
)
from ._tasks import make_mosaics, make_rotated

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "load_fashion_mnist_sample",
    "load_image_folder",
    "make_mosaics",
    "make_rotated",
]
