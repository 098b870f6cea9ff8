"""sktransfer.export_onnx: one ONNX file per fitted model, served without torch.

What is shown here: for each model kind (a CNNFeatureExtractor followed by
scikit-learn steps, by a few-shot head, by nothing; a FeatureUnion of
extractors; a FineTunedClassifier) the exported file, run by onnxruntime in a
subprocess that imports neither torch nor sktransfer, on images resized by the
example client, gives what the estimator gives on the original images; the
client labels image files (PNG, JPEG, grayscale, RGBA; both resize rules) as
``predict`` labels the same files; the metadata says how to feed the file; a
step without a converter, a FeatureUnion without one input size, a model that
does not take images and a file that disagrees with its estimator are errors.
A FineTunedRegressor's values come out on the scale of its targets.
"""

import csv
import importlib.util
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import (
    FT_TINY,
    TINY,
    assert_close_paths,
    assert_same_labels,
    bands,
    save_pngs,
)
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    FineTunedRegressor,
    PrototypeClassifier,
    export_onnx,
)

# tiny networks on 2 shared cores: intra-op threads only add contention
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "examples" / "deployment" / "onnx_client.py"

# Runs a file on .npy images with onnxruntime and numpy alone, and says so.
RUNNER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import onnxruntime as ort

    model, images, out = sys.argv[1:]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    values = session.run(None, {"images": np.load(images)})
    names = [o.name for o in session.get_outputs()]
    np.savez(out, **{n: v.astype(str) if v.dtype == object else v
                     for n, v in zip(names, values)})
    loaded = {"torch", "sktransfer", "sklearn", "skl2onnx", "PIL"} & set(sys.modules)
    assert not loaded, loaded
    """
)


def _client():
    spec = importlib.util.spec_from_file_location("onnx_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(path, images, tmp_path):
    """The exported file run by onnxruntime alone in a subprocess.

    ``images`` are resized by the example client, as a server would."""
    client = _client()
    _, meta = client.open_model(path)
    prep = meta["preprocessing"]
    batch = np.stack([client.resize_image(Image.fromarray(a), prep) for a in images])
    np.save(tmp_path / "batch.npy", batch)
    (tmp_path / "runner.py").write_text(RUNNER)
    out = tmp_path / "out.npz"
    res = subprocess.run(
        [sys.executable, tmp_path / "runner.py", path, tmp_path / "batch.npy", out],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    with np.load(out) as f:
        return dict(f)


def metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
    """Three classes of 40 px bands (shrunk to the 32 px input: PIL's uint8 path),
    a regression target, and the held-out images the files are served."""
    X, y = bands(45, n_classes=3, size=40)
    labels = np.array(["coat", "shirt", "shoe"])[y]
    target = y + np.random.default_rng(1).normal(0, 0.1, len(y))
    return X[:36], labels[:36], target[:36], X[36:]


@pytest.fixture(scope="module")
def extractor(data):
    """One fitted extractor and its codes: the heads are fitted on the codes, so
    every pipeline shares one backbone graph (exported once)."""
    X = data[0]
    ext = CNNFeatureExtractor(**TINY).fit(X)
    return ext, ext.transform(X)


def _binary(labels):
    return (labels == "shoe").astype(int) * 5 + 2  # int labels 2 / 7


HEADS = {
    "logistic": lambda: LogisticRegression(max_iter=1000),
    "scaler-pca-logistic": lambda: make_pipeline(
        StandardScaler(), PCA(4), LogisticRegression(max_iter=1000)
    ),
    "svc-binary": lambda: SVC(),
    "svc": lambda: SVC(),
    "linear-svc": lambda: LinearSVC(),
    "ridge": lambda: Ridge(),
    "knn": lambda: KNeighborsClassifier(3),
    "prototypes": lambda: PrototypeClassifier(),
    "prototypes-euclidean": lambda: PrototypeClassifier(metric="euclidean", scale=0.1),
}


@pytest.mark.parametrize("kind", list(HEADS))
def test_codes_pipeline_round_trip(kind, data, extractor, tmp_path):
    X, labels, target, X_new = data
    ext, Z = extractor
    y = {"ridge": target, "svc-binary": _binary(labels)}.get(kind, labels)
    pipe = Pipeline([("cnn", ext), ("head", HEADS[kind]().fit(Z, y))])
    out = serve(export_onnx(pipe, tmp_path / "m.onnx"), X_new, tmp_path)
    if kind == "ridge":
        assert set(out) == {"values"}
        assert_close_paths(out["values"], pipe.predict(X_new))
        return
    if hasattr(pipe, "predict_proba"):
        assert set(out) == {"label", "probabilities"}
        scores = pipe.predict_proba(X_new)
        assert_close_paths(out["probabilities"], scores)
    else:  # an SVC without probabilities, a LinearSVC: decision values
        assert set(out) == {"label", "decision"}
        scores = pipe.decision_function(X_new)
        assert_close_paths(out["decision"], scores)
    assert out["label"].dtype.kind == np.asarray(y).dtype.kind
    assert_same_labels(out["label"], pipe.predict(X_new), scores)


def test_few_shot_head_after_sklearn_transformers(data, extractor, tmp_path):
    X, labels, _, X_new = data
    ext, Z = extractor
    scaler = StandardScaler().fit(Z)
    head = CosineSoftmaxClassifier(max_iter=20).fit(scaler.transform(Z), labels)
    pipe = Pipeline([("cnn", ext), ("scale", scaler), ("head", head)])
    out = serve(export_onnx(pipe, tmp_path / "m.onnx"), X_new, tmp_path)
    assert_close_paths(out["probabilities"], pipe.predict_proba(X_new))
    assert_same_labels(out["label"], pipe.predict(X_new), pipe.predict_proba(X_new))


def test_bare_extractor_exports_its_codes(data, tmp_path):
    X, _, _, X_new = data
    ext = CNNFeatureExtractor(**TINY, normalize=True).fit(X)
    path = export_onnx(ext, tmp_path / "codes.onnx")
    out = serve(path, X_new, tmp_path)
    assert set(out) == {"features"}
    assert_close_paths(out["features"], ext.transform(X_new))
    assert json.loads(metadata(path)["outputs"]).keys() == {"features"}


def test_feature_union_round_trip(data, tmp_path):
    X, labels, _, X_new = data
    union = FeatureUnion(
        [
            ("last", CNNFeatureExtractor(**TINY)),
            ("early", CNNFeatureExtractor(**TINY, layer="blocks.2", pooling="max")),
        ],
        transformer_weights={"early": 0.5},
    )
    pipe = make_pipeline(union, StandardScaler(), LogisticRegression(max_iter=1000))
    pipe.fit(X, labels)
    out = serve(export_onnx(pipe, tmp_path / "union.onnx"), X_new, tmp_path)
    assert_close_paths(out["probabilities"], pipe.predict_proba(X_new))
    assert_same_labels(out["label"], pipe.predict(X_new), pipe.predict_proba(X_new))


def test_feature_union_needs_one_explicit_input_size(data, tmp_path):
    X, labels, _, _ = data
    implicit = {k: v for k, v in TINY.items() if k != "input_size"}
    for other, match in (
        (implicit, "input_size=None"),
        ({**TINY, "input_size": 24}, "differently"),
    ):
        # fitted without computing codes: the error comes before any graph
        union = FeatureUnion(
            [("a", CNNFeatureExtractor(**TINY)), ("b", CNNFeatureExtractor(**other))]
        ).fit(X[:2])
        width = sum(e.n_features_out_ for _, e in union.transformer_list)
        Z = np.random.default_rng(0).normal(size=(6, width))
        head = LogisticRegression().fit(Z, labels[:6])
        pipe = Pipeline([("union", union), ("head", head)])
        with pytest.raises(ValueError, match=match):
            export_onnx(pipe, tmp_path / "union.onnx")
    assert not (tmp_path / "union.onnx").exists()


def test_finetuned_classifier_round_trip(tmp_path):
    X, y = bands(24, n_classes=2, size=24)
    clf = FineTunedClassifier(**FT_TINY).fit(X, np.array(["no", "yes"])[y])
    path = export_onnx(clf, tmp_path / "ft.onnx")
    out = serve(path, X, tmp_path)
    proba = clf.predict_proba(X)
    assert_close_paths(out["probabilities"], proba)
    assert_same_labels(out["label"], clf.predict(X), proba)
    meta = metadata(path)
    assert json.loads(meta["classes"]) == ["no", "yes"]
    assert json.loads(meta["input_size"]) == [16, 16]
    norm = json.loads(meta["preprocessing"])["normalization"]
    assert norm == [
        {"mean": list(clf.preprocessing_.mean), "std": list(clf.preprocessing_.std)}
    ]


@pytest.mark.parametrize("multilabel", [False, True], ids=["single", "multi"])
def test_temperature_and_flip_views_are_in_the_file(multilabel, tmp_path):
    """The file computes predict_proba as the model does: logits over
    temperature_, averaged over the mirror view with tta="flip"."""
    X, y = bands(36, n_classes=3, size=24)
    X[:, :, :6] = 0  # not left-right symmetric: the mirror view differs
    target = np.stack([y == 0, y != 1], axis=1).astype(int) if multilabel else y
    clf = FineTunedClassifier(
        **FT_TINY,
        early_stopping=True,
        validation_fraction=0.3,
        calibration="temperature",
    )
    clf.fit(X, target)
    assert clf.temperature_ != 1.0
    for tta in (None, "flip"):
        clf.set_params(tta=tta)
        out = serve(export_onnx(clf, tmp_path / f"{tta}.onnx"), X, tmp_path)
        assert_close_paths(out["probabilities"], clf.predict_proba(X))
    plain = clf.set_params(tta=None).predict_proba(X)
    assert np.abs(out["probabilities"] - plain).max() > 1e-4  # the view counted
    with pytest.raises(ValueError, match="tta=2 draws random views"):
        export_onnx(clf.set_params(tta=2), tmp_path / "random.onnx")


def test_multilabel_finetuned_classifier_round_trip(tmp_path):
    X, y = bands(24, n_classes=3, size=24)
    Y = np.stack([y == 0, y != 1, y == 2], axis=1).astype(int)
    clf = FineTunedClassifier(**FT_TINY).fit(X, Y)
    out = serve(export_onnx(clf, tmp_path / "ml.onnx"), X, tmp_path)
    assert_close_paths(out["probabilities"], clf.predict_proba(X))
    logits = clf.decision_function(X)
    clear = np.abs(logits) > 2e-5 * np.abs(logits).max()  # not a near-tie
    np.testing.assert_array_equal(out["label"][clear], clf.predict(X)[clear])


def test_finetuned_regressor_round_trip(tmp_path):
    X, y = bands(24, n_classes=2, size=24)
    reg = FineTunedRegressor(**FT_TINY).fit(X, 10.0 * y + 3)  # one target: (n,)
    out = serve(export_onnx(reg, tmp_path / "reg.onnx"), X, tmp_path)
    assert set(out) == {"values"}
    assert_close_paths(out["values"], reg.predict(X))


# ------------------------------------------------------------- the client
@pytest.mark.parametrize("resize", ["squash", "crop"])
def test_client_labels_files_as_predict_does(resize, data, tmp_path):
    """predict on image files == the exported file on the client's arrays."""
    X, labels, _, X_new = data
    pipe = make_pipeline(
        CNNFeatureExtractor(**TINY, resize=resize), LogisticRegression(max_iter=1000)
    ).fit(X, labels)
    model = export_onnx(pipe, tmp_path / "m.onnx")
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    paths = save_pngs(X_new, folder)
    big = Image.fromarray(np.kron(X_new[0], np.ones((3, 2, 1), np.uint8)))
    big.save(folder / "sub" / "big.jpg", quality=90)  # decoded at a reduced scale
    Image.fromarray(X_new[1][..., 0]).save(folder / "sub" / "gray.png")
    rgba = np.dstack([X_new[2], np.full(X_new.shape[1:3], 90, np.uint8)])
    Image.fromarray(rgba).save(folder / "sub" / "rgba.png")
    res = subprocess.run(
        [sys.executable, CLIENT, model, folder, "--batch-size", "3", "--threads", "1"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert f"{len(paths) + 3} images labelled" in res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == ["path", "label", "coat", "shirt", "shoe"]
    files = [r[0] for r in rows[1:]]
    assert set(paths) < set(files)
    proba = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    assert_close_paths(proba, pipe.predict_proba(files))
    assert_same_labels([r[1] for r in rows[1:]], pipe.predict(files), proba)


# ---------------------------------------------------------------- metadata
def test_metadata_says_how_to_feed_the_file(data, extractor, tmp_path):
    X, labels, _, _ = data
    ext, Z = extractor
    pipe = Pipeline([("cnn", ext), ("head", LogisticRegression().fit(Z, labels))])
    path = export_onnx(pipe, tmp_path / "m.onnx")
    meta = metadata(path)
    assert json.loads(meta["input_size"]) == [32, 32]
    assert json.loads(meta["input"])["shape"] == ["batch", 32, 32, 3]
    assert json.loads(meta["classes"]) == ["coat", "shirt", "shoe"]
    prep = json.loads(meta["preprocessing"])
    p = ext.preprocessing_
    assert (prep["resize"], prep["interpolation"]) == ("squash", p.interpolation)
    assert prep["normalization"] == [{"mean": list(p.mean), "std": list(p.std)}]
    versions = json.loads(meta["versions"])
    assert {"sktransfer", "torch", "sklearn", "skl2onnx", "onnxruntime"} <= set(
        versions
    )
    check = json.loads(meta["check"])
    assert check["max_abs_diff_probabilities"] <= 1e-4
    model = onnx.load(str(path))
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 32, 32, 3]


def test_model_file_exports_for_the_command_line(data, extractor, tmp_path):
    """``export_model_file``: what ``sktransfer export MODEL OUT.onnx`` runs."""
    import sktransfer
    from sktransfer._export import export_model_file

    _, labels, _, X_new = data
    ext, Z = extractor
    pipe = Pipeline([("cnn", ext), ("head", LogisticRegression().fit(Z, labels))])
    model = sktransfer.save(pipe, tmp_path / "model.skt")
    line = export_model_file(model, tmp_path / "model.onnx")
    assert "model.onnx" in line and "probabilities" in line
    out = serve(tmp_path / "model.onnx", X_new, tmp_path)
    assert_close_paths(out["probabilities"], pipe.predict_proba(X_new))


# ------------------------------------------------------------------ errors
class _Odd(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return X


def test_a_step_without_converter_is_named(data, extractor, tmp_path):
    _, labels, _, _ = data
    ext, Z = extractor
    head = LogisticRegression().fit(Z, labels)
    pipe = Pipeline([("cnn", ext), ("odd", _Odd().fit(Z)), ("head", head)])
    with pytest.raises(ValueError, match=r"step 'odd' \(_Odd\).*skl2onnx"):
        export_onnx(pipe, tmp_path / "m.onnx")


def test_a_file_that_disagrees_is_not_written(data, extractor, tmp_path, monkeypatch):
    _, labels, _, _ = data
    ext, Z = extractor
    pipe = Pipeline([("cnn", ext), ("head", LogisticRegression().fit(Z, labels))])
    real = pipe.predict_proba
    monkeypatch.setattr(pipe, "predict_proba", lambda X: 0.99 * real(X) + 0.01 / 3)
    with pytest.raises(RuntimeError, match="probabilities differ from predict_proba"):
        export_onnx(pipe, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_models_that_do_not_take_images_are_refused(data, extractor, tmp_path):
    _, labels, _, _ = data
    _, Z = extractor
    with pytest.raises(TypeError, match="take images"):
        export_onnx(LogisticRegression().fit(Z, labels), tmp_path / "m.onnx")
    with pytest.raises(NotFittedError):
        export_onnx(make_pipeline(CNNFeatureExtractor(**TINY)), tmp_path / "m.onnx")
