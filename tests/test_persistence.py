"""sktransfer.save / sktransfer.load: round trips, a new process, tampered files."""

import json
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from conftest import (
    TINY,
    TinyNet,
    assert_close_paths,
    assert_same_labels,
    assert_same_path,
    predicts_from_stores,
)
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import sktransfer
from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
)
from sktransfer._persistence import VersionMismatchWarning

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 120, size=(16, 20, 20, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"])[np.arange(16) % 2]
    X[y == "dog", :10] += 120  # learnable
    return X, y


def _outputs(model, X):
    out = {"predict": model.predict(X)}
    for method in ("predict_proba", "decision_function"):
        if hasattr(model, method):
            out[method] = getattr(model, method)(X)
    return out


MODELS = {
    "codes_logreg": lambda: make_pipeline(
        CNNFeatureExtractor(**TINY), StandardScaler(), LogisticRegression()
    ),
    "union_svc": lambda: make_pipeline(
        make_union(
            CNNFeatureExtractor(**TINY),
            CNNFeatureExtractor(**TINY, layer="blocks.1", pooling="avgmax"),
        ),
        SVC(),
    ),
    "prototypes": lambda: make_pipeline(
        CNNFeatureExtractor(**TINY), PrototypeClassifier()
    ),
    "cosine_softmax": lambda: make_pipeline(
        CNNFeatureExtractor(**TINY, normalize=True), CosineSoftmaxClassifier()
    ),
    "finetuned": lambda: FineTunedClassifier(
        **TINY, max_epochs=2, batch_size=8, random_state=0
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_same_predictions(name, data, tmp_path):
    X, y = data
    model = MODELS[name]().fit(X, y)
    path = sktransfer.save(model, tmp_path / "model.skt")
    loaded = sktransfer.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params(deep=False).keys() == model.get_params(deep=False).keys()
    before, after = _outputs(model, X), _outputs(loaded, X)
    assert before.keys() == after.keys()
    if name == "finetuned":
        # the model just fit predicts from its activation stores, the loaded
        # one through the whole network: two compute paths, compared on logits
        assert predicts_from_stores(model, X)
        assert not predicts_from_stores(loaded, X)
        scores = before["decision_function"]
        assert_close_paths(after["decision_function"], scores)
        assert_same_labels(after["predict"], before["predict"], scores)
    else:  # the same engine on the same graph: one path
        for method in before:
            assert_same_path(after[method], before[method], method)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.classes_.dtype == model.classes_.dtype


def test_fitted_attributes_survive(data, tmp_path):
    X, y = data
    ext = CNNFeatureExtractor(**TINY, layer=["blocks.1", "blocks.2"]).fit(X)
    loaded = sktransfer.load(sktransfer.save(ext, tmp_path / "ext.skt"))
    assert loaded.preprocessing_ == ext.preprocessing_
    assert loaded.layers_ == ext.layers_
    assert loaded.n_features_out_ == ext.n_features_out_
    np.testing.assert_array_equal(
        loaded.get_feature_names_out(), ext.get_feature_names_out()
    )
    assert_same_path(loaded.transform(X), ext.transform(X))  # the same graph

    ft = FineTunedClassifier(**TINY, max_epochs=2, batch_size=8, random_state=0)
    ft.fit(X, y)
    loaded = sktransfer.load(sktransfer.save(ft, tmp_path / "ft.skt"))
    assert loaded.n_epochs_ == ft.n_epochs_
    assert loaded.history_[-1]["train_loss"] == ft.history_[-1]["train_loss"]
    # the restored fine-tuned network exports the same backbone
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    ft.save_backbone(a)
    loaded.save_backbone(b)
    assert a.read_bytes() == b.read_bytes()


def test_load_in_a_new_process(data, tmp_path):
    X, y = data
    pipe = MODELS["codes_logreg"]().fit(X, y)
    ft = MODELS["finetuned"]().fit(X, y)
    sktransfer.save(pipe, tmp_path / "pipe.skt")
    sktransfer.save(ft, tmp_path / "ft.skt")
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import torch
        import sktransfer
        # float sums depend on the thread count: the same as this process's
        torch.set_num_threads({torch.get_num_threads()})
        X = np.load({str(tmp_path / "X.npy")!r})
        for name in ("pipe", "ft"):
            model = sktransfer.load({str(tmp_path)!r} + f"/{{name}}.skt")
            np.save({str(tmp_path)!r} + f"/{{name}}_proba.npy", model.predict_proba(X))
            np.save(
                {str(tmp_path)!r} + f"/{{name}}_scores.npy", model.decision_function(X)
            )
            np.save({str(tmp_path)!r} + f"/{{name}}_pred.npy", model.predict(X))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    # the pipeline runs one path in both processes (the same graph, threads)
    for what, want in (
        ("proba", pipe.predict_proba(X)),
        ("scores", pipe.decision_function(X)),
        ("pred", pipe.predict(X)),
    ):
        assert_same_path(np.load(tmp_path / f"pipe_{what}.npy"), want, what)
    # the fine-tuned model just fit predicts from its stores here, through
    # the whole network there: two paths, compared on logits
    assert predicts_from_stores(ft, X)
    scores = ft.decision_function(X)
    assert_close_paths(np.load(tmp_path / "ft_scores.npy"), scores)
    assert_same_labels(np.load(tmp_path / "ft_pred.npy"), ft.predict(X), scores)


def test_manifest_records_parameters_versions_and_digest(data, tmp_path):
    X, y = data
    pipe = MODELS["codes_logreg"]().fit(X, y)
    path = sktransfer.save(pipe, tmp_path / "m.skt")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert {"manifest.json", "tensors.safetensors", "arrays.safetensors"} <= names
    assert set(manifest["versions"]) >= {"sktransfer", "torch", "torchvision", "timm"}
    assert manifest["versions"]["sklearn"] == __import__("sklearn").__version__
    cnn = manifest["estimator"]["steps"][0][1]
    assert cnn["class"] == "CNNFeatureExtractor"
    assert cnn["params"]["model"] == TINY["model"]
    assert cnn["params"]["input_size"] == 32
    assert cnn["state"]["preprocessing_"]["$"] == "Preprocessing"
    # random-init weights are stored; their digest is the extractor's own
    from sktransfer._cache import state_digest

    assert cnn["backbone"]["stored"] is True
    assert cnn["backbone"]["digest"] == state_digest(pipe[0].backbone_)
    head = manifest["estimator"]["steps"][1][1]
    assert head["$"] == "skops" and head["member"] in names
    assert [str(c) for c in manifest["classes"]["v"]] == ["cat", "dog"]


def _rewrite(path, member, data):
    """Copy the zip at ``path`` with ``member`` replaced by ``data``."""
    with zipfile.ZipFile(path) as zf:
        items = {n: zf.read(n) for n in zf.namelist()}
    items[member] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in items.items():
            zf.writestr(n, d)


class _Evil:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "member", ["skops/0.skops", "tensors.safetensors", "arrays.safetensors"]
)
def test_tampered_file_cannot_run_code(member, data, tmp_path):
    X, y = data
    path = sktransfer.save(MODELS["codes_logreg"]().fit(X, y), tmp_path / "m.skt")
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Evil(live)))
    assert live.exists()  # the payload is real: unpickling it runs code
    marker = tmp_path / "marker"
    _rewrite(path, member, pickle.dumps(_Evil(marker)))
    with pytest.raises(ValueError, match="cannot load|not a valid|damaged|altered"):
        sktransfer.load(path)
    assert not marker.exists()


