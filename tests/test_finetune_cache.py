"""FineTunedClassifier's training side: activation cache, LP head, defaults, RNG.

Tiny and offline: ``timm/test_efficientnet`` with random weights at 16-32 px.
"""

import threading

import numpy as np
import pytest
import torch
from conftest import (
    assert_close_paths,
    assert_far_apart,
    assert_same_labels,
    assert_same_path,
    bands,
    predicts_from_stores,
    untrained,
    whole_network_images,
)
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV
from sklearn.utils import check_random_state
from skorch.callbacks import Callback

from sktransfer import FineTunedClassifier, _activations
from sktransfer._cache import image_digests
from sktransfer._images import Preprocessor, check_images
from sktransfer._runtime import clear_caches

TINY = {"model": "timm/test_efficientnet", "weights": None, "input_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# conftest clears the process caches (FORWARDS included) around every test.


def state(clf):
    return {k: v.detach().clone() for k, v in clf.net_.module_.state_dict().items()}


def assert_same_state(a, b):
    """Two fits' states, up to the fp32 rounding of another compute path (the
    rounding of each step adds up); integer buffers exactly."""
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert_close_paths(a[k], b[k], err_msg=k)
        else:
            assert_same_path(a[k], b[k], err_msg=k)


class Record(Callback):
    """Keeps what each epoch trains on and the head at the start of training."""

    def on_train_begin(self, net, **kwargs):
        self.head_ = {
            k: v.detach().clone() for k, v in net.module_.head.state_dict().items()
        }
        self.views_ = []

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        views = getattr(dataset_train, "views", None)
        self.views_.append(None if views is None else np.array(views))


# ------------------------------------------------------------------- the cache
@pytest.mark.parametrize("train_layers", ["head", 2, "blocks.3"])
def test_cached_equals_uncached_without_augmentation(train_layers):
    X, y = bands(24)
    kw = dict(
        **TINY,
        # fp32 steps: on a CPU with native bf16, "auto" trains the cached fit's
        # steps in bf16 (test_bf16_steps_only_with_the_cache covers that)
        precision="fp32",
        train_layers=train_layers,
        augment=None,
        head_init="xavier",
        max_epochs=3,
        batch_size=8,
        dropout=0.2,
        lr=1e-2,
        random_state=0,
    )
    cached = FineTunedClassifier(**kw).fit(X, y)
    assert not cached.policy_["cache"].startswith("off")
    assert _activations.FORWARDS["prefix"] == len(X)
    plain = FineTunedClassifier(**kw, cache=False).fit(X, y)
    assert plain.policy_["cache"].startswith("off")
    assert_same_state(state(cached), state(plain))
    # the cached fit predicts from its stores, the uncached one through the
    # whole network: two paths
    assert predicts_from_stores(cached, X) and not predicts_from_stores(plain, X)
    logits = cached.decision_function(X)
    assert_close_paths(plain.decision_function(X), logits)
    # training moved the trained part (the comparison is not between two no-ops)
    assert_far_apart(logits, untrained(plain, X, y).decision_function(X))


def test_cache_shared_across_grid_folds_and_candidates():
    X, y = bands(24)
    est = FineTunedClassifier(
        **TINY, augment=None, max_epochs=1, batch_size=8, random_state=0
    )
    grid = GridSearchCV(
        est, {"train_layers": ["head", 2], "lr": [1e-3, 1e-2]}, cv=2, n_jobs=1
    )
    grid.fit(X, y)
    # The expensive prefix runs once per image: both cut points (a frozen body,
    # and the last 2 stages trained) derive from the checkpoint at the last
    # downsampling block's input, once each; 8 fold fits + the refit share.
    assert _activations.FORWARDS["prefix"] == len(X)
    assert _activations.FORWARDS["derived"] == 2 * len(X)


@pytest.mark.parametrize("train_layers", ["head", 2])
def test_rows_derived_from_the_checkpoint_equal_rows_from_pixels(
    train_layers, monkeypatch
):
    X, y = bands(16)
    est = FineTunedClassifier(
        **TINY,
        train_layers=train_layers,
        augment="light",
        augment_views=2,
        max_epochs=2,
        batch_size=8,
        random_state=0,
    )
    derived = clone(est).fit(X, y)
    assert (
        "derived from the shared checkpoint after blocks.2" in derived.policy_["cache"]
    )
    assert _activations.FORWARDS["derived"] == 3 * len(X)  # clean view + 2
    clear_caches()  # FORWARDS too
    # no RAM for a checkpoint: the rows come from the pixels directly
    monkeypatch.setattr(_activations, "ACTIVATION_RAM_BYTES", 0)
    direct = clone(est).fit(X, y)
    assert "derived" not in direct.policy_["cache"]
    assert _activations.FORWARDS["derived"] == 0
    assert _activations.FORWARDS["prefix"] == 3 * len(X)
    # the same units on the same inputs, run from other inputs and batches
    assert_same_state(state(derived), state(direct))
    logits = derived.decision_function(X)
    assert_close_paths(direct.decision_function(X), logits)
    assert_far_apart(logits, untrained(est, X, y).decision_function(X))


def test_k_augmented_views_are_precomputed_and_drawn():
    X, y = bands(16)
    rec = Record()
    clf = FineTunedClassifier(
        **TINY,
        train_layers=2,
        augment="light",
        augment_views=3,
        max_epochs=4,
        batch_size=8,
        callbacks=[rec],
        random_state=0,
    ).fit(X, y)
    assert clf.policy_["augment_views"] == 3
    assert _activations.FORWARDS["prefix"] == 4 * len(X)  # clean view + 3
    views = np.stack(rec.views_)
    assert views.shape == (4, len(X))
    assert set(np.unique(views)) == {1, 2, 3}
    assert not (views == views[0]).all()  # a new draw per epoch
    acts = clf.net_  # the fitted net keeps no dataset
    assert acts.train_split is None


class KeepActivations(Callback):
    """Keeps the fit's activation set (its stored rows, every view)."""

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        self.acts = dataset_train.acts


def _stored_views(augment, X, y, n_views=3):
    """``(rows, clean)``: the stored rows ``(n_images, n_views + 1, ...)`` of a
    cached fit, and the frozen prefix run on the un-augmented images."""
    keep = KeepActivations()
    clf = FineTunedClassifier(
        **TINY,
        train_layers=2,
        augment=augment,
        augment_views=n_views,
        max_epochs=1,
        batch_size=8,
        callbacks=[keep],
        random_state=0,
    ).fit(X, y)
    acts = keep.acts
    assert acts.n_views == n_views
    rows = torch.stack(
        [
            torch.stack([acts.get(i, v) for v in range(n_views + 1)])
            for i in range(len(X))
        ]
    )
    x = Preprocessor(clf.preprocessing_)(check_images(X).get_batch(range(len(X))))
    with torch.no_grad():
        clean = _activations.run_units(acts.prefix, x)
    return rows.numpy(), clean.numpy()


def _assert_views_differ(rows):
    for i, views in enumerate(rows):
        for v in range(len(views)):
            for w in range(v + 1, len(views)):
                assert_far_apart(
                    views[v], views[w], err_msg=f"image {i} views {v}, {w}"
                )


def test_stored_views_are_augmented_and_the_clean_view_is_the_image():
    """The K views of an image are K different augmentations, view 0 the image
    itself: a no-op augmentation would store K copies of view 0 (and fail)."""
    X, y = bands(8)
    # "standard" rotates by a continuous angle: no two views coincide
    rows, clean = _stored_views("standard", X, y)
    assert_close_paths(rows[:, 0], clean)  # batches of other sizes: two paths
    _assert_views_differ(rows)
    # the check can fail: an augmentation that changes nothing
    noop, _ = _stored_views(lambda t: t, X, y)
    with pytest.raises(AssertionError, match="cannot tell them apart"):
        _assert_views_differ(noop)


def test_views_differ_and_repeat_across_fits():
    X, y = bands(8)
    kw = dict(**TINY, train_layers=2, augment="light", augment_views=2, max_epochs=1)
    a = FineTunedClassifier(**kw, random_state=0).fit(X, y)
    n = _activations.FORWARDS["prefix"]
    b = FineTunedClassifier(**kw, random_state=0).fit(X, y)
    assert _activations.FORWARDS["prefix"] == n  # same seed: views reused
    # the same stored rows, the same steps, both predicting from the stores
    assert predicts_from_stores(a, X) and predicts_from_stores(b, X)
    assert_same_path(a.decision_function(X), b.decision_function(X))
    FineTunedClassifier(**kw, random_state=1).fit(X, y)
    assert _activations.FORWARDS["prefix"] == n + 2 * len(X)  # new augmented views


def test_memory_budget_spills_to_memmap(monkeypatch):
    X, y = bands(24)
    kw = dict(
        **TINY, train_layers=2, augment=None, max_epochs=2, batch_size=8, random_state=0
    )
    ref = FineTunedClassifier(**kw).fit(X, y).decision_function(X)
    ram, disk = _activations.activation_memory()
    assert ram > 0 and disk == 0
    # the checkpoint's store and the cut's: the cut's rows are the smaller
    cut_bytes = min(s.ram_bytes() for s in _activations._STORES.values())
    clear_caches()
    # half the images fit; the checkpoint (larger rows) does not, so it is
    # skipped, and the other half's rows go to one memmap file
    budget = cut_bytes // 2
    monkeypatch.setattr(_activations, "ACTIVATION_RAM_BYTES", budget)
    FineTunedClassifier(**kw).fit(X[:12], y[:12])
    assert _activations.activation_memory() == (budget, 0)
    out = FineTunedClassifier(**kw).fit(X, y).decision_function(X)
    ram, disk = _activations.activation_memory()
    assert ram == budget and disk == budget
    (store,) = _activations._STORES.values()
    files = [a for a, f in store.slabs if f is not None]
    # one file per view computed past the budget, not one per batch
    assert len(files) == 1 and isinstance(files[0], np.memmap)
    # the rows were computed in other batches (and not from the checkpoint)
    assert_close_paths(out, ref)


def test_disk_cache_serves_a_fresh_process(tmp_path, monkeypatch):
    X, y = bands(16)
    monkeypatch.setenv("HOME", str(tmp_path))
    kw = dict(**TINY, train_layers=2, augment=None, max_epochs=1, random_state=0)
    first = FineTunedClassifier(**kw, cache="~/acts").fit(X, y)
    assert (tmp_path / "acts").is_dir()  # "~" expanded, no literal "~" folder
    clear_caches()  # forget everything in memory, as a new process would
    again = FineTunedClassifier(**kw, cache="~/acts").fit(X, y)
    assert _activations.FORWARDS["prefix"] == 0
    # the rows read back are the float32 rows written: the same steps, and
    # both predict from them
    assert predicts_from_stores(first, X) and predicts_from_stores(again, X)
    assert_same_path(first.decision_function(X), again.decision_function(X))


def test_fallback_when_the_frozen_part_trains(capsys):
    X, y = bands(8)
    kw = dict(**TINY, augment=None, max_epochs=1, random_state=0, verbose=1)
    clf = FineTunedClassifier(**kw, train_layers="head", bn="train").fit(X, y)
    assert clf.policy_["cache"].startswith("off: bn='train'")
    clf = FineTunedClassifier(**kw, train_layers="all").fit(X, y)
    assert clf.policy_["cache"].startswith("off: the first layer trains")
    out = capsys.readouterr().out
    assert "activation cache off" in out
    assert _activations.FORWARDS["prefix"] == 0


def test_torchvision_backbone_is_split_at_its_stages():
    X, y = bands(8)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    kw = dict(model=net, weights=None, input_size=16, augment=None, max_epochs=1)
    clf = FineTunedClassifier(**kw, train_layers="1", random_state=0).fit(X, y)
    assert clf.policy_["cache"].startswith("after 0 ")
    import torchvision

    tv = torchvision.models.resnet18(num_classes=2)
    clf = FineTunedClassifier(
        model=tv,
        weights=None,
        input_size=32,
        train_layers=1,
        augment=None,
        max_epochs=1,
        random_state=0,
    ).fit(X, y)
    assert clf.policy_["cache"].startswith("after layer3 ")


# -------------------------------------------------------------------- LP head
def test_lp_head_equals_logistic_regression_on_the_codes():
    X, y = bands(30, n_classes=3)
    rec = Record()
    clf = FineTunedClassifier(
        **TINY,
        train_layers="head",
        head="linear",
        head_init="lp",
        augment=None,
        weight_decay=0.05,
        max_epochs=1,
        callbacks=[rec],
        random_state=0,
    ).fit(X, y)
    module = clf.net_.module_  # body frozen: its codes are the probe's codes
    pre = Preprocessor(clf.preprocessing_)
    with torch.no_grad():
        codes = module.features(pre(check_images(X).get_batch(range(len(X)))))
    lr = LogisticRegression(C=1 / (0.05 * len(X)), tol=1e-10, max_iter=10000)
    lr.fit(codes.double().numpy(), y)
    np.testing.assert_allclose(rec.head_["weight"].numpy(), lr.coef_, atol=2e-3)
    np.testing.assert_allclose(rec.head_["bias"].numpy(), lr.intercept_, atol=2e-3)


def test_lp_head_rejects_a_cosine_head():
    X, y = bands(8)
    with pytest.raises(ValueError, match="head_init='lp'"):
        FineTunedClassifier(**TINY, head="cosine", head_init="lp").fit(X, y)


# -------------------------------------------------------------- the defaults
def test_default_policy_is_reported(capsys):
    X, y = bands(16)
    clf = FineTunedClassifier(**TINY, max_epochs=1, random_state=0, verbose=1)
    clf.fit(X, y)
    p = clf.policy_
    # the tiny net at 32 px reaches its last map size (2 x 2) in blocks.3.0
    assert p["train_layers"] == "blocks.4.0"
    assert p["head_init"] == "class_means"  # the default cosine head
    assert p["augment"] == ("translate",)
    assert p["augment_views"] == 4
    # the cache cuts right before the first trained block
    assert p["cache"].startswith("after blocks.3 ")
    assert "policy:" in capsys.readouterr().out
    trained = [
        n for n, q in clf.net_.module_.body.named_parameters() if q.requires_grad
    ]
    assert trained[0].startswith("blocks.4.0.")
    explicit = FineTunedClassifier(
        **TINY, train_layers="head", augment=None, head="linear", max_epochs=1
    ).fit(X, y)
    assert explicit.policy_["train_layers"] == "head"
    assert explicit.policy_["augment"] is None
    assert explicit.policy_["head_init"] == "lp"


@pytest.mark.parametrize(
    "model, size, start, down",
    [
        ("efficientnet_lite0", 224, "blocks.5.1", "blocks.5.0"),  # 14 -> 7
        ("efficientnet_lite0", 96, "blocks.5.1", "blocks.5.0"),
        ("resnet18", 224, "layer4.1", "layer4.0"),
        ("timm/test_efficientnet", 224, "conv_head", "blocks.4.0"),
        ("timm/vit_tiny_patch16_224", 224, None, None),  # never downsamples
    ],
)
def test_auto_train_layers_start_after_the_last_downsampling(model, size, start, down):
    from sktransfer import load_backbone
    from sktransfer._activations import cache_units, checkpoint_index
    from sktransfer._backbones import (
        last_downsampling_block,
        last_resolution_blocks,
        strip_head,
    )

    net, _ = load_backbone(model, None)
    strip_head(net)
    probe = torch.zeros(2, 3, size, size)
    assert last_resolution_blocks(net, probe) == start
    assert last_downsampling_block(net, probe) == down
    if down is None:
        return
    # the checkpoint is the downsampling block's input, in the units of every cut
    stage = down.rsplit(".", 1)[0]
    for trained in (set(), {f"{stage}.weight"}, {f"{start}.x"}):
        units = cache_units(net, trained)
        j = checkpoint_index(units, down)
        assert units[j][0] in (down, stage)
        assert (
            units[j - 1][0]
            == units[checkpoint_index(cache_units(net, set()), down) - 1][0]
        )


def test_checkpoint_index_needs_a_unit_boundary():
    from torch import nn

    from sktransfer._activations import checkpoint_index

    stage = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))
    units = [("stem", nn.Conv2d(1, 1, 1)), ("stage", stage), ("head", nn.Identity())]
    assert checkpoint_index(units, "stage") == 1
    assert checkpoint_index(units, "stage.0") == 1  # the stage starts with it
    assert checkpoint_index(units, "stage.1") is None  # inside: no boundary
    assert checkpoint_index(units, "head") == 2
    assert checkpoint_index(units, None) is None


