"""Cached CNN codes: each image runs through the network once; keys are honest."""

import multiprocessing as mp
import os
import pickle

import joblib
import numpy as np
import pytest
import torch
from conftest import (
    TINY,
    assert_close_paths,
    assert_far_apart,
    assert_same_path,
    save_pngs,
)
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

import sktransfer._extractor as extractor_mod
from sktransfer import CNNFeatureExtractor


@pytest.fixture
def count_forward(monkeypatch):
    """Count the images that actually go through the network in transform."""
    seen = {"images": 0, "batches": 0}
    real = extractor_mod._forward_halving

    def counting(engine, batch):
        seen["images"] += len(batch)
        seen["batches"] += 1
        return real(engine, batch)

    monkeypatch.setattr(extractor_mod, "_forward_halving", counting)
    return seen


def test_cached_codes_equal_fresh_codes(rng_images, tmp_path, count_forward):
    X, _ = rng_images
    ref = CNNFeatureExtractor(**TINY).fit(X).transform(X)
    ext = CNNFeatureExtractor(**TINY, cache=tmp_path).fit(X)
    count_forward["images"] = 0
    first = ext.transform(X)
    assert count_forward["images"] == len(X)
    second = ext.transform(X)
    assert count_forward["images"] == len(X)  # nothing recomputed
    assert_close_paths(first, ref)
    assert_same_path(second, first)  # read back: the same float32 rows
    # a subset, reordered, with one new image: only the new one is computed
    new = (255 - X[:1]).copy()
    Z = ext.transform(np.concatenate([X[::-1][:5], new]))
    assert count_forward["images"] == len(X) + 1
    assert_close_paths(Z[:5], ref[::-1][:5])


def test_grid_search_extracts_each_image_once(fmnist_small, tmp_path, count_forward):
    X, y = fmnist_small
    X, y = X[:40], y[:40]
    pipe = make_pipeline(
        CNNFeatureExtractor(**TINY, cache=joblib.Memory(tmp_path, verbose=0)),
        LogisticRegression(max_iter=200),
    )
    grid = GridSearchCV(
        pipe,
        {"logisticregression__C": [0.1, 10.0]},
        cv=KFold(2, shuffle=True, random_state=0),
    )
    grid.fit(X, y)
    assert count_forward["images"] == len(X)
    # the same search again (a "repeated run"): no forward pass at all
    grid.fit(X, y)
    assert count_forward["images"] == len(X)
    # and the result equals a search without the cache
    plain = GridSearchCV(
        make_pipeline(CNNFeatureExtractor(**TINY), LogisticRegression(max_iter=200)),
        {"logisticregression__C": [0.1, 10.0]},
        cv=KFold(2, shuffle=True, random_state=0),
    ).fit(X, y)
    np.testing.assert_allclose(
        grid.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
    )


@pytest.mark.parametrize(
    "change",
    [
        {"pooling": "max", "layer": "blocks.1"},
        {"input_size": 16},
        {"mean": (0.4, 0.4, 0.4)},
    ],
)
def test_spec_changes_miss_the_cache(rng_images, tmp_path, count_forward, change):
    X = rng_images[0][:6]
    base = {**TINY, "layer": "blocks.1"}
    CNNFeatureExtractor(**base, cache=tmp_path).fit(X).transform(X)
    assert count_forward["images"] == 6
    other = CNNFeatureExtractor(**{**base, **change}, cache=tmp_path).fit(X)
    Z = other.transform(X)
    assert count_forward["images"] == 12
    ref = CNNFeatureExtractor(**{**base, **change}).fit(X).transform(X)
    assert_close_paths(Z, ref)


def test_different_weights_miss_the_cache(rng_images, tmp_path, count_forward):
    from conftest import TinyNet

    X = rng_images[0][:4]
    torch.manual_seed(0)
    a = TinyNet()
    torch.manual_seed(1)
    b = TinyNet()
    za = CNNFeatureExtractor(model=a, weights=None, cache=tmp_path).fit(X).transform(X)
    zb = CNNFeatureExtractor(model=b, weights=None, cache=tmp_path).fit(X).transform(X)
    assert count_forward["images"] == 8
    assert_far_apart(za, zb)
    # a weights file: rewriting it changes the key
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    ext = CNNFeatureExtractor(model=TinyNet(), weights=str(path), cache=tmp_path)
    assert_close_paths(ext.fit(X).transform(X), za)
    torch.save(b.state_dict(), path)
    ext = CNNFeatureExtractor(model=TinyNet(), weights=str(path), cache=tmp_path)
    assert_close_paths(ext.fit(X).transform(X), zb)


