"""compare_strategies: every strategy kind runs, codes are shared.

The strategies run the real estimators (FineTunedClassifier, PrototypeClassifier,
CosineSoftmaxClassifier) on the tiny backbone and tiny images; fine-tuning
strategies keep their registry settings except for 1-2 epochs.
"""

import dataclasses
import json

import numpy as np
import pytest
from conftest import STRATEGY_CTX, TINY
from sklearn.base import clone

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
    StrategyReport,
    compare_strategies,
)
from sktransfer._backbones import load_backbone
from sktransfer._training import resolve_trainable
from sktransfer.model_selection import (
    STRATEGIES,
    PixelFeatures,
    StrategyContext,
    auto_strategies,
    earlier_layer,
    finetune_input_size,
    top_blocks,
)

FINETUNE = ["finetune_head", "finetune_top2", "finetune_all", "scratch"]


def _short_training(mp):
    """Registry fine-tune factories, unchanged but for 2 epochs (1 head-only)."""
    for name in [*FINETUNE, "finetune_defaults"]:
        strat = STRATEGIES[name]

        def factory(ctx, _real=strat.factory):
            est = _real(ctx)
            return est.set_params(max_epochs=2, freeze_epochs=min(est.freeze_epochs, 1))

        mp.setitem(STRATEGIES, name, dataclasses.replace(strat, factory=factory))


