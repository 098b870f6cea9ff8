"""FineTunedClassifier: labels, learning, freezing, early stopping, options, copies."""

import math
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    FT_TINY,
    REAL_SIZE,
    TINY,
    TINY_MODEL,
    InterruptAt,
    Snapshot,
    TinyNet,
    assert_close_paths,
    assert_far_apart,
    assert_same_path,
    predicts_from_stores,
    state_of,
    untrained,
)
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from skorch.callbacks import Callback

from sktransfer import CNNFeatureExtractor, FineTunedClassifier, PrototypeClassifier
from sktransfer._backbones import load_backbone, strip_head
from sktransfer._images import Preprocessor, check_images
from sktransfer.callbacks import WeightTracker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _learnable(n, seed):
    """Noise images; class 1 has a bright top half (a signal a tiny CNN learns)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    y = np.arange(n) % 2
    X[y == 1, :8] = 255
    return X, y


@pytest.fixture(scope="module")
def data():
    return _learnable(24, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return _learnable(40, seed=1)


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    labels = np.array(["cat", "dog"])[y]
    # lr=0.05: two epochs learn the signal (held-out accuracy 0.9-1.0 for
    # random_state 0..4 on avx512_bf16 and plain AVX-512 CPUs).
    # The old defaults (this file's calibration): everything trains from a random
    # head, no augmentation; the "auto" policy is tested in test_finetune_cache.py.
    return FineTunedClassifier(
        **FT_TINY, lr=0.05, train_layers="all", augment=None, head_init="xavier"
    ).fit(X, labels)


class RecordBatches(Callback):
    """Records each training batch's input and every group's learning rate."""

    def on_train_begin(self, net, **kwargs):
        self.inputs, self.lrs = [], []

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            self.inputs.append(batch[0]["x"].detach().clone())
            self.lrs.append(
                [(g["lr"], g["base_lr"]) for g in net.optimizer_.param_groups]
            )


def _preprocessed(clf, X):
    """The network input for ``X``, preprocessed as ``clf`` does."""
    return Preprocessor(clf.preprocessing_)(check_images(X).get_batch(range(len(X))))


def _assert_same_state(a, b, buffers=True):
    """Bit for bit: the kept state is a copy of the snapshot, not a recomputation."""
    assert a.keys() == b.keys()
    for k in a:
        if buffers or not k.endswith(_BN_BUFFERS):
            assert_same_path(a[k], b[k], err_msg=k)


# fit recomputes trained BatchNorms' statistics for the restored weights
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _pristine_body():
    net, _ = load_backbone(TINY_MODEL, None)
    strip_head(net)
    return net.state_dict()


# ------------------------------------------------------------------- labels / API
def test_string_labels_and_outputs(fitted, data):
    X, y = data
    labels = np.array(["cat", "dog"])[y]
    assert fitted.classes_.tolist() == ["cat", "dog"]
    pred = fitted.predict(X)
    assert set(pred) <= {"cat", "dog"}
    proba = fitted.predict_proba(X)
    assert proba.shape == (24, 2)
    assert_allclose(proba.sum(1), 1, rtol=1e-5)
    # labels, probabilities and scores of one model on one batch: one path
    assert_array_equal(pred, fitted.classes_[proba.argmax(1)])
    scores = fitted.decision_function(X)
    assert scores.shape == (24,)
    assert_array_equal(pred, fitted.classes_[(scores > 0).astype(int)])
    assert fitted.score(X, labels) == np.mean(pred == labels)
    assert fitted.n_epochs_ == 2 and len(fitted.history_) == 2


def test_learns_a_learnable_task(fitted, held_out):
    """Images and labels reach the loss aligned: new images are classified well.

    A loader that paired images with the wrong labels would score ~0.5 here.
    """
    X, y = held_out
    assert fitted.score(X, np.array(["cat", "dog"])[y]) >= 0.85


def test_grayscale_and_rgba_predict_as_their_rgb(fitted, data):
    """Grayscale / RGBA images are converted to the backbone's 3 channels: gray
    predicts as the RGB image with three equal channels, RGBA as its RGB part."""
    X, _ = data
    gray = X[..., 0]
    # the same pixel values, in other memory layouts (a gray channel expanded
    # to three, a view without alpha): kernels may round otherwise, two paths
    assert_close_paths(
        fitted.decision_function(gray),
        fitted.decision_function(np.repeat(gray[..., None], 3, axis=-1)),
    )
    rgba = np.concatenate([X, np.full(X.shape[:3] + (1,), 99, np.uint8)], axis=-1)
    assert_close_paths(fitted.decision_function(rgba), fitted.decision_function(X))


def test_multiclass_grayscale_and_flat_input():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(18, 12, 12), dtype=np.uint8)
    y = np.array([3, 7, 9] * 6)
    clf = FineTunedClassifier(**FT_TINY).fit(X, y)
    assert clf.decision_function(X).shape == (18, 3)
    assert set(clf.predict(X)) <= {3, 7, 9}
    flat = FineTunedClassifier(**FT_TINY, input_shape=(12, 12)).fit(
        X.reshape(18, -1), y
    )
    assert flat.n_features_in_ == 144
    # the same pixels, the same seeded steps; both predict from the stores
    logits = clf.decision_function(X)
    assert_same_path(flat.decision_function(X.reshape(18, -1)), logits)
    assert_far_apart(logits, untrained(clf, X, y).decision_function(X))
    with pytest.raises(ValueError, match="features"):
        flat.predict(X.reshape(18, -1)[:, :100])


def test_class_weight_equals_sample_weight(data):
    X, y = data
    cw = {0: 1.0, 1: 5.0}
    a = FineTunedClassifier(**FT_TINY, class_weight=cw).fit(X, y)
    b = FineTunedClassifier(**FT_TINY).fit(
        X, y, sample_weight=np.where(y == 1, 5.0, 1.0)
    )
    # the same weights reach the same loss: the same steps, one path
    assert_same_path(a.decision_function(X), b.decision_function(X))
    plain = FineTunedClassifier(**FT_TINY).fit(X, y)
    # Up-weighting class 1 raises its score everywhere, by far more than rounding.
    assert a.decision_function(X).mean() > plain.decision_function(X).mean()
    assert_far_apart(a.decision_function(X), plain.decision_function(X))


def test_balanced_class_weight_on_imbalanced_labels(data):
    """ "balanced" weighs each class by n / (n_classes * count): on 12 vs 4 images
    that is 2/3 and 2, the same fit as those sample weights, unlike no weights."""
    X, y = data
    keep = np.flatnonzero((y == 0) | (np.cumsum(y) <= 4))
    X, y = X[keep], y[keep]
    assert np.bincount(y).tolist() == [12, 4]
    balanced = FineTunedClassifier(**FT_TINY, class_weight="balanced").fit(X, y)
    weights = np.where(y == 1, 16 / (2 * 4), 16 / (2 * 12))
    same = FineTunedClassifier(**FT_TINY).fit(X, y, sample_weight=weights)
    plain = FineTunedClassifier(**FT_TINY).fit(X, y)
    logits = balanced.decision_function(X)
    assert_same_path(logits, same.decision_function(X))  # the same steps
    assert_far_apart(logits, plain.decision_function(X))
    # the minority class gains
    assert logits.mean() > plain.decision_function(X).mean()


# ------------------------------------------------------------------------ freezing
def test_head_only_leaves_backbone_bit_identical(data):
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, train_layers="head", lr=0.05, dropout=0.2)
    clf.fit(X, y)
    body = clf.net_.module_.body.state_dict()
    _assert_same_state(body, _pristine_body())  # BN running stats included
    # the default cosine head: its weight and its scale
    assert clf.n_trainable_params_ == clf.net_.module_.head.weight.numel() + 1
    # Only trainable tensors reach the optimizer.
    in_opt = {id(p) for g in clf.net_.optimizer_.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in clf.net_.module_.head.parameters()}
    # Contrast: training BatchNorm changes its statistics.
    bn = FineTunedClassifier(**FT_TINY, train_layers="head", bn="train").fit(X, y)
    moved = bn.net_.module_.body.state_dict()
    assert not torch.equal(moved["bn1.running_mean"], body["bn1.running_mean"])


@pytest.mark.parametrize("train_layers", [1, "blocks.3"])
def test_partial_unfreeze(data, train_layers):
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, train_layers=train_layers, lr=0.05).fit(X, y)
    after, before = clf.net_.module_.body.state_dict(), _pristine_body()
    # The stem (and its BN statistics) is frozen, so never written: bit for
    # bit the pristine tensors; the last stage is trained.
    assert torch.equal(after["conv_stem.weight"], before["conv_stem.weight"])
    assert torch.equal(after["bn1.running_var"], before["bn1.running_var"])
    assert not torch.equal(after["bn2.weight"], before["bn2.weight"])


def test_freeze_epochs_trains_head_first(data):
    X, y = data
    snap = Snapshot()
    FineTunedClassifier(**FT_TINY, freeze_epochs=1, lr=0.05, callbacks=[snap]).fit(X, y)
    s0, s1, s2 = snap.states
    body = [k for k in s0 if k.startswith("body.")]
    assert all(torch.equal(s0[k], s1[k]) for k in body)  # epoch 1: head only
    assert not torch.equal(s0["head.weight"], s1["head.weight"])
    assert not all(torch.equal(s1[k], s2[k]) for k in body)  # epoch 2: all


def test_adabn_reestimates_statistics(data):
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, train_layers="head", bn="adabn").fit(X, y)
    after, before = clf.net_.module_.body.state_dict(), _pristine_body()
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert torch.equal(after["conv_stem.weight"], before["conv_stem.weight"])


# ------------------------------------------------------------------ early stopping
def test_early_stopping_stops_on_plateau_and_restores_best(data):
    X, y = data
    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 10},
        lr=1e-9,
        early_stopping=True,
        validation_fraction=0.25,
        patience=2,
        callbacks=[snap],
    ).fit(X, y)
    assert clf.n_epochs_ == 3 < 10  # best at epoch 1, then 2 epochs without gain
    assert clf.best_epoch_ == 1
    _assert_same_state(
        state_of(clf.net_.module_), snap.states[clf.best_epoch_], buffers=False
    )

    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 5},
        lr=0.02,
        early_stopping=True,
        validation_fraction=0.25,
        monitor="valid_acc",
        callbacks=[snap],
    ).fit(X, y)
    best = clf.best_epoch_
    acc = clf.history_[:, "valid_acc"]
    assert acc[best - 1] == max(acc[: clf.n_epochs_])
    _assert_same_state(state_of(clf.net_.module_), snap.states[best], buffers=False)


@pytest.mark.parametrize("early_stopping", [True, False])
def test_keyboard_interrupt_leaves_a_usable_model(data, early_stopping):
    """Ctrl-C in epoch 3 of 4: a warning says what was kept -- the best weights
    of the complete epochs with early stopping, else the last step's -- and the
    model predicts."""
    X, y = data
    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 4},
        lr=0.02,
        early_stopping=early_stopping,
        validation_fraction=0.25,
        callbacks=[snap, InterruptAt(3)],
    )
    kept = "best weights so far" if early_stopping else "last training step"
    with pytest.warns(
        UserWarning, match=rf"interrupted after 2 complete .* of 4; .*{kept}"
    ):
        clf.fit(X, y)
    assert clf.n_epochs_ == 2
    if early_stopping:  # epoch 3 trained but never finished its bookkeeping
        losses = clf.history_[:2, "valid_loss"]
        assert clf.best_epoch_ == 1 + int(np.argmin(losses))
        kept_state = snap.states[clf.best_epoch_]
    else:
        assert clf.best_epoch_ is None
        kept_state = snap.states[3]
    _assert_same_state(state_of(clf.net_.module_), kept_state, buffers=False)
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all() and set(clf.predict(X)) <= {0, 1}


def test_nan_loss_is_a_clear_error_naming_the_learning_rate(data):
    X, y = data
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 3}, optimizer="sgd", lr=1e12, scheduler=None
    )
    with pytest.raises(ValueError, match=r"diverged.*learning rate.*lr=1e\+12"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")  # no half-fitted model that predicts NaN


# -------------------------------------------------------------- regularization
def _weights(clf):
    return [p.detach() for p in clf.net_.module_.parameters() if p.ndim > 1]


def test_weight_decay_shrinks_and_l1_sparsifies(data):
    X, y = data
    kw = {**FT_TINY, "max_epochs": 3, "lr": 0.03, "backbone_lr": 0.03}
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
        **FT_TINY, train_layers="all", callbacks=[WeightTracker(depth=3)]
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
        **FT_TINY, train_layers="head", callbacks=[WeightTracker()]
    ).fit(X, y)
    assert list(frozen.history_[-1, "weight_change"]) == ["head"]


# -------------------------------------------------------- reproducibility / copies
def test_clone_after_fit_starts_clean(data):
    X, y = data
    X2, y2 = X[::-1].copy(), 1 - y[::-1]
    first = FineTunedClassifier(**FT_TINY, lr=0.05).fit(X, y)
    before = first.decision_function(X)
    refit = clone(first).fit(X2, y2)
    fresh = FineTunedClassifier(**FT_TINY, lr=0.05).fit(X2, y2)
    # X2 holds X's images: each model predicts from the rows its fit stored,
    # after the same seeded steps; one path
    assert predicts_from_stores(refit, X) and predicts_from_stores(fresh, X)
    want = fresh.decision_function(X)
    assert_same_path(refit.decision_function(X), want)
    again = first.fit(X2, y2)  # refitting the same object starts clean too
    assert_same_path(again.decision_function(X), want)
    assert_far_apart(before, want)  # the first fit was another model


def test_prediction_is_batch_invariant(fitted, data):
    """An image's outputs do not depend on the other images predicted with it:
    shuffled, alone or in a small batch they agree to the fp32 path tolerance
    (CPU convolution kernels are picked by batch size and thread count, and
    round differently: up to ~5e-6 apart)."""
    X = data[0][:21]  # batch_size=8: batches of 8, 8 and 5
    D = fitted.decision_function(X)
    perm = np.random.default_rng(1).permutation(len(X))
    assert_close_paths(fitted.decision_function(X[perm]), D[perm])
    scale = np.abs(D).max()  # a few rows' scores, at the scale of the batch's
    for i in (0, 7, 20):
        one = fitted.decision_function(X[i : i + 1])
        assert_close_paths(one, D[i : i + 1], scale=scale)
    assert_close_paths(fitted.decision_function(X[3:6]), D[3:6], scale=scale)
    # float64 from the float32 logits: the score and the softmax rank alike
    assert fitted.decision_function(X[:3]).dtype == np.float64


def test_onnx_prediction_matches_eager(fitted, data, monkeypatch):
    from sktransfer import _runtime

    X, _ = data
    eager = fitted.decision_function(X)  # fit by a fixture: no stores (conftest)
    assert fitted._derived()["engine"].kind == "torch"
    monkeypatch.setattr(_runtime, "ENGINE_MIN_IMAGES", 1)
    fast = fitted.decision_function(X)
    assert fitted._derived()["engine"].kind == "onnxruntime"
    assert_close_paths(fast, eager)
    restored = pickle.loads(pickle.dumps(fitted))  # the engine is not pickled
    assert "engine" not in restored._derived()
    assert_same_path(restored.decision_function(X), fast)  # the same graph


# ---------------------------------------------------------- heads / augmentation
def test_verbose_prints_the_epoch_table(data, capsys):
    X, y = data
    FineTunedClassifier(**FT_TINY).fit(X, y)
    assert capsys.readouterr().out == ""  # verbose=0 is silent
    FineTunedClassifier(**FT_TINY, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert re.search(r"epoch\s+train_loss", out), out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [r[0] for r in rows] == ["1", "2"], out


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", None])
def test_scheduler_sets_the_learning_rate_per_batch(data, scheduler):
    """24 images in batches of 8 for 2 epochs: 6 steps. "cosine" anneals every
    group from its base rate towards 0, "onecycle" warms up from base / 25 over
    the first 30% then anneals, None keeps the base rate."""
    X, y = data
    rec = RecordBatches()
    FineTunedClassifier(**FT_TINY, scheduler=scheduler, callbacks=[rec]).fit(X, y)
    assert len(rec.lrs) == 6
    factors = np.array([[lr / base for lr, base in step] for step in rec.lrs])
    assert np.ptp(factors, axis=1).max() < 1e-12  # every group alike
    f = factors[:, 0]
    if scheduler is None:
        assert_allclose(f, 1.0)
    elif scheduler == "cosine":
        assert_allclose(f, [0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)])
    else:
        assert f[0] == pytest.approx(1 / 25)
        assert f[1] > f[0] and f.argmax() == 2 and f.max() > 0.95
        assert (np.diff(f[2:]) < 0).all()
    bases = {base for step in rec.lrs for _, base in step}
    assert sorted(bases) == pytest.approx([1e-3, 3e-3])  # body lr = lr / 3, head lr


@pytest.mark.parametrize(
    "augment", ["standard", ["translate", "rotate"], lambda t: t.flip(-1)]
)
def test_augment_changes_the_training_input(data, augment):
    """The same seeded fit sees other training images with augment; a flip
    callable sees exactly the flipped images (same order: same shuffle)."""
    X, y = data
    plain, aug = RecordBatches(), RecordBatches()
    kw = {**FT_TINY, "train_layers": "all"}  # uncached: batches are images
    FineTunedClassifier(**kw, augment=None, callbacks=[plain]).fit(X, y)
    FineTunedClassifier(**kw, augment=augment, callbacks=[aug]).fit(X, y)
    assert [x.shape for x in aug.inputs] == [x.shape for x in plain.inputs]
    if callable(augment):
        # a flip before an elementwise normalization: the same numbers, moved
        for a, p in zip(aug.inputs, plain.inputs):
            assert_same_path(a, p.flip(-1))
    else:
        assert all(not torch.allclose(a, p) for a, p in zip(aug.inputs, plain.inputs))


def test_translate_is_torchvisions_affine_shift_bit_for_bit():
    """The "translate" block copies shifted pixels instead of warping, with the
    same draws and the same output as torchvision's RandomAffine."""
    from torchvision.transforms import v2

    from sktransfer._augment import RandomTranslate

    ours = RandomTranslate((0.3, 0.2))
    theirs = v2.RandomAffine(degrees=0, translate=(0.3, 0.2))
    x = torch.rand(3, 20, 17)
    for seed in range(50):
        torch.manual_seed(seed)
        got = ours(x)
        torch.manual_seed(seed)
        assert torch.equal(got, theirs(x)), seed
    assert not torch.equal(got, x)  # it does shift