def test_normalize_shares_entries(rng_images, tmp_path, count_forward):
    X = rng_images[0][:5]
    raw = CNNFeatureExtractor(**TINY, cache=tmp_path).fit(X).transform(X)
    unit = (
        CNNFeatureExtractor(**TINY, cache=tmp_path, normalize=True).fit(X).transform(X)
    )
    assert count_forward["images"] == 5
    assert_close_paths(np.linalg.norm(unit, axis=1), np.ones(len(unit)))
    assert_close_paths(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True))


def test_file_paths_keyed_by_content(rng_images, tmp_path, count_forward):
    X = rng_images[0][:4]
    paths = save_pngs(X, tmp_path)
    ext = CNNFeatureExtractor(**TINY, cache=tmp_path / "c").fit(paths)
    ref = ext.transform(paths)
    # a copy under another name hits; a changed file misses
    copy = tmp_path / "copy.png"
    copy.write_bytes(open(paths[0], "rb").read())
    assert_same_path(ext.transform([str(copy)]), ref[:1])  # a cache hit
    assert count_forward["images"] == 4
    Image.fromarray(255 - X[1]).save(paths[1])
    ext.transform(paths)
    assert count_forward["images"] == 5


def test_pickled_extractor_uses_the_cache(rng_images, tmp_path, count_forward):
    X = rng_images[0][:4]
    ext = CNNFeatureExtractor(**TINY, cache=str(tmp_path)).fit(X)
    ref = ext.transform(X)
    clone = pickle.loads(pickle.dumps(ext))
    assert_same_path(clone.transform(X), ref)  # cache hits
    assert count_forward["images"] == 4


def test_memory_without_location_disables_cache(rng_images, count_forward):
    X = rng_images[0][:3]
    ext = CNNFeatureExtractor(**TINY, cache=joblib.Memory(None)).fit(X)
    ext.transform(X)
    ext.transform(X)
    assert count_forward["images"] == 6


def test_bad_cache_type(rng_images):
    with pytest.raises((TypeError, ValueError), match="cache"):
        CNNFeatureExtractor(**TINY, cache=3).fit(rng_images[0][:2])


def _extract_in_child(args):
    cache, seed = args
    torch.manual_seed(0)  # same random backbone in every process -> same key
    X = np.random.default_rng(0).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    return CNNFeatureExtractor(**TINY, cache=cache, batch_size=4).fit(X).transform(X)


def test_concurrent_processes_share_one_directory(tmp_path):
    """Writers publish shards atomically: readers never see a partial file."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        out = pool.map(_extract_in_child, [(str(tmp_path), s) for s in range(4)])
    for z in out[1:]:  # rows computed in other batches, by other processes
        assert_close_paths(z, out[0])
    shard_dir = next((tmp_path / "sktransfer-codes").iterdir())
    names = os.listdir(shard_dir)
    assert "spec.txt" in names
    assert not [n for n in names if n.endswith(".tmp")]
    # every published shard is complete and readable
    for n in names:
        if n.endswith(".npy"):
            assert len(np.load(shard_dir / n)) > 0


_FRESH_PROCESS = """
import sys
import numpy as np
import sktransfer._extractor as ext_mod
from sktransfer import CNNFeatureExtractor

calls = []
real = ext_mod._forward_halving
ext_mod._forward_halving = lambda engine, batch: calls.append(len(batch)) or real(
    engine, batch
)
X = np.random.default_rng(0).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
kw = dict(model="timm/test_efficientnet", weights=None, input_size=32)
codes = CNNFeatureExtractor(**kw, cache=sys.argv[1], batch_size=4).fit(X).transform(X)
np.save(sys.argv[2], codes)
print(sum(calls))
"""


def test_a_fresh_process_on_a_warm_directory_runs_no_forward_pass(tmp_path):
    """The disk shards, not the in-process index, serve a new process's hits."""
    import subprocess
    import sys

    def run(name):
        out = subprocess.run(
            [sys.executable, "-c", _FRESH_PROCESS, str(tmp_path), str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1])

    assert run("cold.npy") == 24  # every image through the network once
    assert run("warm.npy") == 0  # a new process: all 24 read from disk
    # read back: the float32 rows the first process wrote
    assert_same_path(np.load(tmp_path / "warm.npy"), np.load(tmp_path / "cold.npy"))