# ------------------------------------------------------------ early stopping
@pytest.mark.parametrize("train_layers", [2, "all"])
def test_early_stopping_keeps_the_epoch_that_validates_best(train_layers):
    X, y = bands(40, seed=1)
    X[::3] = np.random.default_rng(2).integers(0, 256, X[::3].shape, np.uint8)
    clf = FineTunedClassifier(
        **TINY,
        train_layers=train_layers,
        augment=None,
        early_stopping=True,
        validation_fraction=0.3,
        patience=10,
        max_epochs=5,
        lr=3e-2,
        backbone_lr=3e-2,
        batch_size=8,
        random_state=0,
    ).fit(X, y)
    losses = np.array(clf.history_[:, "valid_loss"])
    assert clf.best_epoch_ == int(np.argmin(losses)) + 1
    seed = int(check_random_state(0).randint(2**31 - 1))
    _, valid = clf._split(y, seed)
    logits = clf.decision_function(X[valid])  # two classes: the logit gap
    raw = 1 / (1 + np.exp(-logits))
    # the returned model scores exactly what was recorded for its epoch
    # (before temperature scaling, which is fit after training on this split)
    assert log_loss(y[valid], raw, labels=[0, 1]) == pytest.approx(
        losses[clf.best_epoch_ - 1], rel=1e-4, abs=1e-5
    )
    # the temperature minimizes the split's log-loss: never above T = 1's
    calibrated = log_loss(y[valid], clf.predict_proba(X[valid]), labels=[0, 1])
    assert calibrated <= log_loss(y[valid], raw, labels=[0, 1]) + 1e-12