# tracing is tested in test_extractor; eager extraction keeps these tests fast
pytestmark = pytest.mark.usefixtures("eager_extraction")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 120, size=(24, 16, 16, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"] * 12, dtype=object)
    X[y == "dog", 4:12, 4:12] = 255  # a learnable difference
    return X, y


@pytest.fixture(scope="module")
def counted_run(data):
    """One compare over all strategies, real estimators, extractor calls counted."""
    mp = pytest.MonkeyPatch()
    calls = {"fit": [], "transform": []}
    real_fit, real_transform = CNNFeatureExtractor.fit, CNNFeatureExtractor.transform

    def fit(self, X, y=None):
        calls["fit"].append((self.layer, self.pooling))
        return real_fit(self, X, y)

    def transform(self, X):
        calls["transform"].append((self.layer, self.pooling))
        return real_transform(self, X)

    mp.setattr(CNNFeatureExtractor, "fit", fit)
    mp.setattr(CNNFeatureExtractor, "transform", transform)
    _short_training(mp)
    try:
        X, y = data
        report = compare_strategies(
            X, y, strategies="all", cv=3, random_state=0, verbose=0, **TINY
        )
    finally:
        mp.undo()
    return report, calls


def test_all_kinds_run(counted_run, data):
    report, _ = counted_run
    status = {r["strategy"]: r["status"] for r in report.results_}
    # pixels, codes (two layers), few-shot heads on codes, fine-tuning on images:
    # "all" is every strategy serving single labels
    assert set(status) == {
        n for n, s in STRATEGIES.items() if "classification" in s.tasks
    }
    assert report.task_ == "classification" and report.scoring_ == "accuracy"
    for name, st in status.items():
        assert st == "ok", (name, st)
    kinds = {r["kind"] for r in report.results_}
    assert kinds == {"pixels", "codes", "finetune"}
    ok = report.results_
    assert [r["mean"] for r in ok] == sorted((r["mean"] for r in ok), reverse=True)
    assert report.best_name_ == ok[0]["strategy"]
    for r in ok:
        assert len(r["scores"]) == 3 and 0 <= r["mean"] <= 1
    layers = {r["strategy"]: r["layer"] for r in ok}
    assert layers["finetune_all"] == "images at 32 px"
    assert layers["prototype"] == layers["cosine_softmax"] == "penultimate"
    X, y = data
    # the winner takes images
    assert set(report.best_estimator_.predict(X[:5])) <= {"cat", "dog"}


CTX = StrategyContext(**STRATEGY_CTX)


@pytest.mark.parametrize("name", FINETUNE)
def test_finetune_factories_fit_the_real_class(name):
    est = STRATEGIES[name].factory(CTX)
    assert type(est) is FineTunedClassifier
    est._validate_params()  # every value is one the class accepts
    assert clone(est).get_params() == est.get_params()
    p = est.get_params()
    assert (p["model"], p["input_size"], p["random_state"]) == (TINY["model"], 24, 3)
    assert p["verbose"] == 0 and p["max_epochs"] >= 8
    body, _ = load_backbone(TINY["model"], None)
    n_all = len(list(body.parameters()))
    trained = resolve_trainable(body, p["train_layers"])
    if name == "finetune_head":
        assert p["train_layers"] == "head" and p["freeze_epochs"] == 0
        assert not trained
    elif name == "finetune_top2":
        # the last two blocks (not the last two single layers conv_head, bn2)
        assert p["train_layers"] == top_blocks(TINY["model"]) == "blocks.3"
        assert p["freeze_epochs"] > 0  # head first
        assert 0 < len(trained) < n_all
        assert any(n.startswith("blocks.3.") for n in trained)
        assert not any(n.startswith("blocks.2.") for n in trained)
    elif name == "finetune_all":
        assert p["train_layers"] == "all" and p["freeze_epochs"] > 0
        assert p["weights"] is None  # ctx's weights, here None
    else:  # scratch: random init, every layer at the head's rate
        assert p["weights"] is None and p["train_layers"] == "all"
        assert p["freeze_epochs"] == 0 and p["backbone_lr"] == p["lr"]


def test_finetune_uses_small_images_on_cpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert finetune_input_size(None) == 96
    assert finetune_input_size(40) == 40
    ctx = dataclasses.replace(CTX, weights="imagenet", input_size=None)
    assert STRATEGIES["finetune_all"].factory(ctx).input_size == 96
    assert STRATEGIES["finetune_all"].factory(ctx).weights == "imagenet"
    assert STRATEGIES["scratch"].factory(ctx).weights is None
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert finetune_input_size(None) is None


def test_fewshot_factories_fit_the_real_classes():
    proto = STRATEGIES["prototype"].factory(CTX)
    cos = STRATEGIES["cosine_softmax"].factory(CTX)
    assert type(proto) is PrototypeClassifier
    assert type(cos) is CosineSoftmaxClassifier
    for est in (proto, cos):
        est._validate_params()
    assert cos.unlabeled_label is None  # inductive: every CV label is a class


def test_codes_extracted_once_per_layer(counted_run):
    report, calls = counted_run
    earlier = earlier_layer(TINY["model"])
    want = sorted([(None, "avg"), (earlier, "avgmax")], key=str)
    assert sorted(calls["fit"], key=str) == want
    assert sorted(calls["transform"], key=str) == want
    assert set(report.info_["extractions"]) == {"penultimate", f"{earlier}/avgmax"}


def test_report_exports(counted_run, tmp_path):
    report, _ = counted_run
    assert isinstance(report, StrategyReport)
    text = str(report)
    assert "codes_svc" in text and "+-" in text and "best:" in text
    assert repr(report) == text
    d = json.loads(report.to_json(tmp_path / "r.json"))
    assert d["best"] == report.best_name_
    assert json.loads((tmp_path / "r.json").read_text())["info"]["n_splits"] == 3
    df = report.to_frame()
    assert list(df["strategy"]) == [r["strategy"] for r in report.results_]
    assert {"mean", "std", "fit_time", "predict_time"} <= set(df.columns)
    report.to_csv(tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().startswith("rank,strategy")
    import matplotlib

    matplotlib.use("Agg")
    ax = report.plot()
    assert len(ax.patches) == sum(r["status"] == "ok" for r in report.results_)
    ax.figure.savefig(tmp_path / "r.png")


def test_time_budget_skips_finetuning(data):
    X, y = data
    report = compare_strategies(
        X,
        y,
        strategies=["pixels_logreg", "finetune_head", "finetune_all"],
        cv=2,
        time_budget=0,
        verbose=0,
        **TINY,
    )
    status = {r["strategy"]: r["status"] for r in report.results_}
    assert status["pixels_logreg"] == "ok"
    assert status["finetune_head"].startswith("skipped (time budget")
    assert status["finetune_all"].startswith("skipped")


@pytest.mark.parametrize(
    "strategies, match",
    [("nope", "unknown strategy"), ([], "empty"), (["codes_svc"] * 2, "twice")],
)
def test_bad_strategy_names(data, strategies, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        compare_strategies(X, y, strategies=strategies, verbose=0)


def test_folds_reduced_for_small_classes(data, capsys):
    X, y = data
    report = compare_strategies(
        X[:6], y[:6], strategies=["pixels_logreg"], cv=5, verbose=1
    )
    assert report.info_["n_splits"] == 3
    assert "using 3 folds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 2 per class"):
        compare_strategies(X[:3], y[:3], strategies=["pixels_logreg"], verbose=0)


def test_auto_rule_of_thumb():
    small = auto_strategies(200, 10)
    assert small[:2] == ["codes_logreg", "earlier_svc"]
    # the package's own best joins at every size up to 500 per class
    assert [n for n in small if n.startswith("finetune")] == ["finetune_defaults"]
    assert "finetune_top2" in auto_strategies(5000, 10)
    assert "finetune_all" in auto_strategies(50000, 10)
    assert set(auto_strategies(50000, 10)) <= set(STRATEGIES)


def test_earlier_and_top_blocks_are_generic():
    assert earlier_layer(TINY["model"]) == "blocks.2"
    assert earlier_layer("resnet18") == "layer3"
    assert top_blocks("resnet18") == "layer3"
    assert top_blocks("resnet18", k=1) == "layer4"


def test_pixel_features_any_input():
    from PIL import Image

    imgs = [
        Image.new("RGBA", (20, 12)),
        Image.new("L", (8, 8)),
        Image.new("RGB", (5, 9)),
    ]
    out = PixelFeatures(size=6).fit_transform(imgs)
    assert out.shape == (3, 36) and out.dtype == np.float32


@pytest.mark.parametrize(
    "bad",
    [
        {"model": 3},
        {"cv": "five"},
        {"precision": "int8"},
        {"time_budget": -1},
        {"refit": "yes"},
        {"input_size": 0},
    ],
)
def test_bad_arguments_are_refused_before_any_work(bad, monkeypatch):
    """A bad argument used to fail every codes strategy on its own and crown the
    pixel baseline; now nothing runs at all."""
    import sktransfer._compare as compare

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(compare, "_check_data", no_work)
    X = np.zeros((20, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter"):
        compare.compare_strategies(X, np.arange(20) % 2, **bad)


# ------------------------------------------- the package's own defaults, costs
def test_defaults_strategy_is_the_estimators_defaults(monkeypatch):
    """finetune_defaults is FineTunedClassifier() whatever its defaults are: only
    the run's backbone, device, precision and seed reach it."""
    from sktransfer._report import RUN_PARAMS, settings_text

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    ctx = dataclasses.replace(CTX, input_size=None, task="multilabel")
    est = STRATEGIES["finetune_defaults"].factory(ctx)
    assert type(est) is FineTunedClassifier
    assert set(STRATEGIES["finetune_defaults"].tasks) == {
        "classification",
        "multilabel",
    }
    got, want = est.get_params(), FineTunedClassifier().get_params()
    assert {k for k in want if got[k] != want[k]} <= RUN_PARAMS
    # its own input size (the weights'), not the 96 px of the other strategies
    assert est.input_size is None
    assert STRATEGIES["finetune_head"].factory(ctx).input_size == 96
    assert settings_text(est) == "defaults"
    assert (est.model, est.random_state, est.verbose) == (TINY["model"], 3, 0)
    # an explicit input size applies to it as to every strategy
    assert STRATEGIES["finetune_defaults"].factory(CTX).input_size == 24
    # a changed default reaches it: no default value is copied into the strategy
    kwdefaults = FineTunedClassifier.__init__.__kwdefaults__
    monkeypatch.setitem(kwdefaults, "lr", 0.123)
    monkeypatch.setitem(kwdefaults, "max_epochs", 3)
    est = STRATEGIES["finetune_defaults"].factory(ctx)
    assert (est.lr, est.max_epochs) == (0.123, 3)


def test_auto_includes_the_defaults_up_to_500_per_class():
    for task in ("classification", "multilabel"):
        assert "finetune_defaults" in auto_strategies(5000, 10, task)
        assert "finetune_defaults" not in auto_strategies(5010, 10, task)
    assert "finetune_defaults" not in auto_strategies(50, 0, "regression")
    big = auto_strategies(50000, 10)
    assert "finetune_all" in big and "finetune_defaults" not in big


def test_report_rows_record_size_settings_and_time(counted_run, tmp_path):
    report, _ = counted_run
    rows = {r["strategy"]: r for r in report.results_}
    earlier = earlier_layer(TINY["model"])
    for name, r in rows.items():
        assert r["input_size"] == ("16" if name == "pixels_logreg" else "32"), name
        assert r["backbone"] == (
            None if name == "pixels_logreg" else "test_efficientnet"
        )
        want = r["fit_time"] + r["predict_time"] + r["extract_time"]
        assert r["time"] == pytest.approx(want) and r["time"] > 0
    # the fixture shortens training: its settings show that and nothing else
    assert rows["finetune_defaults"]["settings"] == "max_epochs=2"
    assert rows["finetune_head"]["settings"] == (
        "lr=0.001, max_epochs=2, train_layers='head'"
    )
    assert rows["codes_logreg"]["settings"] == (
        "penultimate: StandardScaler + LogisticRegression(C=0.5, max_iter=2000)"
    )
    assert rows["earlier_svc"]["settings"].startswith(f"{earlier}/avgmax: ")
    assert rows["pixels_logreg"]["settings"] == (
        "pixels 16x16: LogisticRegression(C=0.1, max_iter=2000)"
    )
    assert rows["prototype"]["settings"].startswith("penultimate: PrototypeClassifier")
    lines = str(report).splitlines()
    assert lines[0].endswith("backbone test_efficientnet (None) at 32 px")
    assert lines[1].split() == ["rank", "strategy", "score", "size", "time", "s"] + [
        "settings"
    ]
    assert any(
        line.split()[1] == "finetune_defaults" and line.endswith("max_epochs=2")
        for line in lines
    )
    report.to_csv(tmp_path / "r.csv")
    head = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert {"backbone", "input_size", "time", "settings"} <= set(head)


def test_each_strategy_runs_at_its_own_size(data, monkeypatch):
    """Without input_size, codes and the defaults use the weights' own size (the
    tiny model's 160 px) and the other fine-tuning strategies 96 px on a CPU."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    _short_training(monkeypatch)
    X, y = data
    report = compare_strategies(
        X[:12],
        y[:12],
        model=TINY["model"],
        weights=None,
        strategies=["codes_logreg", "finetune_head", "finetune_defaults"],
        cv=2,
        random_state=0,
    )
    sizes = {r["strategy"]: r["input_size"] for r in report.results_}
    assert sizes == {"codes_logreg": "160", "finetune_head": "96"} | {
        "finetune_defaults": "160"
    }
    assert report.info_["input_size"] is None
    assert " px" not in str(report).splitlines()[0]  # the rows say the sizes


# ------------------------------------------------------ backbones compared
TWO = [TINY["model"], "efficientnet_lite0"]


@pytest.fixture(scope="module")
def two_backbones(data):
    """codes strategies and the pixels on two backbones, extractor fits counted."""
    mp = pytest.MonkeyPatch()
    fits = []
    real_fit = CNNFeatureExtractor.fit

    def fit(self, X, y=None):
        fits.append((self.model, self.layer))
        return real_fit(self, X, y)

    mp.setattr(CNNFeatureExtractor, "fit", fit)
    try:
        X, y = data
        report = compare_strategies(
            X,
            y,
            model=TWO,
            weights=None,
            input_size=32,
            strategies=["codes_logreg", "prototype", "earlier_svc", "pixels_logreg"],
            cv=2,
            random_state=0,
        )
    finally:
        mp.undo()
    return report, fits


def test_two_backbones_one_ranked_report(two_backbones, data, tmp_path):
    report, fits = two_backbones
    pairs = {(r["strategy"], r["backbone"]) for r in report.results_}
    names = ["test_efficientnet", "efficientnet_lite0"]
    codes = {
        (s, b) for s in ("codes_logreg", "prototype", "earlier_svc") for b in names
    }
    assert pairs == codes | {("pixels_logreg", None)}  # the pixels once
    assert all(r["status"] == "ok" for r in report.results_), report
    means = [r["mean"] for r in report.results_]
    assert means == sorted(means, reverse=True)
    # codes extracted once per (backbone, layer): penultimate and earlier each
    earlier = {TINY["model"]: earlier_layer(TINY["model"])}
    earlier["efficientnet_lite0"] = earlier_layer("efficientnet_lite0")
    want = [(m, layer) for m in TWO for layer in (None, earlier[m])]
    assert sorted(fits, key=str) == sorted(want, key=str)
    assert len(report.info_["extractions"]) == 4
    assert report.info_["models"] == names
    # the winner is refit on its own pair
    best = report.results_[0]
    assert (report.best_name_, report.best_backbone_) == (
        best["strategy"],
        best["backbone"],
    )
    if best["backbone"] is not None:
        cnn = report.best_estimator_.named_steps["cnn"]
        assert cnn.model == TWO[names.index(best["backbone"])]
        assert cnn.layer == (
            None if best["strategy"] != "earlier_svc" else earlier[cnn.model]
        )
    X, _ = data
    assert set(report.best_estimator_.predict(X[:4])) <= {"cat", "dog"}
    text = str(report)
    assert text.splitlines()[1].split()[:3] == ["rank", "strategy", "backbone"]
    assert "backbones test_efficientnet, efficientnet_lite0" in text
    import matplotlib

    matplotlib.use("Agg")
    ax = report.plot()
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert "prototype (efficientnet_lite0)" in labels and "pixels_logreg" in labels


@pytest.mark.parametrize(
    "model, err, match",
    [
        ([TINY["model"], "nonet"], ValueError, r"backbone 'nonet' of model=.*unknown"),
        ([], ValueError, "empty list"),
        ([TINY["model"], TINY["model"]], ValueError, "twice"),
        ([TINY["model"], 3], TypeError, "model lists 3"),
        ("nonet", ValueError, "unknown model 'nonet'"),
    ],
)
def test_bad_backbone_lists_fail_before_any_work(model, err, match, monkeypatch):
    import sktransfer._compare as compare

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the backbones were checked")

    monkeypatch.setattr(compare, "_check_data", no_work)
    X = np.zeros((8, 16, 16, 3), np.uint8)
    with pytest.raises(err, match=match):
        compare.compare_strategies(X, np.arange(8) % 2, model=model, weights=None)
