"""Adversarial inputs, family by family: each either works right or fails clearly.

"Works right" means the result is checked (same codes as an equivalent clean
input, a class kept, a file named), not merely that nothing crashed. "Fails
clearly" means a ValueError / TypeError / FileNotFoundError (or a warning) whose
message names the problem. Cases already in test_reliability.py's tables are not
repeated here.
"""

import functools
import io
import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
    load_backbone,
)

FT = {
    "model": TINY["model"],
    "weights": None,
    "input_size": 16,
    "max_epochs": 1,
    "batch_size": 4,
    "random_state": 0,
}
RNG = np.random.default_rng(0)
IMGS = RNG.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
Y = np.array([0, 1] * 4)
FEATS = RNG.normal(size=(8, 5))


@functools.cache
def _ext():
    return CNNFeatureExtractor(**TINY).fit(IMGS)


def _codes(X):
    return _ext().transform(X)


def _save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return str(path)


# ------------------------------------------------------------ files and formats
def _rgb(seed=0, size=(20, 16)):
    a = np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), np.uint8)
    return Image.fromarray(a)


FILE_CASES = {
    # name -> (make(tmp_path) -> path, reference PIL image the codes must match)
    "16-bit grayscale PNG": (
        lambda t: _save(
            t,
            "g16.png",
            Image.fromarray((np.arange(320).reshape(16, 20) * 200).astype(np.uint16)),
        ),
        lambda: Image.fromarray(
            ((np.arange(320).reshape(16, 20) * 200) / 65535).astype(np.float32),
            mode="F",
        ),
    ),
    "palette PNG": (
        lambda t: _save(t, "p.png", _rgb().convert("P")),
        lambda: _rgb().convert("P").convert("RGB"),
    ),
    "1-bit PNG": (
        lambda t: _save(t, "bw.png", _rgb().convert("1")),
        lambda: _rgb().convert("1").convert("L"),
    ),
    "CMYK JPEG": (
        lambda t: _save(t, "cmyk.jpg", _rgb().convert("CMYK"), quality=100),
        lambda: Image.open(
            io.BytesIO(_jpeg_bytes(_rgb().convert("CMYK"), quality=100))
        ).convert("RGB"),
    ),
    "animated GIF (first frame)": (
        lambda t: _save(
            t,
            "anim.gif",
            _rgb(0).convert("P"),
            save_all=True,
            append_images=[_rgb(1).convert("P")],
        ),
        lambda: _rgb(0).convert("P").convert("RGB"),
    ),
    "LA PNG (gray + alpha)": (
        lambda t: _save(t, "la.png", _rgb().convert("LA")),
        lambda: _rgb().convert("L"),
    ),
    "RGBA PNG": (
        lambda t: _save(t, "rgba.png", _rgb().convert("RGBA")),
        lambda: _rgb(),
    ),
    "1x1 image": (
        lambda t: _save(t, "dot.png", Image.new("RGB", (1, 1), (200, 10, 10))),
        lambda: Image.new("RGB", (1, 1), (200, 10, 10)),
    ),
    "1x300 strip": (
        lambda t: _save(t, "strip.png", _rgb(size=(300, 1))),
        lambda: _rgb(size=(300, 1)),
    ),
    "name with spaces and unicode": (
        lambda t: _save(t, "été photo #1.png", _rgb()),
        lambda: _rgb(),
    ),
    "upper-case extension": (
        lambda t: _save(t, "IMG_0001.PNG", _rgb()),
        lambda: _rgb(),
    ),
}


def _jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_file_formats_give_the_codes_of_the_decoded_image(name, tmp_path):
    make, reference = FILE_CASES[name]
    path = make(tmp_path)
    np.testing.assert_allclose(
        _codes([path]), _codes([reference()]), rtol=1e-4, atol=1e-4
    )


def _write(path, data):
    path.write_bytes(data)
    return path


