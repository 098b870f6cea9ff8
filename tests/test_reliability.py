"""Reliability: bad input is a clear error, never a torch trace nor silent garbage.

Table-driven cases for the image transformer (more estimators join the table as
they land) plus property-based tests over array shapes and dtypes.
"""

import functools
import pickle
import re

import joblib
import numpy as np
import pytest
import torch
from conftest import (
    CLI_TINY,
    FT_TINY,
    TINY,
    TinyNet,
    assert_far_apart,
    assert_same_path,
    predicts_from_stores,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
    load_backbone,
)
from sktransfer._runtime import clear_caches
from sktransfer.cli import main

CLEAR_ERRORS = (ValueError, TypeError, FileNotFoundError)


@functools.cache
def _fitted():
    X = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    return CNNFeatureExtractor(**TINY).fit(X)


def _files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    return {"good": str(good), "truncated": str(truncated), "text": str(text)}


BAD_TRANSFORM_INPUTS = {
    "2-D without input_shape": (np.zeros((4, 64)), ValueError, "input_shape"),
    "5-D": (np.zeros((1, 2, 8, 8, 3)), ValueError, "dimension"),
    "1-D": (np.zeros(8), ValueError, "dimension"),
    "scalar": (np.float32(3), ValueError, "dimension"),
    "zero samples": (np.zeros((0, 8, 8), np.uint8), ValueError, "0 images"),
    "empty list": ([], ValueError, "0 images"),
    "2 channels": (np.zeros((2, 8, 8, 2), np.uint8), ValueError, "channel"),
    "5 channels": (np.zeros((2, 5, 8, 8), np.uint8), ValueError, "channel"),
    "NaN pixels": (np.full((2, 8, 8), np.nan, np.float32), ValueError, "NaN"),
    "inf pixels": (np.full((2, 8, 8), np.inf), ValueError, "NaN or infinite"),
    "negative floats": (np.full((2, 8, 8), -0.5), ValueError, "pixel values"),
    "floats above 255": (np.full((2, 8, 8), 256.0), ValueError, "pixel values"),
    "negative ints": (np.full((2, 8, 8), -1, np.int16), ValueError, "integer"),
    "complex": (np.zeros((2, 8, 8), np.complex64), TypeError, "dtype"),
    "strings in array": (np.array([["a", "b"]]), TypeError, "dtype"),
    "object 2-D": (np.empty((2, 2), dtype=object), TypeError, "dtype object"),
    "list of ints": ([1, 2], TypeError, "int"),
    "list of None": ([None], TypeError, "NoneType"),
    "paths mixed with arrays": (["a.png", np.zeros((4, 4))], TypeError, "mixes"),
    "single path": ("folder/", TypeError, "single path"),
    "single PIL image": (Image.new("RGB", (4, 4)), TypeError, "single PIL"),
    "missing files": (["/nope/1.png", "/nope/2.png"], FileNotFoundError, "2 of 2"),
    "mixed-size arrays with a bad one": (
        [np.zeros((4, 4)), np.zeros((5, 5, 7))],
        ValueError,
        "image 1 has 7 channels",
    ),
    "1x1 image with a 2-D array": (np.zeros((2, 1)), ValueError, "dimension"),
    "1-D string array (paths)": (np.array(["a", "b"]), FileNotFoundError, "not exist"),
}


@pytest.mark.parametrize("name", sorted(BAD_TRANSFORM_INPUTS))
def test_bad_transform_input(name):
    X, err, match = BAD_TRANSFORM_INPUTS[name]
    with pytest.raises(err, match=match):
        _fitted().transform(X)


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_unreadable_files_name_the_file(tmp_path, kind):
    files = _files(tmp_path)
    name = files[kind].rsplit("/", 1)[-1]
    with pytest.raises(ValueError, match=f"cannot read image file .*{name}"):
        _fitted().transform([files["good"], files[kind]])


def test_directory_in_path_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        _fitted().transform([str(tmp_path)])


