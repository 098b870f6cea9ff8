"""FineTunedClassifier: labels, freezing, early stopping, regularization, copies."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, TinyNet
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from sktransfer import CNNFeatureExtractor, FineTunedClassifier
from sktransfer._backbones import load_backbone, strip_head
from sktransfer.callbacks import WeightTracker

FAST = {
    "model": TINY_MODEL,
    "weights": None,
    "input_size": 16,
    "max_epochs": 2,
    "batch_size": 8,
    "random_state": 0,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # 2 shared cores: intra-op threads only add contention for these tiny nets.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    y = np.arange(24) % 2
    X[y == 1, :8] = 255  # a learnable signal: bright top half
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    labels = np.array(["cat", "dog"])[y]
    return FineTunedClassifier(**FAST).fit(X, labels)


class Snapshot(Callback):
    """Copies the module's state after every epoch."""

    def on_train_begin(self, net, **kwargs):
        self.states = [_state(net.module_)]

    def on_epoch_end(self, net, **kwargs):
        self.states.append(_state(net.module_))


class InterruptAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a, b, buffers=True):
    assert a.keys() == b.keys()
    for k in a:
        if buffers or not k.endswith(_BN_BUFFERS):
            assert torch.equal(a[k], b[k]), k


# fit recomputes trained BatchNorms' statistics for the restored weights
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _pristine_body():
    net, _ = load_backbone(TINY_MODEL, None)
    strip_head(net)
    return net.state_dict()


# ------------------------------------------------------------------- labels / API
def test_string_labels_and_outputs(fitted, data):
    X, _ = data
    assert fitted.classes_.tolist() == ["cat", "dog"]
    pred = fitted.predict(X)
    assert set(pred) <= {"cat", "dog"}
    proba = fitted.predict_proba(X)
    assert proba.shape == (24, 2)
    assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert_array_equal(pred, fitted.classes_[proba.argmax(1)])
    assert fitted.decision_function(X).shape == (24,)
    assert 0 <= fitted.score(X, np.array(["cat", "dog"])[data[1]]) <= 1
    assert fitted.n_epochs_ == 2 and len(fitted.history_) == 2


def test_multiclass_grayscale_and_flat_input():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(18, 12, 12), dtype=np.uint8)
    y = np.array([3, 7, 9] * 6)
    clf = FineTunedClassifier(**FAST).fit(X, y)
    assert clf.decision_function(X).shape == (18, 3)
    assert set(clf.predict(X)) <= {3, 7, 9}
    flat = FineTunedClassifier(**FAST, input_shape=(12, 12)).fit(X.reshape(18, -1), y)
    assert flat.n_features_in_ == 144
    assert_allclose(
        flat.predict_proba(X.reshape(18, -1)), clf.predict_proba(X), atol=1e-6
    )
    with pytest.raises(ValueError, match="features"):
        flat.predict(X.reshape(18, -1)[:, :100])


def test_class_weight_equals_sample_weight(data):
    X, y = data
    cw = {0: 1.0, 1: 5.0}
    a = FineTunedClassifier(**FAST, class_weight=cw).fit(X, y)
    b = FineTunedClassifier(**FAST).fit(X, y, sample_weight=np.where(y == 1, 5.0, 1.0))
    assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-6)
    plain = FineTunedClassifier(**FAST).fit(X, y)
    # Up-weighting class 1 raises its probability everywhere.
    assert a.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean()
    FineTunedClassifier(**FAST, class_weight="balanced").fit(X, y)


def test_single_class_and_bad_params(data):
    X, y = data
    with pytest.raises(ValueError, match="single class"):
        FineTunedClassifier(**FAST).fit(X, np.zeros(24))
    with pytest.raises(ValueError, match="train_layers"):
        FineTunedClassifier(**FAST, train_layers="nope").fit(X, y)
    with pytest.raises(ValueError, match="stages"):
        FineTunedClassifier(**FAST, train_layers=99).fit(X, y)
    with pytest.raises(ValueError, match="augment"):
        FineTunedClassifier(**FAST, augment="wild").fit(X, y)


# ------------------------------------------------------------------------ freezing
def test_head_only_leaves_backbone_bit_identical(data):
    X, y = data
    clf = FineTunedClassifier(**FAST, train_layers="head", lr=0.05, dropout=0.2)
    clf.fit(X, y)
    body = clf.net_.module_.body.state_dict()
    _assert_same_state(body, _pristine_body())  # BN running stats included
    assert clf.n_trainable_params_ == clf.net_.module_.head.weight.numel() + 2
    # Only trainable tensors reach the optimizer.
    in_opt = {id(p) for g in clf.net_.optimizer_.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in clf.net_.module_.head.parameters()}
    # Contrast: training BatchNorm changes its statistics.
    bn = FineTunedClassifier(**FAST, train_layers="head", bn="train").fit(X, y)
    moved = bn.net_.module_.body.state_dict()
    assert not torch.equal(moved["bn1.running_mean"], body["bn1.running_mean"])


