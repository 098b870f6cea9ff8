"""Dataset loaders: bundled sample, IDX files, image folders."""

import gzip

import numpy as np
import pytest
from PIL import Image

from sktransfer.datasets import (
    load_fashion_mnist,
    load_fashion_mnist_sample,
    load_image_folder,
)


def test_sample_is_stratified_uint8():
    b = load_fashion_mnist_sample()
    assert b.images.shape == (1000, 28, 28) and b.images.dtype == np.uint8
    assert np.bincount(b.target).tolist() == [100] * 10
    Xt, yt = load_fashion_mnist_sample(subset="test", return_X_y=True)
    assert Xt.shape == (1000, 28, 28)
    assert not np.array_equal(Xt[:10], b.images[:10])
    Xa, ya = load_fashion_mnist_sample(subset="all", return_X_y=True)
    assert len(Xa) == 2000 and len(b.target_names) == 10
    with pytest.raises(ValueError, match="subset"):
        load_fashion_mnist_sample(subset="valid")


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_full_loader_reads_idx_files_from_data_home(tmp_path):
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    X, y = load_fashion_mnist(subset="test", data_home=tmp_path, return_X_y=True)
    np.testing.assert_array_equal(X, imgs)
    assert y.tolist() == [1, 2, 3]


def test_full_loader_says_how_to_get_the_data(tmp_path, monkeypatch):
    import sktransfer.datasets._base as base

    monkeypatch.setattr(base, "_DEBIAN_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match="apt-get install dataset-fashion-mnist"
    ):
        load_fashion_mnist(data_home=tmp_path)


def test_image_folder(tmp_path):
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(np.zeros((5, 5), np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    (tmp_path / "dog" / "notes.txt").write_text("skip me")
    b = load_image_folder(tmp_path)
    assert len(b.filenames) == 5 and b.target.tolist() == ["cat"] * 2 + ["dog"] * 3
    assert b.target_names.tolist() == ["cat", "dog"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path)
