"""Inputs in the forms scikit-learn users pass them (issue #20, "the image gate").

Each test checks a result: the same pixels give the same codes whatever the
input kind and image size, an image's codes never depend on the other images
of the call, and errors name what is wrong (the file, the dtype).
"""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import FT_TINY, TINY, assert_close_paths, save_pngs
from PIL import Image
from sklearn.compose import ColumnTransformer

from sktransfer import CNNFeatureExtractor, FineTunedClassifier
from sktransfer.datasets import load_image_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RNG = np.random.default_rng(0)


def _uint8(n, h, w, c=3, seed=0):
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _column(items):
    """An (n, 1) object array (what ColumnTransformer hands over for ["img"])."""
    column = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        column[i, 0] = item  # np.asarray would read PIL images as pixel arrays
    return column


def _kinds(X, tmp_path):
    """The same pixels as every input kind (PNG is lossless)."""
    pil = [Image.fromarray(a) for a in X]
    return {
        "list of arrays": list(X),
        "channels first": np.moveaxis(X, -1, 1) if X.ndim == 4 else X,
        "PIL images": pil,
        "PNG paths": save_pngs(X, tmp_path),
        "one column of PIL images": _column(pil),
    }


@pytest.fixture(scope="module")
def extractor():
    return CNNFeatureExtractor(**TINY).fit(_uint8(2, 32, 32))


@pytest.fixture(scope="module")
def cropping_extractor():
    return CNNFeatureExtractor(**TINY, resize="crop").fit(_uint8(2, 32, 32))


# ------------------------------------------ 1. one resize path for every kind
# 32 px input: 20 px images only grow (float path), 48 px and 40 x 24 px images
# shrink in an axis (the uint8 path photos take); 32 px is not resized.
SIZES = {"grown": (20, 20), "same": (32, 32), "shrunk": (48, 48), "mixed": (40, 24)}


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("channels", [3, None], ids=["rgb", "gray"])
def test_same_pixels_same_codes_whatever_the_kind(extractor, size, channels, tmp_path):
    X = _uint8(3, *SIZES[size], c=channels)
    ref = extractor.transform(X)
    for name, Z in _kinds(X, tmp_path).items():
        assert_close_paths(extractor.transform(Z), ref, err_msg=f"{size}, {name}")


def test_same_codes_when_cropping(cropping_extractor, tmp_path):
    X = _uint8(3, 48, 40)
    ref = cropping_extractor.transform(X)
    for name, Z in _kinds(X, tmp_path).items():
        assert_close_paths(cropping_extractor.transform(Z), ref, err_msg=name)


def test_a_list_of_mixed_sizes_gives_each_image_its_own_codes(extractor):
    images = [_uint8(1, 48, 48)[0], _uint8(1, 20, 12, seed=1)[0], _uint8(1, 32, 64)[0]]
    together = extractor.transform(images)
    for i, a in enumerate(images):
        assert_close_paths(together[i], extractor.transform(a[None])[0])


@pytest.fixture(scope="module")
def classifier():
    X = _uint8(16, 16, 16)
    y = np.arange(16) % 2
    X[y == 1, :8] = 255
    return FineTunedClassifier(**FT_TINY).fit(X, y)


@pytest.mark.parametrize("size", [(40, 40), (12, 12), (24, 10)])
def test_classifier_scores_agree_across_kinds_at_another_size(
    classifier, size, tmp_path
):
    # the classifier was fitted on 16 px images; these are another size
    X = _uint8(4, *size, seed=3)
    proba = classifier.predict_proba(X)
    scores = classifier.decision_function(X)
    for name, Z in _kinds(X, tmp_path).items():
        assert_close_paths(classifier.predict_proba(Z), proba, err_msg=name)
        assert_close_paths(classifier.decision_function(Z), scores, err_msg=name)


# ---------------------------- 2. the pixel scale is the dtype's, never the data's
def test_codes_do_not_depend_on_the_other_images_of_the_call(extractor):
    X = _uint8(4, 24, 24).astype(np.float32) / 255
    X[0] *= 1 / 255  # an almost black image: once scaled differently by its mates
    alone = np.concatenate([extractor.transform(X[i : i + 1]) for i in range(4)])
    assert_close_paths(extractor.transform(X), alone)
    # a list of images of different sizes: scaled image by image, the same way
    ragged = [X[0], X[1][:20], X[2], X[3][:, :16]]
    for i, a in enumerate(ragged):
        assert_close_paths(
            extractor.transform(ragged)[i], extractor.transform(a[None])[0]
        )


def test_images_of_different_dtypes_in_one_list_keep_their_own_scale(extractor):
    X = _uint8(2, 24, 24)
    mixed = [X[0], X[1] / 255.0]  # same shape: not stacked into one float array
    assert_close_paths(extractor.transform(mixed), extractor.transform(X))


def test_each_dtype_has_its_rule(extractor):
    X = _uint8(3, 32, 32)  # not resized: every form gives the same network input
    ref = extractor.transform(X)
    forms = {
        "int64 0-255": X.astype(np.int64),
        "float 0-1": X / 255.0,
        "uint16": X.astype(np.uint16) * 257,
        "PIL F 0-1": [
            Image.fromarray(a.astype(np.float32) / 255, mode="F") for a in X[..., 0]
        ],
    }
    for name, Z in forms.items():
        want = ref if name != "PIL F 0-1" else extractor.transform(X[..., 0])
        assert_close_paths(extractor.transform(Z), want, err_msg=name)
    mask = X > 127
    assert_close_paths(
        extractor.transform(mask), extractor.transform(mask.astype(np.float32))
    )