def test_tampered_manifest_names_no_foreign_code(data, tmp_path):
    X, y = data
    path = sktransfer.save(
        PrototypeClassifier().fit(np.eye(4), [0, 0, 1, 1]), tmp_path / "p.skt"
    )
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    for module, cls in [("os", "system"), ("sktransfer._persistence", "save")]:
        manifest["estimator"]["module"], manifest["estimator"]["class"] = module, cls
        _rewrite(path, "manifest.json", json.dumps(manifest).encode())
        with pytest.raises(ValueError, match="not (part of sktransfer|a sktransfer)"):
            sktransfer.load(path)
    manifest["estimator"] = {"$": "pickle", "data": "gASV"}
    _rewrite(path, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ValueError, match="unknown component type 'pickle'"):
        sktransfer.load(path)


def test_untrusted_type_in_skops_part_is_refused(tmp_path):
    import skops.io as sio

    from sktransfer._persistence import TRUSTED_TYPES

    path = sktransfer.save(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(
            np.eye(4), [0, 0, 1, 1]
        ),
        tmp_path / "m.skt",
    )
    # A skops file holding a type outside the trusted list (here a test class).
    foreign = sio.dumps(_Evil(tmp_path / "marker"))
    assert sio.get_untrusted_types(data=foreign)
    assert not set(sio.get_untrusted_types(data=foreign)) & set(TRUSTED_TYPES)
    _rewrite(path, "skops/0.skops", foreign)
    with pytest.raises(ValueError, match="untrusted types"):
        sktransfer.load(path)
    assert not (tmp_path / "marker").exists()


