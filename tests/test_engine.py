"""The inference engines: ONNX Runtime graphs exported from torch, and torch itself.

What is shown here: the exported graph gives the eager network's results (codes of
any layers and pooling, a fine-tuned net's probabilities); graphs are cached on disk
and a second process does not export again; every fallback warns; every ``fit``
drops the previous model's engine; extraction runs in eval mode whatever the
module's flag; a pickled extractor checks its rebuilt weights; ``precision="auto"``
stays fp32 whatever the CPU detection says.
"""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    TINY,
    TINY_MODEL,
    TinyNet,
    assert_close_paths,
    assert_far_apart,
    assert_same_path,
)

from sktransfer import CNNFeatureExtractor, FineTunedClassifier, load_backbone
from sktransfer import _engine as engine_mod
from sktransfer._backbones import strip_head
from sktransfer._images import Preprocessor, check_images
from sktransfer._runtime import clear_caches, force_cpu_bf16, resolve_engine

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def onnx_dir(tmp_path_factory):
    """Exported graphs of this module go to one temporary cache directory."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("onnx-cache")
    mp.setenv("SKTRANSFER_CACHE_DIR", str(path))
    mp.delenv("SKTRANSFER_ENGINE", raising=False)
    yield path / "onnx"
    mp.undo()


@pytest.fixture
def fresh_caches(monkeypatch, tmp_path):
    """An empty graph directory, and no engine, session or remembered failure
    from earlier tests (nor left for later ones)."""
    monkeypatch.setenv("SKTRANSFER_CACHE_DIR", str(tmp_path))
    clear_caches()
    yield tmp_path / "onnx"
    clear_caches()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)


# ------------------------------------------------------------- agreement with eager
@pytest.mark.parametrize(
    "layer, pooling",
    [
        (None, "avg"),
        (["blocks.1", "blocks.3"], "avg"),
        ("blocks.2", "avgmax"),
        (["blocks.0", "blocks.2"], None),
    ],
)
def test_onnx_codes_match_torch(images, layer, pooling):
    kw = {**TINY, "layer": layer, "pooling": pooling}
    fast = CNNFeatureExtractor(**kw).fit(images)
    slow = CNNFeatureExtractor(**kw, engine="torch").fit(images)
    assert fast._get_engine().kind == "onnxruntime"
    assert slow._get_engine().kind == "torch"
    Z = fast.transform(images)
    ref = slow.transform(images)
    assert Z.shape == ref.shape == (len(images), fast.n_features_out_)
    assert Z.dtype == np.float32
    assert_close_paths(Z, ref)


def test_onnx_penultimate_codes_match_a_plain_loop(images):
    ext = CNNFeatureExtractor(**TINY).fit(images)
    Z = ext.transform(images)
    net, _ = load_backbone(TINY_MODEL, None)
    strip_head(net)
    images_ = check_images(images)
    x = Preprocessor(ext.preprocessing_)(images_.get_batch(range(len(images))))
    with torch.inference_mode():
        ref = net.eval()(x).numpy()
    assert ext._get_engine().kind == "onnxruntime"
    assert_close_paths(Z, ref)


def test_onnx_batch_invariance(images):
    ext = CNNFeatureExtractor(**TINY, batch_size=7).fit(images)
    Z = ext.transform(images)
    for i in (0, 6, 19):  # another batch size: maybe other kernels
        one = ext.transform(images[i : i + 1])
        assert_close_paths(one, Z[i : i + 1], scale=np.abs(Z).max())


@pytest.fixture(scope="module")
def ft_data():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(300, 16, 16, 3), dtype=np.uint8)
    y = np.arange(300) % 3
    X[y == 1, :8] //= 3  # something to learn
    return X, y


FT = {**TINY, "input_size": 16, "max_epochs": 1, "batch_size": 64}


def test_finetuned_predict_proba_onnx_matches_torch(ft_data):
    X, y = ft_data
    clf = FineTunedClassifier(**FT, engine="onnxruntime", random_state=0).fit(X, y)
    P = clf.decision_function(X[:50])
    assert clf._derived()["engine"].kind == "onnxruntime"
    clf.set_params(engine="torch")  # takes effect without a refit
    ref = clf.decision_function(X[:50])
    assert clf._derived()["engine"].kind == "torch"
    assert_close_paths(P, ref)
    # the comparison is not between constants
    assert_far_apart(ref, np.broadcast_to(ref[:1], ref.shape))
    restored = pickle.loads(pickle.dumps(clf.set_params(engine="onnxruntime")))
    assert "engine" not in restored._derived()  # engines are not pickled
    assert_same_path(restored.decision_function(X[:50]), P)  # the same graph


def test_finetuned_auto_exports_only_for_large_predictions(ft_data):
    X, y = ft_data
    clf = FineTunedClassifier(**FT, random_state=0).fit(X, y)
    clear_caches()  # no stored activations: every image runs the whole network
    small = clf.decision_function(X[:10])
    assert clf._derived()["engine"].kind == "torch"
    big = clf.decision_function(X)  # 300 >= 256 images: ONNX Runtime from now on
    assert clf._derived()["engine"].kind == "onnxruntime"
    assert_close_paths(big[:10], small, scale=np.abs(big).max())


# --------------------------------------------------------------------- stale state
def test_refit_drops_the_previous_models_engine(ft_data):
    """fit, predict on >= 256 images, refit: the new model predicts, not the old."""
    X, y = ft_data
    clf = FineTunedClassifier(**FT, random_state=0).fit(X, y)
    clear_caches()  # no stored activations: every image runs the whole network
    first = clf.decision_function(X)
    assert clf._derived()["engine"].kind == "onnxruntime"
    clf.set_params(lr=0.5, random_state=1).fit(X, y)
    assert "engine" not in clf._derived()
    clear_caches()
    second = clf.decision_function(X)
    assert_far_apart(first, second)
    # and the new engine is right about the new model
    ref = clf.set_params(engine="torch").decision_function(X)
    assert_close_paths(second, ref)


def test_reset_deletes_every_derived_attribute(images):
    ext = CNNFeatureExtractor(**TINY).fit(images)
    ext.transform(images[:2])
    derived = ext._derived()
    assert "engine" in derived and "_weights_digest" in vars(ext)
    ext._some_future_cache = object()
    ext.set_output(transform="default")
    ext.set_params(layer="blocks.1").fit(images)
    assert "_some_future_cache" not in vars(ext)
    assert ext._derived() is not derived and "engine" not in ext._derived()
    assert ext.layers_ == ["blocks.1"]
    assert ext.transform(images[:2]).shape[1] == ext.n_features_out_
    assert "_sklearn_output_config" in vars(ext)  # configuration is not state


# ----------------------------------------------------------------------- eval mode
@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
def test_extraction_runs_in_eval_mode_whatever_the_flag(images, engine):
    kw = {"model": TinyNet(), "weights": None, "input_size": 16, "engine": engine}
    clean = CNNFeatureExtractor(**kw).fit(images).transform(images)
    ext = CNNFeatureExtractor(**kw).fit(images)
    # eval mode whatever the flag: the same engine on the same network, one path
    ext.backbone_.train()  # before the engine exists
    assert_same_path(ext.transform(images), clean)
    ext.backbone_.train()  # after
    assert_same_path(ext.transform(images), clean)
    # train-mode BatchNorm would have changed the codes: the test can fail
    with torch.no_grad():
        ext.backbone_.train()
        x = torch.randn(4, 3, 16, 16)
        train_out = ext.backbone_.features(x)
        ext.backbone_.eval()
        assert_far_apart(train_out, ext.backbone_.features(x))


# ---------------------------------------------------------------------- fallbacks
def test_export_failure_falls_back_with_a_warning(images, monkeypatch, fresh_caches):
    def broken(*args, **kwargs):
        raise RuntimeError("boom: unsupported operator")

    monkeypatch.setattr(engine_mod, "_export", broken)
    ref = CNNFeatureExtractor(**TINY, engine="torch").fit(images).transform(images)
    ext = CNNFeatureExtractor(**TINY).fit(images)
    with pytest.warns(UserWarning, match="exporting the network to ONNX failed.*boom"):
        Z = ext.transform(images)
    assert ext._get_engine().kind == "torch"
    assert_same_path(Z, ref)  # both torch: one path


def test_disagreeing_graph_falls_back_with_a_warning(images, fresh_caches):
    class SneakyPool(torch.nn.AdaptiveAvgPool2d):
        """Computes something else once exported: the check must catch it."""

        def forward(self, x):
            out = super().forward(x)
            return out + 1.0 if torch.compiler.is_exporting() else out

    net = TinyNet()
    net.pool = SneakyPool(1)
    kw = {"model": net, "weights": None, "input_size": 16}
    ext = CNNFeatureExtractor(**kw).fit(images)
    with pytest.warns(UserWarning, match="disagrees with the network"):
        Z = ext.transform(images)
    assert ext._get_engine().kind == "torch"
    ref = CNNFeatureExtractor(**kw, engine="torch").fit(images).transform(images)
    assert_same_path(Z, ref)  # both torch: one path


def test_missing_onnxruntime_falls_back_with_a_warning(
    images, monkeypatch, fresh_caches
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    ext = CNNFeatureExtractor(**TINY).fit(images)
    with pytest.warns(UserWarning, match="onnxruntime is not installed"):
        ext.transform(images[:2])
    assert ext._get_engine().kind == "torch"


def test_engine_and_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_engine("auto", cpu, None) == "onnxruntime"
    assert resolve_engine("auto", cpu, torch.bfloat16) == "torch"
    assert resolve_engine("auto", torch.device("cuda"), None) == "torch"
    assert resolve_engine("torch", cpu, None) == "torch"
    with pytest.raises(ValueError, match="engine='onnxruntime' runs fp32"):
        resolve_engine("onnxruntime", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="engine='onnxruntime' runs fp32"):
        CNNFeatureExtractor(**TINY, engine="onnxruntime", precision="bf16").fit(
            np.zeros((2, 8, 8, 3), np.uint8)
        )
    with pytest.raises(ValueError, match="engine"):
        CNNFeatureExtractor(**TINY, engine="tensorrt").fit(
            np.zeros((2, 8, 8, 3), np.uint8)
        )


# --------------------------------------------------------------- the on-disk cache
_COUNT_EXPORTS = """
import numpy as np
from sktransfer import CNNFeatureExtractor
from sktransfer import _engine
X = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
ext = CNNFeatureExtractor(model="timm/test_efficientnet", weights=None,
                          input_size=24, layer="blocks.2", pooling="max").fit(X)