# --------------------------------------------------------------- reliability
@pytest.mark.parametrize(
    "params",
    [
        {"train_layers": "all", "augment": "light", "dropout": 0.3},
        {"train_layers": 2, "augment": "light", "augment_views": 2, "dropout": 0.3},
    ],
    ids=["uncached", "cached"],
)
def test_threaded_fits_equal_a_sequential_fit(params):
    X, y = bands(24)
    est = FineTunedClassifier(**TINY, **params, max_epochs=2, random_state=0)
    ref = clone(est).fit(X, y).decision_function(X)
    assert_far_apart(ref, untrained(est, X, y).decision_function(X))
    clear_caches()
    results, errors = {}, []

    def work(i):
        try:
            results[i] = clone(est).fit(X, y).decision_function(X)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # two threads may fill one store in other batches than a lone fit
    for i in range(2):
        assert_close_paths(results[i], ref)


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("train_layers", ["all", 2])
def test_small_inputs_with_lone_batches_fit(batch_size, train_layers):
    # 16 px: 1x1 maps at the end; 5 images with batch 4 leave one alone
    X, y = bands(5, size=16)
    clf = FineTunedClassifier(
        **{**TINY, "input_size": 16},
        train_layers=train_layers,
        batch_size=batch_size,
        augment=None,
        max_epochs=1,
        random_state=0,
    ).fit(X, y)
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.parametrize(
    "params",
    [{"train_layers": "all", "augment": None}, {}],
    ids=["full", "defaults"],
)
def test_finetuned_classifier_learns(params):
    X, y = bands(96, n_classes=3, seed=0)
    X_test, y_test = bands(60, n_classes=3, seed=1)
    clf = FineTunedClassifier(
        **TINY, max_epochs=8, lr=1e-2, batch_size=16, random_state=0, **params
    )
    clf.fit(X, y)
    assert clf.score(X_test, y_test) >= 0.95
    # the labels drive it: the same images with permuted labels give another model
    perm = np.random.default_rng(0).permutation(len(y))
    shuffled = clone(clf).fit(X, y[perm])
    assert shuffled.score(X_test, y_test) < 0.8