def test_cosine_head_inits(data):
    """A cosine head honours head_init="normal"; "zeros" has no direction."""
    X, y = data
    snap = Snapshot()
    FineTunedClassifier(
        **FT_TINY, head_init="normal", train_layers="head", callbacks=[snap]
    ).fit(X, y)
    assert snap.states[0]["head.weight"].std() == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match="head_init='zeros'.*cosine"):
        FineTunedClassifier(**FT_TINY, head_init="zeros").fit(X, y)


def test_head_init_options(data):
    X, y = data
    inits = {}
    for init in ("zeros", "normal", "xavier"):
        snap = Snapshot()
        FineTunedClassifier(
            **FT_TINY, head="linear", head_init=init, callbacks=[snap]
        ).fit(X, y)
        inits[init] = snap.states[0]
        assert torch.equal(inits[init]["head.bias"], torch.zeros(2))
    assert torch.equal(inits["zeros"]["head.weight"], torch.zeros(2, 256))
    assert inits["normal"]["head.weight"].std() == pytest.approx(0.01, rel=0.1)
    # xavier uniform: bound sqrt(6 / (fan_in + fan_out))
    bound = math.sqrt(6 / (256 + 2))
    w = inits["xavier"]["head.weight"]
    assert w.abs().max() <= bound and w.std() == pytest.approx(bound / 3**0.5, rel=0.1)


