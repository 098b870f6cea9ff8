"""CNNFeatureExtractor: every input kind, layers, pooling, sklearn integration."""

import numpy as np
import pytest
import torch
from conftest import TINY, TinyNet, assert_close_paths, assert_same_path, save_pngs
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline

from sktransfer import CNNFeatureExtractor, list_layers, load_backbone
from sktransfer._images import Preprocessor, check_images


@pytest.fixture(scope="module")
def fitted(rng_images):
    X, _ = rng_images
    return CNNFeatureExtractor(**TINY).fit(X)


# ------------------------------------------------------------------ input kinds
def test_output_is_float32_with_one_row_per_image(fitted, rng_images):
    X, _ = rng_images
    Z = fitted.transform(X)
    assert Z.dtype == np.float32
    assert Z.shape == (len(X), fitted.n_features_out_)
    assert np.isfinite(Z).all()


def test_grayscale_forms_agree(fitted, rng_images):
    gray = rng_images[0][..., 0]
    # the same pixel values, converted along other routes (maybe other memory
    # layouts): the fp32 path tolerance
    ref = fitted.transform(gray)  # (n, h, w)
    assert_close_paths(fitted.transform(gray[..., None]), ref)
    assert_close_paths(fitted.transform(gray[:, None]), ref)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    assert_close_paths(fitted.transform(rgb), ref)
    pil = [Image.fromarray(g, mode="L") for g in gray]
    assert_close_paths(fitted.transform(pil), ref)


def test_channel_layouts_and_alpha(fitted, rng_images):
    X = rng_images[0]
    ref = fitted.transform(X)
    assert_close_paths(fitted.transform(X.transpose(0, 3, 1, 2)), ref)
    rgba = np.concatenate([X, np.full(X.shape[:3] + (1,), 7, np.uint8)], axis=-1)
    assert_close_paths(fitted.transform(rgba), ref)
    pil_rgba = [Image.fromarray(a, mode="RGBA") for a in rgba]
    assert_close_paths(fitted.transform(pil_rgba), ref)


def test_float_01_matches_uint8_and_0_255_is_refused(fitted, rng_images):
    X = rng_images[0]
    ref = fitted.transform(X)
    assert_close_paths(fitted.transform(X / 255.0), ref)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*X / 255"):
        fitted.transform(X.astype(np.float32))


def test_16bit_pil_and_palette(fitted, rng_images):
    gray = rng_images[0][..., 0]
    ref = fitted.transform(gray[:3])
    i16 = [Image.fromarray(g.astype(np.uint16) * 257) for g in gray[:3]]
    assert i16[0].mode.startswith("I;16")
    assert_close_paths(fitted.transform(i16), ref)  # 16-bit g * 257 is 8-bit g
    pal = [Image.fromarray(a).convert("P") for a in rng_images[0][:3]]
    assert fitted.transform(pal).shape == (3, fitted.n_features_out_)


def test_file_paths_and_mixed_sizes(fitted, rng_images, tmp_path):
    X = rng_images[0][:6]
    paths = save_pngs(X, tmp_path)
    ref = fitted.transform(X)
    assert_close_paths(fitted.transform(paths), ref)
    assert_close_paths(fitted.transform(np.asarray(paths, dtype=object)), ref)
    # different sizes and formats in one list, decoded in DataLoader workers
    Image.fromarray(np.zeros((40, 20), np.uint8)).save(tmp_path / "g.jpg")
    mixed = paths[:2] + [str(tmp_path / "g.jpg")]
    ext = clone(fitted).set_params(num_workers=1).fit(X)
    assert ext.transform(mixed).shape == (3, ext.n_features_out_)
    arrays = [X[0], np.zeros((9, 30), np.uint8), np.ones((3, 12, 12), np.float32)]
    assert fitted.transform(arrays).shape == (3, fitted.n_features_out_)


def test_flattened_rows_with_input_shape():
    from sklearn.datasets import load_digits

    digits = load_digits()
    ext = CNNFeatureExtractor(**TINY, input_shape=(8, 8))
    Z = ext.fit_transform(digits.data[:10] / 16.0)
    assert Z.shape == (10, ext.n_features_out_)
    assert ext.n_features_in_ == 64
    with pytest.raises(ValueError, match="60 features"):
        ext.transform(digits.data[:3, :60])


# ----------------------------------------------------------- correctness of runs
@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
def test_batch_invariance_fp32(rng_images, engine):
    X = rng_images[0]
    ext = CNNFeatureExtractor(**TINY, precision="fp32", engine=engine, batch_size=7)
    Z = ext.fit(X).transform(X)
    for i in (0, 5, 19):  # a batch of 1: maybe other kernels
        alone = ext.transform(X[i : i + 1])
        assert_close_paths(alone, Z[i : i + 1], scale=np.abs(Z).max())