BAD_PARAMS = {
    "unknown model": ({"model": "resnet_does_not_exist"}, ValueError, "resnet18"),
    "model of wrong type": ({"model": 3}, ValueError, "model"),
    "unknown timm model": ({"model": "timm/not_a_net"}, ValueError, "timm"),
    "unknown layer": ({**TINY, "layer": "blocks.99"}, ValueError, "blocks.0.*list_l"),
    "duplicate layers": ({**TINY, "layer": ["blocks.1"] * 2}, ValueError, "twice"),
    "empty layer list": ({**TINY, "layer": []}, ValueError, "empty"),
    "unknown pooling": ({**TINY, "pooling": "gem"}, ValueError, "pooling"),
    "unknown precision": ({**TINY, "precision": "int8"}, ValueError, "precision"),
    "bad device": ({**TINY, "device": "tpu"}, ValueError, "device"),
    "bad batch size": ({**TINY, "batch_size": 0}, ValueError, "batch_size"),
    "bad input size": ({**TINY, "input_size": (3, 4, 5)}, ValueError, "input_size"),
    "weights file missing": (
        {**TINY, "weights": "/no/w.pt"},
        FileNotFoundError,
        "w.pt",
    ),
    "unknown torchvision weights": (
        {"model": "resnet18", "weights": "IMAGENET9K"},
        ValueError,
        "IMAGENET1K_V1",
    ),
    "imagenet for a module": (
        {"model": TinyNet(), "weights": "imagenet"},
        ValueError,
        "model name",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_PARAMS))
def test_bad_params(name):
    params, err, match = BAD_PARAMS[name]
    X = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(err, match=match):
        CNNFeatureExtractor(**params).fit(X)


def test_transform_before_fit():
    with pytest.raises(NotFittedError):
        CNNFeatureExtractor(**TINY).transform(np.zeros((1, 8, 8), np.uint8))


def test_no_raw_runtime_error_from_a_too_small_network_input():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 7), torch.nn.Flatten())
    with pytest.raises(ValueError, match="larger input_size"):
        CNNFeatureExtractor(model=net, weights=None, input_size=3).fit(
            np.zeros((1, 8, 8), np.uint8)
        )