def test_version_mismatch_warns(tmp_path):
    path = sktransfer.save(
        PrototypeClassifier().fit(np.eye(4), [0, 0, 1, 1]), tmp_path / "p.skt"
    )
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["versions"]["torch"] = "1.0.0"
    _rewrite(path, "manifest.json", json.dumps(manifest).encode())
    with pytest.warns(VersionMismatchWarning, match=r"torch 1\.0\.0 \(here "):
        loaded = sktransfer.load(path)
    assert loaded.predict(np.eye(4)).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("layer", [None, "blocks.4"])
def test_pretrained_weights_by_spec_and_digest_checked(layer, tmp_path):
    """Named pretrained weights are not copied; the digest guards what is rebuilt."""
    X = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ext = CNNFeatureExtractor(model="efficientnet_lite0", input_size=32, layer=layer)
    ext.fit(X)
    path = sktransfer.save(ext, tmp_path / "lite0.skt")
    assert path.stat().st_size < 100_000  # 4.6M weights are not in the file
    loaded = sktransfer.load(path)
    assert_same_path(loaded.transform(X), ext.transform(X))  # the same graph

    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["estimator"]["backbone"]["digest"] = "0" * 32
    _rewrite(path, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ValueError, match="differ from the ones"):
        sktransfer.load(path)
    loaded = sktransfer.load(path, check_weights=False)
    assert loaded.n_features_out_ == ext.n_features_out_


def test_weights_file_is_stored_not_referenced(data, tmp_path):
    """An extractor on a fine-tuned weights file loads after the file is gone."""
    X, y = data
    ft = FineTunedClassifier(**TINY, max_epochs=1, random_state=0).fit(X, y)
    weights = ft.save_backbone(tmp_path / "ft.safetensors")
    ext = CNNFeatureExtractor(model=TINY["model"], weights=str(weights), input_size=32)
    codes = ext.fit_transform(X)
    path = sktransfer.save(ext, tmp_path / "ext.skt")
    weights.unlink()
    # the same weights, so the same graph: one path
    assert_same_path(sktransfer.load(path).transform(X), codes)


def test_save_refuses_what_load_could_not_rebuild(data, tmp_path):
    X, y = data
    ext = CNNFeatureExtractor(model=TinyNet(), weights=None, input_size=16).fit(X)
    with pytest.raises(TypeError, match="torch.nn.Module.*pass model as a string"):
        sktransfer.save(ext, tmp_path / "x.skt")
    with pytest.raises(NotFittedError):
        sktransfer.save(PrototypeClassifier(), tmp_path / "x.skt")
    assert not (tmp_path / "x.skt").exists()


def test_load_rejects_other_files(data, tmp_path):
    X, y = data
    pipe = MODELS["prototypes"]().fit(X, y)
    joblib.dump(pipe, tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="not a model file written by sktransfer"):
        sktransfer.load(tmp_path / "model.joblib")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sktransfer.load(tmp_path / "missing.skt")
    # joblib and pickle keep working as scikit-learn users expect
    for restored in (
        joblib.load(tmp_path / "model.joblib"),
        pickle.loads(pickle.dumps(pipe)),
    ):
        assert_same_path(restored.predict_proba(X), pipe.predict_proba(X))


def test_pickling_leaves_the_live_extractor_intact(data):
    X, _ = data
    ext = CNNFeatureExtractor(**TINY).fit(X)
    net = ext.backbone_
    pickle.dumps(ext)
    assert ext.backbone_ is net  # __getstate__ used to strip the live object


def test_fit_leaves_the_backbone_weights_as_loaded(data):
    """Tracing a named layer must not touch the network's state (digest stable)."""
    from sktransfer import load_backbone
    from sktransfer._cache import state_digest

    X, _ = data
    ext = CNNFeatureExtractor(**TINY, layer="blocks.1").fit(X)
    ext.transform(X)
    fresh, _ = load_backbone(TINY["model"], None)
    assert state_digest(ext.backbone_) == state_digest(fresh)