@pytest.mark.parametrize("train_layers", [1, "blocks.3"])
def test_partial_unfreeze(data, train_layers):
    X, y = data
    clf = FineTunedClassifier(**FAST, train_layers=train_layers, lr=0.05).fit(X, y)
    after, before = clf.net_.module_.body.state_dict(), _pristine_body()
    # The stem (and its BN statistics) is frozen; the last stage is trained.
    assert torch.equal(after["conv_stem.weight"], before["conv_stem.weight"])
    assert torch.equal(after["bn1.running_var"], before["bn1.running_var"])
    assert not torch.equal(after["bn2.weight"], before["bn2.weight"])


def test_freeze_epochs_trains_head_first(data):
    X, y = data
    snap = Snapshot()
    FineTunedClassifier(**FAST, freeze_epochs=1, lr=0.05, callbacks=[snap]).fit(X, y)
    s0, s1, s2 = snap.states
    body = [k for k in s0 if k.startswith("body.")]
    assert all(torch.equal(s0[k], s1[k]) for k in body)  # epoch 1: head only
    assert not torch.equal(s0["head.weight"], s1["head.weight"])
    assert not all(torch.equal(s1[k], s2[k]) for k in body)  # epoch 2: all


def test_adabn_reestimates_statistics(data):
    X, y = data
    clf = FineTunedClassifier(**FAST, train_layers="head", bn="adabn").fit(X, y)
    after, before = clf.net_.module_.body.state_dict(), _pristine_body()
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert torch.equal(after["conv_stem.weight"], before["conv_stem.weight"])


# ------------------------------------------------------------------ early stopping
def test_early_stopping_stops_on_plateau_and_restores_best(data):
    X, y = data
    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FAST, "max_epochs": 10},
        lr=1e-9,
        early_stopping=True,
        validation_fraction=0.25,
        patience=2,
        callbacks=[snap],
    ).fit(X, y)
    assert clf.n_epochs_ == 3 < 10  # best at epoch 1, then 2 epochs without gain
    assert clf.best_epoch_ == 1
    _assert_same_state(
        _state(clf.net_.module_), snap.states[clf.best_epoch_], buffers=False
    )

    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FAST, "max_epochs": 5},
        lr=0.02,
        early_stopping=True,
        validation_fraction=0.25,
        monitor="valid_acc",
        callbacks=[snap],
    ).fit(X, y)
    best = clf.best_epoch_
    acc = clf.history_[:, "valid_acc"]
    assert acc[best - 1] == max(acc[: clf.n_epochs_])
    _assert_same_state(_state(clf.net_.module_), snap.states[best], buffers=False)


def test_keyboard_interrupt_keeps_best_weights(data):
    X, y = data
    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FAST, "max_epochs": 6},
        lr=0.02,
        early_stopping=True,
        validation_fraction=0.25,
        callbacks=[snap, InterruptAt(3)],
    )
    with pytest.warns(UserWarning, match="interrupted after 2 complete"):
        clf.fit(X, y)
    assert clf.best_epoch_ in (1, 2)
    _assert_same_state(
        _state(clf.net_.module_), snap.states[clf.best_epoch_], buffers=False
    )


def test_nan_loss_names_the_learning_rate(data):
    X, y = data
    clf = FineTunedClassifier(
        **{**FAST, "max_epochs": 4}, optimizer="sgd", lr=1e12, scheduler=None
    )
    with pytest.raises(ValueError, match=r"lr=1e\+12"):
        clf.fit(X, y)


# -------------------------------------------------------------- regularization
def _weights(clf):
    return [p.detach() for p in clf.net_.module_.parameters() if p.ndim > 1]