def test_cosine_head_scores_directions(data):
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, head="cosine").fit(X, y)
    module = clf.net_.module_
    with torch.no_grad():
        feats = module.features(_preprocessed(clf, X))
        head = module.head
        want = (
            head.scale * F.normalize(feats, dim=1) @ F.normalize(head.weight, dim=1).T
        )
        # scaling a feature vector changes nothing (up to its rounding)
        assert_close_paths(head(3 * feats), want)
    # predict runs from the stores, the reference through the whole body
    assert_close_paths(clf.decision_function(X), want[:, 1] - want[:, 0])
    assert float(head.scale.detach()) != 10.0  # the scale is learnt


def test_label_smoothing_is_the_training_loss(data):
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, label_smoothing=0.2).fit(X, y)
    logits = torch.randn(5, 2)
    target = torch.tensor([0, 1, 1, 0, 1])
    logp = torch.log_softmax(logits, 1)
    want = -(0.9 * logp[range(5), target] + 0.1 * logp[range(5), 1 - target]).mean()
    assert float(clf.net_.criterion_(logits, target)) == pytest.approx(float(want))


def test_sgd_optimizer_and_bn_eval(data):
    """optimizer="sgd" is SGD with momentum 0.9; bn="eval" trains BatchNorm
    scale and shift but never its statistics."""
    X, y = data
    clf = FineTunedClassifier(
        **FT_TINY, train_layers="all", optimizer="sgd", bn="eval", lr=0.05
    ).fit(X, y)
    opt = clf.net_.optimizer_
    assert type(opt) is torch.optim.SGD
    assert {g["momentum"] for g in opt.param_groups} == {0.9}
    after, before = clf.net_.module_.body.state_dict(), _pristine_body()
    stats = [k for k in before if k.endswith(_BN_BUFFERS)]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)
    assert not torch.equal(after["bn1.weight"], before["bn1.weight"])