def test_onnx_engine_matches_torch(rng_images):
    X = rng_images[0]
    fast = CNNFeatureExtractor(**TINY, engine="onnxruntime").fit(X)
    slow = CNNFeatureExtractor(**TINY, engine="torch").fit(X)
    assert fast._get_engine().kind == "onnxruntime"
    assert slow._get_engine().kind == "torch"
    assert_close_paths(fast.transform(X), slow.transform(X))


def test_always_eval_mode_and_deterministic(rng_images):
    X = rng_images[0]
    ext = CNNFeatureExtractor(model=TinyNet(), weights=None, input_size=16)
    ext.fit(X)
    ext.backbone_.train()  # even if someone flips it, transform must not care
    a = ext.set_params(engine="torch").fit(X).transform(X)
    b = ext.transform(X)
    assert not any(m.training for m in ext.backbone_.modules())
    assert_same_path(a, b)  # one torch engine, one network, one batch


def test_bf16_precision_runs_and_returns_float32(rng_images):
    X = rng_images[0][:4]
    Z = CNNFeatureExtractor(**TINY, precision="bf16").fit(X).transform(X)
    ref = CNNFeatureExtractor(**TINY, precision="fp32").fit(X).transform(X)
    assert Z.dtype == np.float32
    assert np.corrcoef(Z.ravel(), ref.ravel())[0, 1] > 0.98


# ------------------------------------------------------------ layers and pooling
def test_layer_by_name_and_list_from_one_pass(rng_images):
    X = rng_images[0][:4]
    one = CNNFeatureExtractor(**TINY, layer="blocks.2").fit(X)
    two = CNNFeatureExtractor(**TINY, layer=["blocks.2", "blocks.4"]).fit(X)
    Z1, Z2 = one.transform(X), two.transform(X)
    assert_close_paths(Z2[:, : Z1.shape[1]], Z1)  # two graphs
    names = two.get_feature_names_out()
    assert names[0] == "test_efficientnet.blocks.2.avg_0"
    assert names[-1].startswith("test_efficientnet.blocks.4.avg_")
    assert len(names) == Z2.shape[1]


def _activation(ext, X, layer):
    """The output of ``layer`` for ``X``, captured by a forward hook."""
    net = ext.backbone_
    seen = []
    hook = net.get_submodule(layer).register_forward_hook(
        lambda module, args, out: seen.append(out)
    )
    x = Preprocessor(ext.preprocessing_)(check_images(X).get_batch(range(len(X))))
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        hook.remove()
    return seen[0].numpy()


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax", None])
def test_pooling_values(rng_images, pooling):
    """avg / max are the spatial mean / max of the layer's map, avgmax both
    (mean first), None the map flattened channel-major."""
    X = rng_images[0][:3]
    ext = CNNFeatureExtractor(**TINY, layer="blocks.3", pooling=pooling).fit(X)
    act = _activation(ext, X, "blocks.3")
    want = {
        "avg": act.mean((2, 3)),
        "max": act.max((2, 3)),
        "avgmax": np.concatenate([act.mean((2, 3)), act.max((2, 3))], axis=1),
        None: act.reshape(len(X), -1),
    }[pooling]
    Z = ext.transform(X)
    assert Z.shape == want.shape == (3, ext.n_features_out_)
    assert_close_paths(Z, want)  # ONNX Runtime vs the eager layer's map


def test_classifier_layer_gives_logits_and_penultimate_default(rng_images):
    X = rng_images[0][:3]
    logits = CNNFeatureExtractor(**TINY, layer="classifier").fit(X)
    net, _ = load_backbone(TINY["model"], None)
    assert logits.n_features_out_ == net.get_submodule("classifier").out_features
    pen = CNNFeatureExtractor(**TINY).fit(X)
    assert pen.n_features_out_ == net.get_submodule("classifier").in_features
    assert pen.get_feature_names_out()[0] == "test_efficientnet.avgpool_0"


def test_user_module_and_list_layers(rng_images):
    X = rng_images[0][:3]
    ext = CNNFeatureExtractor(
        model=TinyNet(), weights=None, layer="features.2", input_size=16
    )
    assert ext.fit_transform(X).shape == (3, 8)
    assert "features.2" in list_layers(TinyNet())
    pen = CNNFeatureExtractor(model=TinyNet(), weights=None, input_size=16).fit(X)
    assert pen.n_features_out_ == 16


def test_l2_normalize(rng_images):
    X = rng_images[0][:5]
    Z = CNNFeatureExtractor(**TINY, normalize=True).fit_transform(X)
    assert_close_paths(np.linalg.norm(Z, axis=1), np.ones(len(Z)))


# ------------------------------------------------------------- weights sources
def test_local_state_dict_file_and_safetensors(tmp_path, rng_images):
    X = rng_images[0][:3]
    net = TinyNet()
    torch.nn.init.normal_(net.fc.weight)
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    a = CNNFeatureExtractor(
        model=TinyNet(), weights=str(path), layer="fc", input_size=16
    )
    b = CNNFeatureExtractor(model=net, weights=None, layer="fc", input_size=16)
    assert_close_paths(a.fit_transform(X), b.fit_transform(X))
    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(st))
    c = CNNFeatureExtractor(model=TinyNet(), weights=str(st), layer="fc", input_size=16)
    assert_close_paths(c.fit_transform(X), b.fit_transform(X))