def test_weight_decay_shrinks_and_l1_sparsifies(data):
    X, y = data
    kw = {**FAST, "max_epochs": 3, "lr": 0.03, "backbone_lr": 0.03}
    kw["train_layers"] = "all"
    none = FineTunedClassifier(**kw, weight_decay=0.0).fit(X, y)
    l2 = FineTunedClassifier(**kw, weight_decay=5.0).fit(X, y)
    norm = [sum(float((w**2).sum()) for w in _weights(c)) for c in (none, l2)]
    assert norm[1] < 0.9 * norm[0]

    tracker = WeightTracker(tol=1e-3)
    l1 = FineTunedClassifier(**kw, weight_decay=0.0, l1=1e-3, callbacks=[tracker]).fit(
        X, y
    )
    zeros_l1 = sum(l1.history_[-1, "near_zero"].values())
    near = [sum(int((w.abs() < 1e-3).sum()) for w in _weights(c)) for c in (none, l1)]
    assert near[1] > 2 * near[0]
    assert zeros_l1 == near[1]
    exact = [sum(int((w == 0).sum()) for w in _weights(c)) for c in (none, l2, l1)]
    assert exact[0] == exact[1] == 0 < 500 < exact[2]  # L2 shrinks; only L1 zeroes


def test_weight_tracker_records_per_layer(data):
    X, y = data
    clf = FineTunedClassifier(
        **FAST, train_layers="all", callbacks=[WeightTracker(depth=3)]
    ).fit(X, y)
    change = clf.history_[:, "weight_change"]
    assert len(change) == 2
    assert {"body.blocks.0", "body.conv_stem", "head.weight"} - set(change[0]) == {
        "head.weight"
    }
    assert all(v > 0 for v in change[0].values())
    sizes = clf.history_[0, "n_weights"]
    assert sizes["head"] == clf.net_.module_.head.weight.numel()
    frozen = FineTunedClassifier(
        **FAST, train_layers="head", callbacks=[WeightTracker()]
    ).fit(X, y)
    assert list(frozen.history_[-1, "weight_change"]) == ["head"]


# -------------------------------------------------------- reproducibility / copies
def test_clone_after_fit_starts_clean(data):
    X, y = data
    X2, y2 = X[::-1].copy(), 1 - y[::-1]
    first = FineTunedClassifier(**FAST, lr=0.05).fit(X, y)
    refit = clone(first).fit(X2, y2)
    fresh = FineTunedClassifier(**FAST, lr=0.05).fit(X2, y2)
    assert_array_equal(refit.predict_proba(X), fresh.predict_proba(X))
    again = first.fit(X2, y2)  # refitting the same object starts clean too
    assert_array_equal(again.predict_proba(X), fresh.predict_proba(X))


def test_prediction_is_batch_invariant(fitted, data):
    """An image's outputs do not depend on the other images predicted with it:
    shuffled, alone or in a small batch they agree to float32 noise (CPU
    convolution kernels are picked by batch size and thread count, and round
    differently: up to ~5e-6 apart)."""
    X = data[0][:21]  # batch_size=8: batches of 8, 8 and 5
    D = fitted.decision_function(X)
    perm = np.random.default_rng(1).permutation(len(X))
    tol = {"atol": 2e-5, "rtol": 1e-5}  # the LP head's logits reach ~10
    np.testing.assert_allclose(fitted.decision_function(X[perm]), D[perm], **tol)
    for i in (0, 7, 20):
        one = fitted.decision_function(X[i : i + 1])
        np.testing.assert_allclose(one, D[i : i + 1], **tol)
    np.testing.assert_allclose(fitted.decision_function(X[3:6]), D[3:6], **tol)
    assert fitted.decision_function(X[:3]).dtype == np.float64


def test_pickle_round_trip(fitted, data):
    X, _ = data
    blob = pickle.dumps(fitted)
    restored = pickle.loads(blob)
    assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    # No optimizer moments, datasets or validation split inside.
    assert len(blob) < 3 * 4 * sum(p.numel() for p in fitted.net_.module_.parameters())


def test_traced_prediction_matches_eager(fitted, data, monkeypatch):
    import sktransfer._finetune as ft

    X, _ = data
    eager = fitted.predict_proba(X)
    monkeypatch.setattr(ft, "_TRACE_MIN_IMAGES", 1)
    assert_allclose(fitted.predict_proba(X), eager, atol=1e-5)
    assert fitted._traced_net is not None
    restored = pickle.loads(pickle.dumps(fitted))  # the graph is not pickled
    assert "_traced_net" not in vars(restored)
    assert_allclose(restored.predict_proba(X), eager, atol=1e-5)