def test_each_dtype_takes_its_resize_path(extractor):
    # shrunk: 8-bit forms are resized in uint8, 16-bit and float forms in float
    X = _uint8(3, 40, 40)
    assert_close_paths(extractor.transform(X.astype(np.int64)), extractor.transform(X))
    floats = extractor.transform(X / 255.0)
    assert_close_paths(extractor.transform(X.astype(np.uint16) * 257), floats)
    assert_close_paths(
        extractor.transform([a.astype(np.uint16) * 257 for a in X]), floats
    )


@pytest.mark.parametrize(
    "X, match",
    [
        (_uint8(2, 16, 16).astype(np.float32), r"\[0, 1\].*X / 255.*uint8"),
        (_uint8(2, 16, 16).astype(np.float32) - 128, r"standardized.*pixel_range"),
        (_uint8(2, 16, 16).astype(np.int32) * 200, r"uint16"),
        ([Image.fromarray(np.full((8, 8), 200.0, np.float32), mode="F")], "image 0"),
    ],
    ids=["float 0-255", "standardized", "int32 16-bit", "PIL F 0-255"],
)
def test_values_outside_the_dtype_range_are_refused_with_the_fix(extractor, X, match):
    with pytest.raises(ValueError, match=match):
        extractor.transform(X)


def test_pixel_range_none_takes_values_as_they_are():
    X = _uint8(3, 40, 40)
    auto = CNNFeatureExtractor(**TINY).fit(X)
    raw = CNNFeatureExtractor(**TINY, pixel_range=None).fit(X)
    assert_close_paths(raw.transform(X / 255.0), auto.transform(X / 255.0))
    assert np.isfinite(raw.transform(X.astype(np.float32) - 128)).all()


# ------------------------------------------------ 3. a one-column frame of paths
def test_column_transformer_over_a_frame_of_paths(tmp_path):
    """["path"] hands the extractor a one-column DataFrame: n images, not an
    (n, 1) array error; the codes are those of the plain list of paths."""
    X = _uint8(6, 16, 16)
    paths = save_pngs(X, tmp_path)
    frame = pd.DataFrame({"path": paths, "age": np.arange(6.0)})
    ct = ColumnTransformer(
        [
            ("img", CNNFeatureExtractor(**TINY), ["path"]),
            ("num", "passthrough", ["age"]),
        ]
    )
    Z = ct.fit_transform(frame)
    codes = CNNFeatureExtractor(**TINY).fit_transform(paths)
    np.testing.assert_array_equal(Z[:, :-1], codes)  # one compute path
    np.testing.assert_array_equal(Z[:, -1], frame["age"])
    assert ct.get_feature_names_out()[0].startswith("img__")
    # the same one-column form as an object array
    one_column = np.asarray(paths, dtype=object)[:, None]
    np.testing.assert_array_equal(
        CNNFeatureExtractor(**TINY).fit_transform(one_column), codes
    )


def test_two_columns_of_paths_are_refused(tmp_path):
    paths = save_pngs(_uint8(2, 8, 8), tmp_path)
    with pytest.raises(TypeError, match=r"shape \(2, 2\)"):
        CNNFeatureExtractor(**TINY).fit(np.asarray([paths, paths], dtype=object).T)


# ----------------------------------------- 4. extensions given as one string
def _folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for name in ("0.png", "1.PNG", "2.p", "3", "4.jpg"):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(
                tmp_path / cls / name, format="PNG"
            )
    return tmp_path


@pytest.mark.parametrize("extensions", [".png", "png", (".png",), [".PNG"]])
def test_a_string_extension_is_one_suffix(tmp_path, extensions):
    X, y = load_image_folder(_folder(tmp_path), extensions=extensions, return_X_y=True)
    # not a substring test: "2.p" and the suffix-less "3" are not PNG files
    names = sorted(os.path.basename(p).lower() for p in X)
    assert names == ["0.png", "0.png", "1.png", "1.png"]
    assert list(y) == ["a", "a", "b", "b"]


@pytest.mark.parametrize(
    "extensions, error", [(5, TypeError), ([".png", 5], TypeError), ([], ValueError)]
)
def test_bad_extensions_are_refused(tmp_path, extensions, error):
    with pytest.raises(error, match="extensions"):
        load_image_folder(_folder(tmp_path), extensions=extensions)


# -------------------------------- 5. a corrupt file read by a DataLoader worker
@pytest.fixture
def corrupt_paths(tmp_path):
    paths = save_pngs(_uint8(8, 16, 16), tmp_path)
    with open(paths[5], "rb") as f:
        head = f.read(60)
    with open(paths[5], "wb") as f:
        f.write(head)  # a truncated PNG: the header parses, the pixels do not
    return paths


def test_a_training_worker_names_the_corrupt_file(corrupt_paths, monkeypatch):
    import sktransfer._training

    # decoded on demand by the training loader's worker, not held in memory
    # (as a dataset larger than the in-memory cache is), and no head init or
    # activation cache reading the images in this process first
    monkeypatch.setattr(sktransfer._training, "_CACHE_BYTES", 0)
    clf = FineTunedClassifier(**FT_TINY, num_workers=1, cache=False, head_init="normal")
    with pytest.raises(ValueError, match=r"cannot read image file .*5\.png") as info:
        clf.fit(corrupt_paths, np.arange(8) % 2)
    assert "DataLoader worker" not in str(info.value)
    assert "Traceback" not in str(info.value)


def test_a_prediction_worker_names_the_corrupt_file(corrupt_paths):
    ext = CNNFeatureExtractor(**TINY, num_workers=1).fit(corrupt_paths[:2])
    with pytest.raises(ValueError, match=r"cannot read image file .*5\.png") as info:
        ext.transform(corrupt_paths)
    assert "DataLoader worker" not in str(info.value)
