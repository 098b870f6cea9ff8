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


def _idx_bytes(array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


_IMGS = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256


def _write_test_files(folder, images=_IMGS, labels=(1, 2, 3), gz=True):
    """The two t10k files, gzipped or plain; returns their paths."""
    paths = []
    for stem, array in (
        ("t10k-images-idx3-ubyte", np.asarray(images)),
        ("t10k-labels-idx1-ubyte", np.asarray(labels)),
    ):
        data = _idx_bytes(array)
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths


@pytest.mark.parametrize("gz", [True, False])
def test_full_loader_reads_plain_and_gzipped_idx(gz, tmp_path):
    _write_test_files(tmp_path, gz=gz)
    X, y = load_fashion_mnist(subset="test", data_home=tmp_path, return_X_y=True)
    np.testing.assert_array_equal(X, _IMGS)
    assert X.dtype == np.uint8 and y.tolist() == [1, 2, 3]


def _corrupt(path, how, gz):
    """Rewrite one IDX file of the test set in a broken way."""
    import io

    raw = path.read_bytes()
    data = gzip.decompress(raw) if gz else raw
    if how == "bad magic":
        data = b"\x00\x00\x0d" + data[3:]  # type 0x0D (float), not unsigned bytes
    elif how == "not idx":
        data = b"<html>not found</html>" + data
    elif how == "truncated":
        data = data[:-2]
    elif how == "trailing bytes":
        data = data + b"\x00" * 7
    elif how == "header only":
        data = data[:6]
    elif how == "gzip stream cut":
        path.write_bytes(raw[: len(raw) // 2])
        return
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb") as f:
            f.write(data)
        data = buf.getvalue()
    path.write_bytes(data)


_BROKEN_IDX = [
    ("bad magic", 0, "bad magic number 0x00000D03"),
    ("not idx", 1, "bad magic number"),
    ("truncated", 0, r"is truncated: its header says \[3, 28, 28\] \(2352 bytes"),
    ("truncated", 1, r"is truncated: its header says \[3\] \(3 bytes"),
    ("trailing bytes", 0, r"is too long: .* holds 2359 bytes"),
    ("header only", 0, "is truncated: 6 bytes, fewer than the 16 of its header"),
]


@pytest.mark.parametrize(
    "gz, how, which, message",
    [(gz, *case) for gz in (True, False) for case in _BROKEN_IDX]
    + [(True, "gzip stream cut", 0, "not a complete gzip file")],
)
def test_full_loader_rejects_broken_idx_naming_the_file(
    gz, how, which, message, tmp_path
):
    path = _write_test_files(tmp_path, gz=gz)[which]
    _corrupt(path, how, gz)
    with pytest.raises(ValueError, match=message) as info:
        load_fashion_mnist(subset="test", data_home=tmp_path)
    assert repr(str(path)) in str(info.value)


def test_full_loader_rejects_mismatched_files(tmp_path):
    images, labels = _write_test_files(tmp_path, labels=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="3 images but 4 labels") as info:
        load_fashion_mnist(subset="test", data_home=tmp_path)
    assert repr(str(images)) in str(info.value)
    assert repr(str(labels)) in str(info.value)
    # the images file where the labels belong: 3-D data in place of 1-D
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(images.read_bytes())
    with pytest.raises(ValueError, match="3-dimensional data .* expected 1"):
        load_fashion_mnist(subset="test", data_home=tmp_path)
    _write_test_files(tmp_path, labels=[1, 2, 10])
    with pytest.raises(ValueError, match="holds label 10; labels are 0-9"):
        load_fashion_mnist(subset="test", data_home=tmp_path)


def test_task_makers_build_what_their_targets_say():
    from sktransfer.datasets import make_mosaics, make_rotated

    rng = np.random.default_rng(0)
    tiles = rng.integers(1, 256, size=(40, 28, 28), dtype=np.uint8)  # never black
    labels = np.arange(40) % 5
    X, angles = make_rotated(tiles, 12, max_angle=30, random_state=0)
    assert X.shape == (12, 56, 56, 3) and X.dtype == np.uint8
    assert np.abs(angles).max() <= 30 and len(np.unique(angles)) == 12
    X, counts = make_mosaics(tiles, labels, 20, random_state=0)
    cells = X[:, :, :, 0].reshape(20, 2, 28, 2, 28).max(axis=(2, 4))
    np.testing.assert_array_equal((cells > 0).sum(axis=(1, 2)), counts)
    X, Y = make_mosaics(tiles, labels, 20, target="tags", random_state=0)
    assert Y.shape == (20, 5) and set(np.unique(Y)) <= {0, 1}
    assert ((Y.sum(1) >= 1) & (Y.sum(1) <= 3)).all()
    for i in range(20):  # every tile in the mosaic is of a class marked present
        for r in range(2):
            for c in range(2):
                tile = X[i, 28 * r : 28 * r + 28, 28 * c : 28 * c + 28, 0]
                if tile.any():
                    k = [j for j in range(40) if np.array_equal(tiles[j], tile)]
                    assert Y[i, labels[k[0]]] == 1
    with pytest.raises(ValueError, match="uint8"):
        make_rotated(tiles.astype(float), 2)