np.save({out!r}, ext.transform(X))
print("kind", ext._get_engine().kind, "exports", len(_engine.EXPORTS))
"""


def test_exported_graph_is_reused_by_another_process(tmp_path):
    env = {
        **os.environ,
        "SKTRANSFER_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("SKTRANSFER_ENGINE", None)
    outs = []
    for run in range(2):
        out = tmp_path / f"codes{run}.npy"
        code = textwrap.dedent(_COUNT_EXPORTS.format(out=str(out)))
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(done.stdout.split()[-4:])
    assert outs[0] == ["kind", "onnxruntime", "exports", "1"]
    assert outs[1] == ["kind", "onnxruntime", "exports", "0"]
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    # one graph, the same thread count: one path
    assert_same_path(np.load(tmp_path / "codes0.npy"), np.load(tmp_path / "codes1.npy"))


def test_damaged_cached_graph_is_exported_again(images, fresh_caches):
    ext = CNNFeatureExtractor(**TINY, layer="blocks.1").fit(images)
    ref = ext.transform(images)
    path = ext._get_engine().path
    assert path.parent == fresh_caches and path.is_file()
    path.write_bytes(b"not an onnx graph")
    clear_caches()
    before = len(engine_mod.EXPORTS)
    again = CNNFeatureExtractor(**TINY, layer="blocks.1").fit(images)
    assert_close_paths(again.transform(images), ref)  # a graph exported again
    assert len(engine_mod.EXPORTS) == before + 1
    assert again._get_engine().kind == "onnxruntime"


# ------------------------------------------------------------------------ pickling
def test_pickled_extractor_checks_its_rebuilt_weights(images, tmp_path):
    net, _ = load_backbone(TINY_MODEL, None)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    ext = CNNFeatureExtractor(model=TINY_MODEL, weights=path, input_size=32)
    Z = ext.fit(images).transform(images)
    blob = pickle.dumps(ext)
    # Same file: rebuilt, checked, same codes (the same graph: one path).
    assert_same_path(pickle.loads(blob).transform(images), Z)
    # The file changes under the pickle (as an upgrade changes "imagenet").
    changed = copy.deepcopy(state)
    key = next(k for k, v in changed.items() if v.is_floating_point() and v.ndim == 4)
    changed[key] += 0.5
    torch.save(changed, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    restored = pickle.loads(blob)
    with pytest.raises(RuntimeError, match="not those this CNNFeatureExtractor"):
        restored.transform(images)


# ----------------------------------------------------------------------- precision
@pytest.mark.parametrize("fast_bf16", [True, False])
def test_precision_auto_is_fp32_and_bf16_is_explicit(images, fast_bf16):
    ref = (
        CNNFeatureExtractor(**TINY, precision="fp32", engine="torch")
        .fit(images)
        .transform(images)
    )
    with force_cpu_bf16(fast_bf16):
        auto = CNNFeatureExtractor(**TINY).fit(images)
        policy = auto._run_on()
        assert (policy.device, policy.autocast) == (torch.device("cpu"), None)
        assert auto._get_engine().kind == "onnxruntime"
        assert_close_paths(auto.transform(images), ref)
        if fast_bf16:
            bf16 = CNNFeatureExtractor(**TINY, precision="bf16").fit(images)
        else:
            with pytest.warns(UserWarning, match="emulated"):
                bf16 = CNNFeatureExtractor(**TINY, precision="bf16").fit(images)
        assert bf16._run_on().autocast is torch.bfloat16
        engine = bf16._get_engine()
        assert (engine.kind, engine.autocast) == ("torch", torch.bfloat16)
        Z = bf16.transform(images)
    assert Z.dtype == np.float32
    l2 = np.linalg.norm(Z - ref) / np.linalg.norm(ref)
    assert 0 < l2 < 0.1  # bf16 does change the codes, within its precision