def test_fitted_model_pickles_without_its_activations():
    import pickle

    X, y = bands(16)
    clf = FineTunedClassifier(**TINY, max_epochs=1, random_state=0).fit(X, y)
    assert not clf.policy_["cache"].startswith("off")
    blob = pickle.dumps(clf)
    assert len(blob) < 5 * 1024**2
    restored = pickle.loads(blob)
    # the model predicts from the stores, its unpickled copy (no stores)
    # through the whole network
    assert predicts_from_stores(clf, X) and not predicts_from_stores(restored, X)
    assert_close_paths(restored.decision_function(X), clf.decision_function(X))


# ---------------------------------------------------- predicting from the stores
def test_predict_starts_from_stored_activations_of_training_images():
    X, y = bands(24)
    fresh, _ = bands(8, seed=5)  # never trained on: no stored rows
    clf = FineTunedClassifier(
        **TINY,
        train_layers=2,
        augment="light",
        augment_views=2,
        max_epochs=2,
        batch_size=8,
        random_state=0,
    ).fit(X, y)
    assert len(clf._derived()["stores"]) == 2  # the cut's store, the checkpoint's
    mixed = np.concatenate([X[:10], fresh, X[10:]])
    assert predicts_from_stores(clf, X)  # no image ran the whole network
    via_stores = clf.decision_function(X)
    with whole_network_images(clf) as counts:
        via_both = clf.decision_function(mixed)
        labels = clf.predict(mixed)
    assert counts == [len(fresh)] * 2  # only the new images
    clear_caches()  # the same model, every image through the whole network
    full = clf.decision_function(mixed)
    assert_close_paths(via_both, full)
    assert_close_paths(via_stores, np.concatenate([full[:10], full[18:]]))
    assert_same_labels(labels, clf.classes_[(full > 0).astype(int)], full)