def test_class_means_init_matches_prototypes(data):
    """Each head row starts as the normalized mean of its class's normalized
    features: PrototypeClassifier's prototypes on the same network's codes."""
    X, y = data
    snap = Snapshot()
    FineTunedClassifier(
        **FT_TINY,
        head="linear",
        train_layers="head",
        head_init="class_means",
        callbacks=[snap],
    ).fit(X, y)
    w0 = snap.states[0]["head.weight"].numpy()
    codes = CNNFeatureExtractor(**{**TINY, "input_size": 16}).fit_transform(X)
    proto = PrototypeClassifier(metric="cosine").fit(codes, y)
    # the fit's torch codes vs the extractor's ONNX Runtime codes: two paths
    assert_close_paths(w0, proto.prototypes_)
    assert torch.equal(snap.states[0]["head.bias"], torch.zeros(2))


def test_drop_path_unsupported_and_user_module(data):
    X, y = data
    with pytest.raises(ValueError, match="drop_path"):
        FineTunedClassifier(**{**FT_TINY, "model": TinyNet()}, drop_path=0.1).fit(X, y)
    clf = FineTunedClassifier(**{**FT_TINY, "model": TinyNet()}).fit(X, y)
    assert clf.predict(X).shape == (24,)


def test_drop_path_rates_and_silent_no_op_warning(data):
    """Only blocks with a shortcut get a rate (the deepest exactly drop_path), and
    a drop_path that no trained block can apply says so instead of doing nothing."""
    from timm.layers import DropPath

    X, y = data
    for model in ("timm/test_resnet", "timm/test_vit"):
        clf = FineTunedClassifier(**{**FT_TINY, "model": model}, drop_path=0.2).fit(
            X, y
        )
        rates = [
            m.drop_prob
            for m in clf.net_.module_.body.modules()
            if isinstance(m, DropPath)
        ]
        assert rates and max(rates) == pytest.approx(0.2), model
    with pytest.raises(ValueError, match="no residual blocks"):
        FineTunedClassifier(**FT_TINY, drop_path=0.2).fit(X, y)  # no shortcut at all
    with pytest.warns(UserWarning, match="drop_path=0.2 has no effect"):
        FineTunedClassifier(
            **{**FT_TINY, "model": "timm/test_resnet"},
            drop_path=0.2,
            train_layers="head",
        ).fit(X, y)