# ------------------------------------------------------------ property based
_dtypes = st.sampled_from(
    [np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    hnp.arrays(
        dtype=_dtypes,
        shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_any_array_gives_codes_or_a_clear_error(X):
    ext = _fitted()
    try:
        Z = ext.transform(X)
    except CLEAR_ERRORS as exc:
        assert str(exc), "errors must say what is wrong"
        return
    assert Z.shape == (X.shape[0], ext.n_features_out_)
    assert Z.dtype == np.float32 and np.isfinite(Z).all()


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    c=st.sampled_from([None, 1, 3, 4]),
    channels_first=st.booleans(),
)
def test_valid_image_arrays_of_any_size_work(n, h, w, c, channels_first):
    shape = (n, h, w) if c is None else (n, h, w, c)
    X = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    if c is not None and channels_first and h not in (1, 3, 4) and w not in (1, 3, 4):
        X = np.moveaxis(X, -1, 1)
    Z = _fitted().transform(X)
    assert Z.shape == (n, _fitted().n_features_out_) and np.isfinite(Z).all()


# ------------------------------------------------- classifiers and the command line
_IMGS = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
_FEATS = np.random.default_rng(0).normal(size=(6, 4))
_Y = np.array([0, 1] * 3)
_NONE_Y = np.array(["a", "b", None] * 2, dtype=object)
_MIXED_Y = np.array([0, "a"] * 3, dtype=object)


@functools.cache
def _fitted_ft(input_shape=None):
    X = _IMGS if input_shape is None else np.zeros((6, 64))
    return _ft(input_shape=input_shape).fit(X, _Y)


def _ft(**kw):
    return FineTunedClassifier(**{**FT_TINY, "max_epochs": 1, **kw})


# name -> (callable, error, message regex); each must raise exactly that, never a
# torch RuntimeError or an AttributeError.
BAD_CLASSIFIER_INPUTS = {
    "ft zero samples": (lambda: _ft().fit(_IMGS[:0], _Y[:0]), ValueError, "0 images"),
    "ft one sample": (lambda: _ft().fit(_IMGS[:1], _Y[:1]), ValueError, "one class"),
    "ft one class": (lambda: _ft().fit(_IMGS, np.zeros(6)), ValueError, "one class"),
    "ft NaN labels": (
        lambda: _ft().fit(_IMGS, np.array([0, 1, np.nan] * 2)),
        ValueError,
        "NaN",
    ),
    "ft None labels": (lambda: _ft().fit(_IMGS, _NONE_Y), ValueError, "missing label"),
    "ft mixed label types": (
        lambda: _ft().fit(_IMGS, _MIXED_Y),
        ValueError,
        "label type",
    ),
    "ft continuous labels": (
        lambda: _ft().fit(_IMGS, np.linspace(0, 1, 6)),
        ValueError,
        "continuous",
    ),
    "ft 2-D labels": (
        lambda: _ft().fit(_IMGS, np.arange(12).reshape(6, 2)),
        ValueError,
        "indicator",
    ),
    "ft X / y lengths differ": (
        lambda: _ft().fit(_IMGS, _Y[:5]),
        ValueError,
        "one label per image",
    ),
    "ft NaN pixels": (
        lambda: _ft().fit(np.full((6, 8, 8), np.nan), _Y),
        ValueError,
        "NaN",
    ),
    "ft 2 channels": (
        lambda: _ft().fit(np.zeros((6, 8, 8, 2)), _Y),
        ValueError,
        "channel",
    ),
    "ft 5 channels": (
        lambda: _ft().fit(np.zeros((6, 5, 8, 8)), _Y),
        ValueError,
        "channel",
    ),
    "ft standardized floats": (
        lambda: _ft().fit(np.full((6, 8, 8), -1.0), _Y),
        ValueError,
        "pixel_range=None",
    ),
    "ft unknown train_layers": (
        lambda: _ft(train_layers="blocks.99").fit(_IMGS, _Y),
        ValueError,
        "blocks.0",
    ),
    "ft train_layers beyond the stages": (
        lambda: _ft(train_layers=99).fit(_IMGS, _Y),
        ValueError,
        "stages",
    ),
    "ft unknown augment": (
        lambda: _ft(augment="wild").fit(_IMGS, _Y),
        ValueError,
        "Valid choices",
    ),
    "ft unknown head": (lambda: _ft(head="mlp").fit(_IMGS, _Y), ValueError, "cosine"),
    "ft unknown model": (
        lambda: _ft(model="resnet_does_not_exist").fit(_IMGS, _Y),
        ValueError,
        "resnet18",
    ),
    "ft predict before fit": (lambda: _ft().predict(_IMGS), NotFittedError, "fit"),
    "ft predict_proba before fit": (
        lambda: _ft().predict_proba(_IMGS),
        NotFittedError,
        "fit",
    ),
    "ft predict NaN pixels": (
        lambda: _fitted_ft().predict(np.full((2, 16, 16), np.nan)),
        ValueError,
        "NaN",
    ),
    "ft predict 5 channels": (
        lambda: _fitted_ft().predict(np.zeros((2, 16, 16, 5))),
        ValueError,
        "channel",
    ),
    "ft predict flat without input_shape": (
        lambda: _fitted_ft().predict(np.zeros((2, 64))),
        ValueError,
        "input_shape",
    ),
    "ft predict other feature count": (
        lambda: _fitted_ft((8, 8)).predict(np.zeros((2, 49))),
        ValueError,
        "49 features",
    ),
    "proto zero samples": (
        lambda: PrototypeClassifier().fit(_FEATS[:0], _Y[:0]),
        ValueError,
        "0 sample",
    ),
    "proto NaN labels": (
        lambda: PrototypeClassifier().fit(_FEATS, np.array([0, 1, np.nan] * 2)),
        ValueError,
        "NaN",
    ),
    "proto None labels": (
        lambda: PrototypeClassifier().fit(_FEATS, _NONE_Y),
        ValueError,
        "missing label",
    ),
    "proto X / y lengths differ": (
        lambda: PrototypeClassifier().fit(_FEATS, _Y[:5]),
        ValueError,
        "inconsistent numbers of samples",
    ),
    "proto NaN features": (
        lambda: PrototypeClassifier().fit(np.full((6, 4), np.nan), _Y),
        ValueError,
        "NaN",
    ),
    "proto images instead of codes": (
        lambda: PrototypeClassifier().fit(np.zeros((6, 4, 4)), _Y),
        ValueError,
        "dim 3",
    ),
    "proto continuous labels": (
        lambda: PrototypeClassifier().fit(_FEATS, np.linspace(0, 1, 6)),
        ValueError,
        "continuous",
    ),
    "proto predict before fit": (
        lambda: PrototypeClassifier().predict(_FEATS),
        NotFittedError,
        "fit",
    ),
    "proto predict other feature count": (
        lambda: PrototypeClassifier().fit(_FEATS, _Y).predict(_FEATS[:, :3]),
        ValueError,
        "expecting 4 features",
    ),
    "proto unknown metric": (
        lambda: PrototypeClassifier(metric="hamming").fit(_FEATS, _Y),
        ValueError,
        "euclidean",
    ),
    "cosine zero samples": (
        lambda: CosineSoftmaxClassifier().fit(_FEATS[:0], _Y[:0]),
        ValueError,
        "0 sample",
    ),
    "cosine None labels": (
        lambda: CosineSoftmaxClassifier().fit(_FEATS, _NONE_Y),
        ValueError,
        "missing label",
    ),
    "cosine mixed label types": (
        lambda: CosineSoftmaxClassifier().fit(_FEATS, _MIXED_Y),
        ValueError,
        "label type",
    ),
    "cosine X / y lengths differ": (
        lambda: CosineSoftmaxClassifier().fit(_FEATS, _Y[:5]),
        ValueError,
        "inconsistent numbers of samples",
    ),
    "cosine NaN features": (
        lambda: CosineSoftmaxClassifier().fit(np.full((6, 4), np.nan), _Y),
        ValueError,
        "NaN",
    ),
    "cosine predict before fit": (
        lambda: CosineSoftmaxClassifier().predict_proba(_FEATS),
        NotFittedError,
        "fit",
    ),
    "cosine predict other feature count": (
        lambda: CosineSoftmaxClassifier().fit(_FEATS, _Y).predict(_FEATS[:, :3]),
        ValueError,
        "expecting 4 features",
    ),
    "cosine unknown solver": (
        lambda: CosineSoftmaxClassifier(solver="bfgs").fit(_FEATS, _Y),
        ValueError,
        "lbfgs",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CLASSIFIER_INPUTS))
def test_bad_classifier_input(name):
    call, err, match = BAD_CLASSIFIER_INPUTS[name]
    with pytest.raises(err, match=match):
        call()


def test_single_class_few_shot_is_allowed():
    """Few-shot heads accept one class / one sample (a 1-way episode) by design."""
    for clf in (PrototypeClassifier(), CosineSoftmaxClassifier(max_iter=2)):
        assert (clf.fit(_FEATS[:1], _Y[:1]).predict(_FEATS) == 0).all()


@pytest.fixture(scope="module")
def _cli_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((12, 12), 40 * i, np.uint8)).save(
                root / cls / f"{i}.png"
            )
    return root


_CLI_TINY = [*CLI_TINY, "-q"]
# Missing / empty / unreadable folders and unknown strategies: test_cli.py's table.
BAD_CLI = {
    "unknown model": (
        ["extract", "{root}", "--model", "nonet", "--weights", "none", "-o", "x.npz"],
        "nonet",
    ),
    "unknown layer": (
        ["extract", "{root}", *_CLI_TINY, "--layer", "blocks.99", "-o", "{tmp}/x.npz"],
        "blocks.99",
    ),
    "missing weights file": (
        ["extract", "{root}", "--model", TINY["model"], "--weights", "/no/w.pt"]
        + ["-o", "{tmp}/x.npz"],
        "w.pt",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CLI))
def test_bad_cli_input_is_one_line_exit_2(name, _cli_folder, tmp_path, capsys):
    argv, match = BAD_CLI[name]
    argv = [a.format(root=_cli_folder, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(match, err, re.IGNORECASE), err


# ---------------------------------------------------------------- persistence
def _fitted_all():
    ext = _fitted()
    codes = ext.transform(_IMGS)
    return {
        "extractor": (ext, _IMGS, "transform"),
        "fine-tuned": (_fitted_ft(), _IMGS, "decision_function"),
        "prototype": (PrototypeClassifier().fit(codes, _Y), codes, "predict_proba"),
        "cosine": (
            CosineSoftmaxClassifier(max_iter=5).fit(codes, _Y),
            codes,
            "predict_proba",
        ),
    }


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_round_trips_give_identical_outputs(how, tmp_path):
    models = _fitted_all()
    # A copy has no activation stores (process state, never pickled): the
    # fine-tuned model (maybe fitted just now) must not use them either, so
    # that both sides run one path, bit for bit.
    clear_caches()
    for name, (est, X, method) in models.items():
        if how == "pickle":
            again = pickle.loads(pickle.dumps(est))
        else:
            joblib.dump(est, tmp_path / f"{name}.joblib")
            again = joblib.load(tmp_path / f"{name}.joblib")
        assert_same_path(getattr(again, method)(X), getattr(est, method)(X), name)


def test_pickle_sizes():
    """Named backbones pickle as a spec (reloaded on unpickling); a module or a
    fine-tuned network carries its weights (float32: ~4 bytes per parameter),
    once: no optimizer moments, datasets, validation split or second copy."""
    named = _fitted()
    module = CNNFeatureExtractor(
        model=load_backbone(TINY["model"], None)[0], weights=None, input_size=16
    ).fit(_IMGS)
    ft = _fitted_ft()
    sizes = {
        "extractor, named backbone": len(pickle.dumps(named)),
        "extractor, nn.Module": len(pickle.dumps(module)),
        "fine-tuned": len(pickle.dumps(ft)),
    }
    n_params = sum(p.numel() for p in ft.net_.module_.parameters())
    assert sizes["extractor, named backbone"] < 20_000, sizes
    assert sizes["extractor, named backbone"] * 10 < sizes["extractor, nn.Module"]
    assert sizes["fine-tuned"] < 4 * n_params * 1.5, sizes  # one copy


# ---------------------------------------------------------------- determinism
def test_random_init_ignores_global_rng_history():
    """weights=None builds from a seed, not from whatever the global RNG did before:
    a loky worker, an unpickled extractor and this process get the same network
    (the cause of a GridSearchCV n_jobs=2 mismatch in CI)."""
    torch.manual_seed(123)
    a = load_backbone(TINY["model"], None)[0].state_dict()
    torch.rand(1000)
    b = load_backbone(TINY["model"], None)[0].state_dict()
    c = load_backbone(TINY["model"], None, seed=1)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.rand(10)
    codes = _fitted().transform(_IMGS)
    # the same weights, so the same exported graph: one path
    assert_same_path(codes, CNNFeatureExtractor(**TINY).fit(_IMGS).transform(_IMGS))
    torch.rand(10)
    # two fits in this test, each predicting from the rows it stored: one path
    p = _ft().fit(_IMGS, _Y).decision_function(_IMGS)
    torch.rand(10)
    assert_same_path(p, _ft().fit(_IMGS, _Y).decision_function(_IMGS))
    assert_far_apart(p, _ft(random_state=1).fit(_IMGS, _Y).decision_function(_IMGS))


def test_loading_weights_leaves_the_global_rng_alone(tmp_path):
    """Building a net (random init, then overwritten by the weights) must not move
    the caller's RNG: a seeded fit that loads weights for the first time in a
    process would otherwise draw other numbers than the same fit served from the
    cache."""
    path = tmp_path / "w.pt"
    torch.save(load_backbone(TINY["model"], None)[0].state_dict(), path)
    for weights in (str(path), None):  # a cache miss, then a random init
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        load_backbone(TINY["model"], weights)
        assert torch.equal(torch.rand(3), expected)


def test_grid_search_n_jobs_2_matches_sequential():
    X, y = np.concatenate([_IMGS] * 2), np.concatenate([_Y] * 2)
    grid = {"lr": [1e-3, 1e-2]}
    # loky workers run torch with cores // n_jobs = 1 thread; float sums (and so
    # a trained model) depend on the thread count, so the sequential search and
    # both refits run with one thread too: then results must be identical.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [
            GridSearchCV(_ft(), grid, cv=2, n_jobs=n_jobs).fit(X, y)
            for n_jobs in (1, 2)
        ]
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(
        runs[0].cv_results_["mean_test_score"], runs[1].cv_results_["mean_test_score"]
    )
    # both refits ran in this process, and predict the same way (from stores)
    a, b = (run.best_estimator_ for run in runs)
    assert predicts_from_stores(a, X) == predicts_from_stores(b, X)
    assert_same_path(a.decision_function(X), b.decision_function(X))