def test_predict_from_the_checkpoint_store_in_a_grid_fold():
    """Held-out images of one CV split trained in the other: the checkpoint serves."""
    X, y = bands(24)
    kw = dict(**TINY, augment=None, max_epochs=1, batch_size=8, random_state=0)
    FineTunedClassifier(**kw, train_layers="head").fit(X[12:], y[12:])
    clf = FineTunedClassifier(**kw, train_layers=2).fit(X[:12], y[:12])
    _activations.FORWARDS.clear()
    # rows stored by the other fit's checkpoint
    assert predicts_from_stores(clf, X[12:])
    logits = clf.decision_function(X[12:])
    stores = clf._derived()["stores"]
    (ck_spec,) = [spec for spec, *_ in stores if "cut=blocks.2|" in spec]
    found, _ = _activations.lookup(ck_spec, image_digests(check_images(X[12:])))
    assert found.all()
    clear_caches()
    assert_close_paths(clf.decision_function(X[12:]), logits)


def test_predict_ignores_stores_whose_frozen_units_changed():
    X, y = bands(16)
    clf = FineTunedClassifier(
        **TINY, train_layers=2, augment=None, max_epochs=1, random_state=0
    ).fit(X, y)
    first = next(clf.net_.module_.body.parameters())
    with torch.no_grad():
        first.mul_(0.5)  # the stem (frozen, before both stores) changes after fit
    assert not predicts_from_stores(clf, X)
    logits = clf.decision_function(X)
    assert clf._derived()["engine"].kind == "torch"  # the whole network ran
    clear_caches()
    # the same torch engine on the same images, stores or not: one path
    assert_same_path(clf.decision_function(X), logits)