BAD_FILES = {
    "empty file": lambda t: _write(t / "empty.png", b""),
    "HTML saved as .jpg": lambda t: _write(t / "page.jpg", b"<html></html>"),
    "truncated JPEG": lambda t: _write(
        t / "cut.jpg", _jpeg_bytes(_rgb(size=(64, 64)))[:200]
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_are_value_errors_naming_the_file(name, tmp_path):
    path = BAD_FILES[name](tmp_path)
    with pytest.raises(ValueError, match=path.name):
        _codes([str(path)])


def test_pathlib_and_str_paths_mix(tmp_path):
    a = _save(tmp_path, "a.png", _rgb(0))
    b = _save(tmp_path, "b.png", _rgb(1))
    from pathlib import Path

    np.testing.assert_array_equal(_codes([a, Path(b)]), _codes([a, b]))


# ----------------------------------------------------------- arrays and dtypes
def _same_codes_as_uint8(X):
    np.testing.assert_allclose(_codes(X), _codes(IMGS[:3]), rtol=1e-4, atol=1e-5)


# Floats in 0-255 are not an equivalent form: they are refused (the dtype decides
# the scale, tests/test_input_kinds.py).
ARRAY_CASES = {
    "int64 0-255": lambda: IMGS[:3].astype(np.int64),
    "float64 0-1": lambda: IMGS[:3] / 255.0,
    "float16 0-1": lambda: (IMGS[:3] / 255.0).astype(np.float16).astype(np.float32),
    "channels first": lambda: np.moveaxis(IMGS[:3], -1, 1),
    "torch tensor": lambda: torch.from_numpy(IMGS[:3]),
    "non-contiguous view": lambda: np.ascontiguousarray(np.repeat(IMGS[:3], 2, axis=2))[
        :, :, ::2
    ],
    "Fortran order": lambda: np.asfortranarray(IMGS[:3]),
    "read-only": lambda: _readonly(IMGS[:3]),
    "list of arrays": lambda: list(IMGS[:3]),
    "list of PIL images": lambda: [Image.fromarray(a) for a in IMGS[:3]],
}


def _readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("name", sorted(ARRAY_CASES))
def test_equivalent_array_forms_give_the_same_codes(name):
    X = ARRAY_CASES[name]()
    if name == "float16 0-1":  # fp16 rounding of the pixels themselves
        np.testing.assert_allclose(_codes(X), _codes(IMGS[:3]), atol=5e-3)
    else:
        _same_codes_as_uint8(X)


def test_uint16_and_bool_images_are_scaled_by_their_range():
    x16 = IMGS[:2].astype(np.uint16) * 257  # 0-255 stretched to 0-65535
    np.testing.assert_allclose(_codes(x16), _codes(IMGS[:2]), rtol=1e-4, atol=1e-5)
    mask = IMGS[:2] > 127
    np.testing.assert_allclose(
        _codes(mask), _codes(mask.astype(np.float32)), rtol=1e-5, atol=1e-6
    )


def test_images_of_mixed_sizes_and_channels_in_one_list():
    gray = IMGS[0].mean(-1).astype(np.uint8)
    big = np.repeat(np.repeat(IMGS[1], 2, 0), 2, 1)
    codes = _codes([gray, big, IMGS[2]])
    assert codes.shape == (3, _ext().n_features_out_) and np.isfinite(codes).all()
    np.testing.assert_allclose(codes[2], _codes(IMGS[2:3])[0], rtol=1e-4, atol=1e-5)


def test_sparse_input_is_a_clear_type_error():
    from scipy import sparse

    ext = CNNFeatureExtractor(**TINY, input_shape=(4, 4)).fit(np.zeros((2, 16)))
    with pytest.raises(TypeError, match="(?i)sparse"):
        ext.transform(sparse.csr_matrix(np.ones((2, 16))))


# --------------------------------------------------------- labels and weights
HEADS = {
    "fine-tuned": (lambda: FineTunedClassifier(**FT), IMGS),
    "prototype": (PrototypeClassifier, FEATS),
    "cosine": (lambda: CosineSoftmaxClassifier(max_iter=5), FEATS),
}
BAD_WEIGHTS = {
    "negative": np.array([1.0, -1.0] * 4),
    "all zero": np.zeros(8),
    "NaN": np.array([1.0, np.nan] * 4),
    "inf": np.array([1.0, np.inf] * 4),
    "wrong length": np.ones(5),
}


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("weights", sorted(BAD_WEIGHTS))
def test_bad_sample_weight_is_refused(head, weights):
    make, X = HEADS[head]
    with pytest.raises(ValueError, match="(?i)sample_weight|weights"):
        make().fit(X, Y, sample_weight=BAD_WEIGHTS[weights])


def test_zero_weight_rows_are_ignored_by_prototypes():
    w = np.where(np.arange(8) < 2, 0.0, 1.0)
    a = PrototypeClassifier().fit(FEATS, Y, sample_weight=w)
    b = PrototypeClassifier().fit(FEATS[2:], Y[2:])
    np.testing.assert_allclose(a.prototypes_, b.prototypes_)


@pytest.mark.parametrize("first, then", [([0, 1], ["cat"]), (["a", "b"], [2])])
def test_partial_fit_refuses_another_label_type(first, then):
    clf = PrototypeClassifier().fit(FEATS[:2], np.asarray(first))
    with pytest.raises(TypeError, match="one label type"):
        clf.partial_fit(FEATS[2:3], np.asarray(then))
    assert list(clf.classes_) == first  # unchanged


@pytest.mark.parametrize(
    "make",
    [PrototypeClassifier, lambda: CosineSoftmaxClassifier(max_iter=3)],
    ids=["prototype", "cosine"],
)
def test_minus_one_labels_warn_about_the_unlabelled_convention(make):
    y = np.array([0, 1, -1, -1, 0, 1, -1, 0])
    with pytest.warns(UserWarning, match="unlabel"):
        make().fit(FEATS, y)


def test_unlabeled_label_minus_one_is_not_a_class():
    y = np.array([0, 1, -1, -1, 0, 1, -1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = CosineSoftmaxClassifier(max_iter=3, unlabeled_label=-1).fit(FEATS, y)
    assert list(clf.classes_) == [0, 1]


def test_bool_labels_keep_their_type():
    y = Y.astype(bool)
    clf = PrototypeClassifier().fit(FEATS, y)
    assert clf.classes_.dtype == bool and clf.predict(FEATS).dtype == bool


def test_early_stopping_keeps_a_single_image_class_in_training():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 2])  # class 2 has one image (index 7)
    clf = FineTunedClassifier(**FT, early_stopping=True, validation_fraction=0.25)
    clf.classes_ = np.array([0, 1, 2])
    lost = []
    for random_state in range(20):  # fit derives the split's seed this way
        seed = int(np.random.RandomState(random_state).randint(2**31 - 1))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            train, valid = clf._split(y, seed)
        assert 7 in train and len(valid) and not set(train) & set(valid)
        if seen:
            lost.append(random_state)
    assert lost  # the random split did send the only image to validation
    clf.set_params(random_state=lost[0])
    with pytest.warns(UserWarning, match="too few images"):
        clf.fit(IMGS, y)
    assert list(clf.classes_) == [0, 1, 2]


def test_early_stopping_with_no_room_for_validation_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a validation set"):
        with pytest.warns(UserWarning, match="too few images"):
            FineTunedClassifier(**FT, early_stopping=True).fit(IMGS[:2], Y[:2])


# ----------------------------------------------------------------- weights files
def _state():
    return load_backbone(TINY["model"], None)[0].state_dict()


def test_non_finite_weights_are_refused(tmp_path):
    state = _state()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="NaN or infinite.*" + key.split(".")[0]):
        CNNFeatureExtractor(**{**TINY, "weights": str(tmp_path / "nan.pt")}).fit(IMGS)


def test_data_parallel_prefixes_and_wrapped_dicts_load(tmp_path):
    state = _state()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    ref = _codes(IMGS[:2])
    for name in ("dp.pt", "wrapped.pt"):
        ext = CNNFeatureExtractor(**{**TINY, "weights": str(tmp_path / name)})
        np.testing.assert_allclose(ext.fit_transform(IMGS[:2]), ref, atol=1e-5)


def test_whole_pickled_model_is_refused_without_running_code(tmp_path):
    net, _ = load_backbone(TINY["model"], None)
    torch.save(net, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="state dict|safely"):
        CNNFeatureExtractor(**{**TINY, "weights": str(tmp_path / "model.pt")}).fit(IMGS)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_or_empty_weights_files_are_value_errors(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=path.name):
        CNNFeatureExtractor(**{**TINY, "weights": str(path)}).fit(IMGS)


def test_weights_for_another_architecture_say_so(tmp_path):
    state = load_backbone("timm/test_resnet", None)[0].state_dict()
    torch.save(state, tmp_path / "resnet.pt")
    with pytest.raises(ValueError, match="another model"):
        CNNFeatureExtractor(**{**TINY, "weights": str(tmp_path / "resnet.pt")}).fit(
            IMGS
        )


# -------------------------------------------------------------- dataset folders
def test_image_folder_skips_non_images_and_hidden_files(tmp_path):
    from sktransfer.datasets import load_image_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        _save(tmp_path / cls, "0.png", _rgb())
        (tmp_path / cls / "README.txt").write_text("notes")
        (tmp_path / cls / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / ".git").mkdir()
    _save(tmp_path / ".git", "x.png", _rgb())
    X, y = load_image_folder(tmp_path, return_X_y=True)
    assert sorted(y) == ["a", "b"] and all(p.endswith("0.png") for p in X)


def test_image_folder_cache_dir_with_tilde_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ext = CNNFeatureExtractor(**TINY, cache="~/codes").fit(IMGS[:2])
    ext.transform(IMGS[:2])
    assert (tmp_path / "codes").is_dir() and not (tmp_path / "~").exists()


# -------------------------------------------------- concurrency and interrupts
def test_threads_sharing_one_extractor_get_the_sequential_codes():
    ext = _ext()
    ref = ext.transform(IMGS)
    out = [None, None]

    def run(i):
        out[i] = ext.transform(IMGS)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in out:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_interrupted_transform_to_file_leaves_nothing_and_the_model_usable(
    tmp_path, monkeypatch
):
    ext = CNNFeatureExtractor(**TINY, batch_size=2).fit(IMGS)
    ref = ext.transform(IMGS)
    engine = ext._get_engine()
    calls = []
    real = type(engine).__call__

    def flaky(self, x):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(type(engine), "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        ext.transform_to_file(IMGS, tmp_path / "codes.npy")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file
    np.testing.assert_array_equal(ext.transform(IMGS), ref)


def test_refit_with_other_data_changes_the_model():
    clf = FineTunedClassifier(**FT).fit(IMGS, Y)
    first = clf.predict_proba(IMGS)
    clf.set_params(lr=0.5, random_state=1).fit(IMGS, 1 - Y)
    assert not np.allclose(clf.predict_proba(IMGS), first)