def test_malicious_pickle_is_refused_and_runs_no_code(tmp_path, rng_images):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(ValueError, match="safely"):
        CNNFeatureExtractor(model=TinyNet(), weights=str(path)).fit(rng_images[0][:2])
    assert not marker.exists()


def test_weights_for_another_architecture_say_which_keys(tmp_path, rng_images):
    path = tmp_path / "other.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(ValueError, match="missing keys"):
        CNNFeatureExtractor(**{**TINY, "weights": str(path)}).fit(rng_images[0][:2])


# ------------------------------------------------------------ sklearn integration
def test_clone_is_unfitted_and_refits_the_same(fitted, rng_images):
    # pickle / joblib round trips: test_reliability.py's table over all estimators
    X = rng_images[0]
    clone_ = clone(fitted)
    assert not hasattr(clone_, "backbone_")
    # the same weights: the same exported graph, one path
    assert_same_path(clone_.fit(X).transform(X), fitted.transform(X))


def test_feature_union_of_two_backbones(rng_images):
    X, y = rng_images
    union = FeatureUnion(
        [
            ("a", CNNFeatureExtractor(**TINY)),
            ("b", CNNFeatureExtractor(model=TinyNet(), weights=None, input_size=16)),
        ]
    )
    Z = union.fit_transform(X)
    assert Z.shape == (len(X), 256 + 16)
    names = union.get_feature_names_out()
    assert names[0].startswith("a__test_efficientnet") and names[-1].startswith(
        "b__tinynet"
    )


def test_grid_search_over_layer_and_pooling(rng_images):
    X, y = rng_images
    pipe = Pipeline(
        [
            ("cnn", CNNFeatureExtractor(**TINY)),
            ("clf", LogisticRegression(max_iter=200)),
        ]
    )
    grid = GridSearchCV(
        pipe,
        {"cnn__layer": [None, "blocks.3"], "cnn__pooling": ["avg", "max"]},
        cv=2,
    )
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.predict(X).shape == (len(X),)


def test_pipeline_memory_caches_the_extraction(rng_images, tmp_path):
    X, y = rng_images
    pipe = make_pipeline(
        CNNFeatureExtractor(**TINY),
        LogisticRegression(max_iter=200),
        memory=str(tmp_path),
    )
    pipe.fit(X, y)
    pipe.set_params(logisticregression__C=0.5).fit(X, y)  # extraction from cache
    assert any(tmp_path.rglob("output.pkl"))


def test_set_output_pandas(fitted, rng_images):
    pytest.importorskip("pandas")
    ext = clone(fitted).set_output(transform="pandas").fit(rng_images[0])
    df = ext.transform(rng_images[0][:3])
    assert list(df.columns[:2]) == [
        "test_efficientnet.avgpool_0",
        "test_efficientnet.avgpool_1",
    ]


# Bad input and unreadable files: the tables in test_reliability.py.


# ------------------------------------------------------------- real weights
@pytest.mark.slow
def test_real_lite0_classifies_coffee_as_espresso():
    skimage_data = pytest.importorskip("skimage.data")
    ext = CNNFeatureExtractor(
        model="efficientnet_lite0", weights="imagenet", layer="classifier"
    )
    logits = ext.fit_transform([skimage_data.coffee(), skimage_data.chelsea()])
    assert logits[0].argmax() == 967  # espresso
    assert 281 <= logits[1].argmax() <= 285  # a cat class


def test_pixel_range_none_takes_values_as_they_are(rng_images):
    X = rng_images[0][:4].astype(np.float32) / 255.0
    standardized = (X - X.mean()) / X.std()
    with pytest.raises(ValueError, match="pixel values"):
        CNNFeatureExtractor(**TINY).fit(standardized)
    raw = CNNFeatureExtractor(**TINY, pixel_range=None).fit(X)
    auto = CNNFeatureExtractor(**TINY).fit(X)
    assert_close_paths(raw.transform(X), auto.transform(X))
    assert np.isfinite(raw.transform(standardized)).all()


def test_float_scale_is_decided_by_the_dtype_not_per_batch(rng_images):
    # one image much darker than the others: its code must not depend on which
    # batch it lands in.
    X = rng_images[0][:4].astype(np.float32) / 255.0
    X[0] = np.minimum(X[0], 1 / 255)
    ext = CNNFeatureExtractor(**TINY, batch_size=1).fit(X)
    together = ext.set_params(batch_size=4).transform(X)
    alone = ext.set_params(batch_size=1).transform(X)
    assert_close_paths(together, alone)  # other batch sizes: maybe other kernels