def test_predict_ignores_stores_for_an_explicit_engine():
    X, y = bands(16)
    clf = FineTunedClassifier(
        **TINY, train_layers=2, augment=None, max_epochs=1, random_state=0
    ).fit(X, y)
    clf.set_params(engine="torch").predict_proba(X)
    assert clf._derived()["engine"].kind == "torch"


def test_head_epochs_train_on_stored_body_outputs():
    """A frozen-body fit stored the body's outputs: LP-FT's head epochs reuse them."""
    X, y = bands(24)
    kw = dict(
        **TINY,
        augment="light",
        augment_views=2,
        batch_size=8,
        random_state=0,
        precision="fp32",  # the stored rows are fp32: compare like with like
    )
    alone = FineTunedClassifier(**kw, train_layers=2, freeze_epochs=2, max_epochs=3)
    alone.fit(X, y)
    assert "stored body outputs" not in alone.policy_["cache"]
    clear_caches()
    FineTunedClassifier(**kw, train_layers="head", max_epochs=1).fit(X, y)
    shared = clone(alone).fit(X, y)
    assert shared.policy_["cache"].endswith("head-only epochs on stored body outputs")
    assert shared.net_.module_.phase_cuts is None and shared.net_.module_.cut is None
    # head epochs on stored body outputs vs on the units after the cut
    assert_same_state(state(shared), state(alone))
    logits = alone.decision_function(X)
    assert_close_paths(shared.decision_function(X), logits)
    assert_far_apart(logits, untrained(alone, X, y).decision_function(X))