def test_grid_search_parallel(data):
    X, y = data
    grid = GridSearchCV(
        FineTunedClassifier(**{**FAST, "max_epochs": 1}),
        {"train_layers": ["head", "all"], "lr": [1e-3, 1e-2]},
        cv=2,
        n_jobs=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_estimator_.predict(X).shape == (24,)


# ---------------------------------------------------------- heads / augmentation
@pytest.mark.parametrize(
    "params",
    [
        {"head": "cosine", "head_init": "class_means"},
        {"head_init": "class_means", "augment": "standard"},
        {"head_init": "zeros", "augment": ["translate", "rotate"], "scheduler": None},
        {"head_init": "normal", "augment": lambda t: t.flip(-1)},
        {
            "model": "timm/test_resnet",  # test_efficientnet has no residual block
            "drop_path": 0.2,
            "label_smoothing": 0.1,
            "scheduler": "onecycle",
        },
        {"optimizer": "sgd", "bn": "eval", "verbose": 1},
    ],
)
def test_options_train(data, params, capsys):
    X, y = data
    clf = FineTunedClassifier(**{**FAST, **params}).fit(X, y)
    assert clf.predict_proba(X).shape == (24, 2)


def test_class_means_init_matches_prototypes(data):
    X, y = data
    clf = FineTunedClassifier(
        **{**FAST, "max_epochs": 1},
        train_layers="head",
        head_init="class_means",
        lr=1e-12,
    ).fit(X, y)
    w = clf.net_.module_.head.weight.detach()
    assert_allclose(w.norm(dim=1).numpy(), 1, rtol=1e-4)


def test_drop_path_unsupported_and_user_module(data):
    X, y = data
    with pytest.raises(ValueError, match="drop_path"):
        FineTunedClassifier(**{**FAST, "model": TinyNet()}, drop_path=0.1).fit(X, y)
    clf = FineTunedClassifier(**{**FAST, "model": TinyNet()}).fit(X, y)
    assert clf.predict(X).shape == (24,)


def test_drop_path_rates_and_silent_no_op_warning(data):
    """Only blocks with a shortcut get a rate (the deepest exactly drop_path), and
    a drop_path that no trained block can apply says so instead of doing nothing."""
    from timm.layers import DropPath

    X, y = data
    for model in ("timm/test_resnet", "timm/test_vit"):
        clf = FineTunedClassifier(**{**FAST, "model": model}, drop_path=0.2).fit(X, y)
        rates = [
            m.drop_prob
            for m in clf.net_.module_.body.modules()
            if isinstance(m, DropPath)
        ]
        assert rates and max(rates) == pytest.approx(0.2), model
    with pytest.raises(ValueError, match="no residual blocks"):
        FineTunedClassifier(**FAST, drop_path=0.2).fit(X, y)  # no shortcut at all
    with pytest.warns(UserWarning, match="drop_path=0.2 has no effect"):
        FineTunedClassifier(
            **{**FAST, "model": "timm/test_resnet"}, drop_path=0.2, train_layers="head"
        ).fit(X, y)


# --------------------------------------------------------------------- export
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_backbone_gives_finetuned_codes(data, tmp_path, suffix):
    X, y = data
    clf = FineTunedClassifier(**FAST, lr=0.05, backbone_lr=0.05).fit(X, y)
    path = clf.save_backbone(tmp_path / f"tuned{suffix}")
    ext = CNNFeatureExtractor(model=TINY_MODEL, weights=str(path), input_size=16)
    codes = ext.fit_transform(X)
    module = clf.net_.module_.eval()
    with torch.no_grad():
        x = ext.preprocessing_  # same preprocessing as the classifier
        assert x.input_size == clf.preprocessing_.input_size
        from sktransfer._images import Preprocessor, check_images

        batch = Preprocessor(clf.preprocessing_)(check_images(X).get_batch(range(24)))
        want = module.features(batch).numpy()
    assert_allclose(codes, want, rtol=1e-3, atol=1e-4)
    pristine = CNNFeatureExtractor(model=TINY_MODEL, weights=None, input_size=16)
    assert not np.allclose(pristine.fit_transform(X), codes, atol=1e-3)
    # ... and a new classifier can start from the fine-tuned weights.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FineTunedClassifier(**{**FAST, "weights": str(path)}).fit(X, y)


def test_trained_batchnorm_statistics_are_exact_after_fit(data):
    # From random weights, two training steps leave moving averages far from the
    # data's statistics; fit must end with exact averages for the final weights.
    X, y = data
    clf = FineTunedClassifier(
        **{**FAST, "max_epochs": 1, "batch_size": 12},
        train_layers="all",
        early_stopping=False,
        augment=None,
    ).fit(X, y)
    body = clf.net_.module_.body
    bn = body.bn1  # first BatchNorm: its input is conv_stem(x) alone
    pre = clf.preprocessing_
    from sktransfer._images import Preprocessor, check_images

    x = Preprocessor(pre)(check_images(X).get_batch(range(len(X))))
    with torch.no_grad():
        act = body.conv_stem(x)
    assert_allclose(bn.running_mean, act.mean((0, 2, 3)), rtol=1e-3, atol=1e-4)
