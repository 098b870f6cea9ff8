"""Datasets: a bundled Fashion-MNIST sample, full Fashion-MNIST, image folders."""

from ._base import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_fashion_mnist_sample,
    load_image_folder,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "load_fashion_mnist_sample",
    "load_image_folder",
]