# ------------------------------------------------------------------ out of memory
@pytest.mark.parametrize(
    "limit,calls",
    [
        # 20 images in batches of 16 and 4; a batch over the limit is split in
        # halves, depth first, until the halves fit.
        (5, [16, 8, 4, 4, 8, 4, 4, 4]),
        (3, [16, 8, 4, 2, 2, 4, 2, 2, 8, 4, 2, 2, 4, 2, 2, 4, 2, 2]),
        (
            1,
            [16, 8, 4, 2, 1, 1, 2, 1, 1, 4, 2, 1, 1, 2, 1, 1]
            + [8, 4, 2, 1, 1, 2, 1, 1, 4, 2, 1, 1, 2, 1, 1]
            + [4, 2, 1, 1, 2, 1, 1],
        ),
    ],
)
def test_oom_halving_gives_the_same_codes(rng_images, monkeypatch, limit, calls):
    X = rng_images[0]
    ext = CNNFeatureExtractor(**TINY, batch_size=16).fit(X)
    engine_cls = type(ext._get_engine())
    real_call = engine_cls.__call__
    tried, ok, memory = [], [], {"limit": None}

    def recording_call(self, x):
        tried.append(len(x))
        if memory["limit"] is not None and len(x) > memory["limit"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        ok.append(x.clone())
        return real_call(self, x)

    monkeypatch.setattr(engine_cls, "__call__", recording_call)
    ref = ext.transform(X)
    assert tried == [16, 4]
    inputs = torch.cat(ok)
    tried.clear()
    ok.clear()
    memory["limit"] = limit
    assert_close_paths(ext.transform(X), ref)  # smaller batches: maybe other kernels
    assert tried == calls
    assert [len(x) for x in ok] == [s for s in calls if s <= limit]
    # every image went through the network exactly once, in order
    assert torch.equal(torch.cat(ok), inputs)


def test_oom_runtime_error_message_also_halves(rng_images, monkeypatch):
    X = rng_images[0][:8]
    ext = CNNFeatureExtractor(**TINY, batch_size=8).fit(X)
    ref = ext.transform(X)
    engine_cls = type(ext._get_engine())
    real_call = engine_cls.__call__

    def oom_call(self, x):
        if len(x) > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate: out of memory")
        return real_call(self, x)

    monkeypatch.setattr(engine_cls, "__call__", oom_call)
    assert_close_paths(ext.transform(X), ref)  # smaller batches: maybe other kernels


def test_oom_on_single_image_raises_clear_error(rng_images, monkeypatch):
    X = rng_images[0][:4]
    ext = CNNFeatureExtractor(**TINY, batch_size=4).fit(X)

    def always_oom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(type(ext._get_engine()), "__call__", always_oom)
    with pytest.raises(MemoryError, match="single image"):
        ext.transform(X)


def test_state_digest_reads_architecture_and_tensors_not_repr():
    """Same weights and layers -> same digest, whatever the training-only rates;
    another layer setting (dilation instead of stride) or other weights -> not."""
    import timm

    from sktransfer._cache import state_digest

    a = timm.create_model("test_resnet")
    same = timm.create_model("test_resnet", drop_path_rate=0.3)
    same.load_state_dict(a.state_dict())
    dilated = timm.create_model("test_resnet", output_stride=8)
    dilated.load_state_dict(a.state_dict())  # identical tensors
    other = timm.create_model("test_resnet")
    assert state_digest(a) == state_digest(same)
    assert state_digest(a) != state_digest(dilated)
    assert state_digest(a) != state_digest(other)


def test_file_digests_are_read_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    """A predict after fit digests its files from (path, size, mtime): no read;
    a rewritten file (new size / mtime) is read again and gets its new digest."""
    import builtins
    import os

    from PIL import Image

    from sktransfer import _cache
    from sktransfer._images import check_images

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    images = check_images([str(path)])
    first = _cache.image_digests(images)
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    assert _cache.image_digests(images) == first
    assert str(path) not in opened
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(path)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    assert _cache.image_digests(check_images([str(path)])) != first  # re-read