# ---------------------------------------------------------------- real weights
@pytest.mark.slow
def test_real_weights_fine_tune_as_well_as_a_probe_on_their_codes(
    fashion_split, real_codes
):
    """The defaults (ImageNet EfficientNet-Lite0, the "auto" policy: last stage
    trained on cached activations, augmented views, cosine head) on 500
    Fashion-MNIST images at 64 px learn: held out, at least the codes of the
    same network and input size + a logistic regression, minus 3 points, and
    far above chance. On a 2-core AMD EPYC, one torch thread: 0.736 with its
    bf16 steps (0.758 with SKTRANSFER_CPU_BF16=0) vs 0.724, the fit and
    predictions in 21-26 s, the codes 8 s."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, X_test, y_test = fashion_split
    Z, _, Z_test, _ = real_codes
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    baseline = probe.fit(Z, y).score(Z_test, y_test)
    clf = FineTunedClassifier(input_size=REAL_SIZE, random_state=0).fit(X, y)
    assert clf.n_trainable_params_ > clf.net_.module_.head.weight.numel()
    score = clf.score(X_test, y_test)
    chance = 1 / len(np.unique(y))
    assert score >= baseline - 0.03, (score, baseline)
    assert score >= 3 * chance, score


# --------------------------------------------------------------------- export
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_backbone_gives_finetuned_codes(data, tmp_path, suffix):
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, lr=0.05, backbone_lr=0.05).fit(X, y)
    path = clf.save_backbone(tmp_path / f"tuned{suffix}")
    ext = CNNFeatureExtractor(model=TINY_MODEL, weights=str(path), input_size=16)
    codes = ext.fit_transform(X)
    module = clf.net_.module_.eval()
    with torch.no_grad():
        # same preprocessing as the classifier
        assert ext.preprocessing_.input_size == clf.preprocessing_.input_size
        want = module.features(_preprocessed(clf, X)).numpy()
    assert_close_paths(codes, want)  # ONNX Runtime vs torch
    pristine = CNNFeatureExtractor(model=TINY_MODEL, weights=None, input_size=16)
    assert_far_apart(pristine.fit_transform(X), codes)
    # ... and a new classifier can start from the fine-tuned weights.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FineTunedClassifier(**{**FT_TINY, "weights": str(path)}).fit(X, y)


def test_trained_batchnorm_statistics_are_exact_after_fit(data):
    # From random weights, two training steps leave moving averages far from the
    # data's statistics; fit must end with exact averages for the final weights.
    X, y = data
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 1, "batch_size": 12},
        train_layers="all",
        early_stopping=False,
        augment=None,
    ).fit(X, y)
    body = clf.net_.module_.body
    bn = body.bn1  # first BatchNorm: its input is conv_stem(x) alone
    x = _preprocessed(clf, X)
    with torch.no_grad():
        act = body.conv_stem(x)
    # the fit averages the statistics batch by batch: another order of the sums
    assert_close_paths(bn.running_mean, act.mean((0, 2, 3)))
