"""Large collections: codes streamed to a .npy file, progress bar, with the cache."""

import os

import numpy as np
import pytest
from conftest import TINY, save_pngs

from sktransfer import CNNFeatureExtractor


@pytest.fixture(scope="module")
def png_paths(tmp_path_factory, rng_images):
    folder = tmp_path_factory.mktemp("pngs")
    return save_pngs(rng_images[0][:10], folder)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_transform_to_file_equals_transform(png_paths, tmp_path, num_workers):
    ext = CNNFeatureExtractor(**TINY, batch_size=3, num_workers=num_workers)
    ext.fit(png_paths)
    ref = ext.transform(png_paths)
    out = tmp_path / "codes.npy"
    Z = ext.transform_to_file(png_paths, out)
    assert isinstance(Z, np.memmap)
    assert Z.shape == ref.shape and Z.dtype == np.float32
    np.testing.assert_allclose(np.asarray(Z), ref, atol=1e-6)
    np.testing.assert_allclose(np.load(out), ref, atol=1e-6)
    assert os.listdir(tmp_path) == ["codes.npy"]  # no temporary left behind


def test_transform_to_file_with_cache_and_normalize(rng_images, tmp_path):
    X = rng_images[0]
    ext = CNNFeatureExtractor(**TINY, normalize=True, cache=tmp_path / "c").fit(X)
    ref = ext.transform(X)
    Z = ext.transform_to_file(X, tmp_path / "z.npy")
    np.testing.assert_allclose(np.asarray(Z), ref, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, rtol=1e-5)


def test_failed_run_leaves_no_file(rng_images, tmp_path, monkeypatch):
    import sktransfer._extractor as mod

    X = rng_images[0]
    ext = CNNFeatureExtractor(**TINY, batch_size=4).fit(X)
    calls = {"n": 0}
    real = mod._forward_halving

    def boom(engine, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(engine, batch)

    monkeypatch.setattr(mod, "_forward_halving", boom)
    with pytest.raises(KeyboardInterrupt):
        ext.transform_to_file(X, tmp_path / "z.npy")
    assert os.listdir(tmp_path) == []


def test_progress_bar_counts_images(rng_images, capsys):
    X = rng_images[0]
    CNNFeatureExtractor(**TINY, batch_size=8, verbose=1).fit(X).transform(X)
    err = capsys.readouterr().err
    assert "CNN codes" in err and "20/20" in err