def test_stored_body_outputs_need_every_view():
    X, y = bands(16)
    kw = dict(**TINY, augment="light", batch_size=8, random_state=0)
    FineTunedClassifier(**kw, train_layers="head", augment_views=1, max_epochs=1).fit(
        X, y
    )
    more_views = FineTunedClassifier(
        **kw, train_layers=2, augment_views=2, freeze_epochs=1, max_epochs=2
    ).fit(X, y)
    assert "stored body outputs" not in more_views.policy_["cache"]


# ------------------------------------------------------------- bf16 steps
@pytest.mark.parametrize("fast_bf16", [True, False], ids=["bf16-cpu", "no-bf16"])
def test_bf16_steps_only_with_the_cache(fast_bf16):
    from torch import nn

    from sktransfer._runtime import force_cpu_bf16
    from sktransfer._training import FP32Conv2d

    X, y = bands(24)
    # lr=1e-2: the trained logits end far from the initial ones (a third of
    # their scale), far above the bf16 tolerance
    kw = dict(**TINY, augment=None, max_epochs=2, batch_size=8, lr=1e-2, random_state=0)
    seen = []

    class Spy(Callback):  # what the steps run in, seen from inside the fit
        def on_batch_end(self, net, batch=None, training=False, **kwargs):
            if training:
                with net._autocast():
                    seen.append(torch.get_autocast_dtype("cpu"))
                    seen.append(torch.is_autocast_enabled("cpu"))
                types = {type(m) for m in net.module_.modules()}
                seen.append(FP32Conv2d in types)

    with force_cpu_bf16(fast_bf16):
        cached = FineTunedClassifier(**kw, train_layers=2, callbacks=[Spy()]).fit(X, y)
        steps = list(seen)
        seen.clear()
        plain = FineTunedClassifier(
            **kw, train_layers=2, cache=False, callbacks=[Spy()]
        ).fit(X, y)
    fp32 = FineTunedClassifier(**kw, train_layers=2, precision="fp32").fit(X, y)
    if fast_bf16:
        assert cached.policy_["precision"].startswith("bf16 training steps")
        assert steps[:3] == [torch.bfloat16, True, True]
        # the depthwise convolutions are plain again: nothing of it is saved
        assert not any(isinstance(m, FP32Conv2d) for m in cached.net_.module_.modules())
        assert any(
            type(m) is nn.Conv2d and m.groups > 1 for m in cached.net_.module_.modules()
        )
        # the same model up to bf16 rounding of the trained units, compared on
        # logits: probabilities saturate (a model that never trained was 2e-5
        # from the trained one in probability, 2.4 in logits)
        logits = fp32.decision_function(X)
        assert_close_paths(cached.decision_function(X), logits, dtype="bf16")
        assert_far_apart(logits, untrained(fp32, X, y).decision_function(X), "bf16")
    else:
        assert cached.policy_["precision"] == "fp32"
        assert steps[1] is False and steps[2] is False
        # fp32 steps both; the fp32 fit (outside the forcing) may train in
        # another memory format (channels_last on a bf16 CPU): two paths
        assert_same_state(state(cached), state(fp32))
    # without the cache the frozen part would run in bf16 too: fp32 steps
    assert plain.policy_["precision"] == "fp32"
    assert seen[1] is False and seen[2] is False
    assert "step_autocast" not in cached.net_.config.to_dict()
