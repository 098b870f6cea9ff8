"""The training side's owners: TrainConfig, the phase switch, skorch's callbacks,
the one definition of a stage, and the few-shot heads' arithmetic in _heads."""

import dataclasses
import json
import math
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
from conftest import FT_TINY, InterruptAt, Snapshot, state_of
from numpy.testing import assert_array_equal
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from torch.optim.lr_scheduler import LambdaLR

import sktransfer
from sktransfer import (
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
    _activations,
    _backbones,
    _fewshot,
    _heads,
)
from sktransfer._activations import plan_cut
from sktransfer._backbones import (
    backbone_stages,
    load_backbone,
    sequential_units,
    strip_head,
)
from sktransfer._fit_callbacks import BestWeights, PhaseCurve
from sktransfer._runtime import clear_caches
from sktransfer._training import FineTuneModule, TrainConfig, resolve_trainable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_BN = torch.nn.modules.batchnorm._BatchNorm
CONFIG = {
    "trainable": frozenset({"conv_head.weight"}),
    "lr": 1e-3,
    "backbone_lr": 1e-4,
    "weight_decay": 1e-2,
    "l1": 0.0,
    "optimizer": "adamw",
    "freeze_epochs": 1,
}


@pytest.fixture(scope="module")
def data():
    """Noise images; class 1 has a bright top half."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(32, 16, 16, 3), dtype=np.uint8)
    y = np.arange(32) % 2
    X[y == 1, :8] = 255
    return X, y


# ------------------------------------------------------------------ TrainConfig
def test_train_config_is_frozen():
    config = TrainConfig(**CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.trainable = frozenset()
    assert isinstance(config.trainable, frozenset)  # no mutable set inside


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("trainable", {"conv_head.weight"}, TypeError),  # a mutable set
        ("trainable", frozenset({1}), TypeError),
        ("lr", "0.1", TypeError),
        ("lr", True, TypeError),
        ("backbone_lr", None, TypeError),
        ("l1", [0.1], TypeError),
        ("freeze_epochs", 1.5, TypeError),
        ("optimizer", "adam", ValueError),
        ("autocast", "bf16", TypeError),
        ("channels_last", 1, TypeError),
    ],
)
def test_train_config_is_typed(field, value, error):
    with pytest.raises(error, match=f"TrainConfig.{field}"):
        TrainConfig(**{**CONFIG, field: value})


def test_train_config_stores_plain_numbers():
    config = TrainConfig(**{**CONFIG, "lr": 1, "freeze_epochs": np.int64(2)})
    assert type(config.lr) is float and config.lr == 1.0
    assert type(config.freeze_epochs) is int and config.freeze_epochs == 2


@pytest.mark.parametrize("kind", ["avx512_bf16", "amx", "avx2"])
def test_config_runs_as_the_policy_says(kind):
    """Autocast and memory format come from the RuntimePolicy: channels_last
    where it was measured faster (avx512_bf16), NCHW on other CPU kinds; the
    step autocast only for a cached fit."""
    from sktransfer._runtime import force_cpu_kind, resolve_policy

    config = TrainConfig(**CONFIG)
    with force_cpu_kind(kind):
        policy = resolve_policy("cpu", "auto")
        fp32 = resolve_policy("cpu", "fp32")
    run = config.with_policy(policy)
    assert run.channels_last is (kind == "avx512_bf16")
    assert run.autocast is None and run.step_autocast is None
    cached = config.with_policy(policy, cached=True)
    assert cached.step_autocast == policy.step_autocast
    assert config.with_policy(fp32, cached=True).step_autocast is None
    assert config.autocast is None  # a copy: the original is unchanged


def test_train_config_dict_round_trip_and_old_files():
    config = dataclasses.replace(
        TrainConfig(**CONFIG), autocast=torch.bfloat16, channels_last=True
    )
    assert TrainConfig.from_dict(config.to_dict()) == config
    # A model file written before freeze_epochs was recorded: a plain set of
    # names and no freeze_epochs.
    old = {k: v for k, v in config.to_dict().items() if k != "freeze_epochs"}
    old["trainable"] = set(old["trainable"])
    loaded = TrainConfig.from_dict(old, freeze_epochs=3)
    assert loaded.freeze_epochs == 3
    assert loaded.trainable == config.trainable


def test_fit_builds_one_train_config(data):
    X, y = data
    clf = FineTunedClassifier(
        **FT_TINY, train_layers=2, freeze_epochs=5, lr=0.02, l1=1e-4
    ).fit(X, y)
    config = clf.net_.config
    assert isinstance(config, TrainConfig)
    assert not hasattr(clf.net_, "ft")
    assert config.lr == 0.02 and config.backbone_lr == pytest.approx(0.02 / 3)
    assert config.freeze_epochs == 2  # capped at max_epochs
    assert config.l1 == 1e-4 and config.optimizer == "adamw"
    body = clf.net_.module_.body
    assert config.trainable == frozenset(resolve_trainable(body, 2))


def test_saved_file_without_freeze_epochs_still_loads(data, tmp_path):
    """Files written before TrainConfig (a plain ``ft`` dict) load unchanged."""
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, train_layers=2, freeze_epochs=1).fit(X, y)
    path = sktransfer.save(clf, tmp_path / "new.skt")
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    manifest = json.loads(members["manifest.json"])

    def drop_freeze(node):
        if isinstance(node, dict):
            if "ft" in node and node["ft"].get("$") == "dict":
                items = node["ft"]["v"]
                node["ft"]["v"] = [kv for kv in items if kv[0] != "freeze_epochs"]
                assert len(node["ft"]["v"]) == len(items) - 1
                return True
            return any(drop_freeze(v) for v in node.values())
        if isinstance(node, list):
            return any(drop_freeze(v) for v in node)
        return False

    assert drop_freeze(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    old = tmp_path / "old.skt"
    with zipfile.ZipFile(old, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    loaded = sktransfer.load(old)
    assert loaded.net_.config.freeze_epochs == 1
    clear_caches()  # both run the whole network (no stored activations)
    assert_array_equal(loaded.decision_function(X), clf.decision_function(X))


# -------------------------------------------------------------------- the phase
class PhaseLog(Callback):
    """Per training batch: the module's phase, the body parameters that require
    a gradient, and the body BatchNorms in training mode (seen in forward)."""

    def on_train_begin(self, net, **kwargs):
        self.rows = []
        module = net.module_

        def look(mod, args):
            if mod.training:
                self.rows.append(
                    (
                        len(net.history),
                        mod.phase,
                        {n for n, p in mod.body.named_parameters() if p.requires_grad},
                        {
                            n
                            for n, m in mod.body.named_modules()
                            if isinstance(m, _BN) and m.training
                        },
                    )
                )

        self._hook = module.register_forward_pre_hook(look)

    def on_train_end(self, net, **kwargs):
        self._hook.remove()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_hook"}


@pytest.mark.parametrize("bn", ["frozen", "eval", "train"])
def test_phase_switch_trains_what_it_should(data, bn):
    X, y = data
    log, snap = PhaseLog(), Snapshot()
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 3},
        train_layers=2,
        freeze_epochs=1,
        bn=bn,
        lr=0.05,
        augment=None,
        callbacks=[log, snap],
    ).fit(X, y)
    module = clf.net_.module_
    trainable = clf.net_.config.trainable
    all_bns = {n for n, m in module.body.named_modules() if isinstance(m, _BN)}
    trained_bns = {n for n in all_bns if any(t.startswith(n + ".") for t in trainable)}
    assert trained_bns  # train_layers=2 on this net trains conv_head and bn2
    expected_bns = {"frozen": trained_bns, "eval": set(), "train": all_bns}[bn]
    if bn == "train":
        trainable = trainable | {  # bn="train" trains every BatchNorm's affine
            n
            for n, _ in module.body.named_parameters()
            if n.rsplit(".", 1)[0] in all_bns
        }
        assert trainable == clf.net_.config.trainable
    epochs = {row[0] for row in log.rows}
    assert epochs == {1, 2, 3}
    for epoch, phase, grads, training_bns in log.rows:
        if epoch == 1:
            assert phase == "head" and grads == set() and training_bns == set()
        else:
            assert phase == "body" and grads == set(trainable)
            assert training_bns == expected_bns
    # What changed in each phase: epoch 1 only the head, then the trained part
    # (exact: a frozen tensor is never written).
    before, head_phase = snap.states[0], snap.states[1]
    changed = {k for k in before if not torch.equal(before[k], head_phase[k])}
    assert changed and all(k.startswith("head.") for k in changed)
    after = snap.states[3]
    changed = {k[5:] for k in before if not torch.equal(before[k], after[k])}
    params = {k[5:] for k, _ in module.named_parameters() if k.startswith("body.")}
    assert {k for k in changed if k in params} == set(trainable)


def test_enter_phase_is_the_one_switch():
    net, _ = load_backbone(FT_TINY["model"], None)
    strip_head(net)
    module = FineTuneModule(net, torch.nn.Linear(8, 2))
    trainable = resolve_trainable(net, 2)
    module.enter_phase("head", trainable)
    assert module.phase == "head"
    assert not any(p.requires_grad for p in module.body.parameters())
    module.train()
    assert not any(m.training for m in module.body.modules())
    assert module.head.training
    # trained_bns reads the rule of the body phase without switching anything
    bns = module.trained_bns(trainable)
    assert [n for n, m in net.named_modules() if any(m is b for b in bns)] == ["bn2"]
    assert module.phase == "head"
    assert not any(m.training for m in module.body.modules())
    module.enter_phase("body", trainable)
    names = {n for n, p in module.body.named_parameters() if p.requires_grad}
    assert names == trainable
    module.train()
    assert {n for n, m in net.named_modules() if isinstance(m, _BN) and m.training} == {
        "bn2"
    }
    with pytest.raises(ValueError, match="phase must be"):
        module.enter_phase("all", trainable)
    assert not hasattr(module, "head_only")


# ----------------------------------------------------------- skorch's callbacks
def _callback(clf, kind):
    return next(cb for _, cb in clf.net_.callbacks_ if isinstance(cb, kind))


@pytest.mark.parametrize("monitor", ["valid_loss", "valid_acc"])
def test_early_stopping_restores_the_best_epoch(data, monitor):
    X, y = data
    snap = Snapshot()
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 5},
        train_layers="all",
        head="linear",
        lr=0.2,
        early_stopping=True,
        validation_fraction=0.25,
        patience=5,
        monitor=monitor,
        augment=None,
        callbacks=[snap],
    ).fit(X, y)
    assert isinstance(_callback(clf, BestWeights), EarlyStopping)
    scores = np.array(clf.history_[:, monitor])
    best = 1 + int(np.argmin(scores) if monitor == "valid_loss" else np.argmax(scores))
    assert clf.best_epoch_ == best == clf.history_[-1, "best_epoch"]
    assert clf.n_epochs_ == 5
    assert best < 5  # ties later on do not count as improvements
    chosen, final = snap.states[best], state_of(clf.net_.module_)
    names = [name for name, _ in clf.net_.module_.named_parameters()]
    assert any(not torch.equal(chosen[n], snap.states[-1][n]) for n in names)
    for name in names:  # restored as a copy: bit for bit
        assert torch.equal(final[name], chosen[name]), name


def test_patience_stops_early(data):
    X, y = data
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 8},
        train_layers="all",
        # saturates at once (validation loss 0.0 from epoch 2), so there is no
        # improvement left on any compute path (lr=5 depended on the CPU's
        # kernels: it kept improving in NCHW)
        lr=50.0,
        early_stopping=True,
        patience=1,
        augment=None,
        head_init="xavier",
    ).fit(X, y)
    best = _callback(clf, BestWeights)
    assert best.stopped_early_ and clf.n_epochs_ < 8
    assert clf.n_epochs_ == clf.best_epoch_ + 1


def test_interrupt_restores_best_and_warns(data):
    X, y = data
    snap = Snapshot()
    with pytest.warns(UserWarning, match=r"interrupted after 2 complete.*restored"):
        clf = FineTunedClassifier(
            **{**FT_TINY, "max_epochs": 5},
            train_layers=2,
            early_stopping=True,
            callbacks=[snap, InterruptAt(3)],
        ).fit(X, y)
    assert clf.n_epochs_ == 2 and clf.best_epoch_ in (1, 2)
    final = state_of(clf.net_.module_)
    for name, _ in clf.net_.module_.named_parameters():
        assert torch.equal(final[name], snap.states[clf.best_epoch_][name])


def test_interrupt_without_validation_keeps_last_weights(data):
    X, y = data
    with pytest.warns(UserWarning, match="last training step are kept"):
        clf = FineTunedClassifier(
            **{**FT_TINY, "max_epochs": 4}, train_layers=2, callbacks=[InterruptAt(2)]
        ).fit(X, y)
    assert clf.n_epochs_ == 1 and clf.best_epoch_ is None


def test_no_warning_when_training_runs_to_the_end(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = FineTunedClassifier(**FT_TINY, train_layers=2, early_stopping=True)
        clf.fit(X, y)
    assert not _callback(clf, BestWeights).stopped_early_


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_schedule_is_skorchs_lr_scheduler_restarted_per_phase(data, kind):
    X, y = data
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 3},
        train_layers=2,
        freeze_epochs=1,
        scheduler=kind,
        lr=0.01,
        backbone_lr=0.004,
    ).fit(X, y)
    schedule = _callback(clf, LRScheduler)
    assert schedule.policy is LambdaLR and schedule.step_every == "batch"
    assert schedule.lr_scheduler_ is None  # dropped after fit: it holds the optimizer
    lrs = [
        [b["event_lr"] for b in row["batches"] if "event_lr" in b]
        for row in clf.history_
    ]
    steps = len(lrs[0])
    assert steps == 4 and all(len(epoch) == steps for epoch in lrs)  # 32 / 8
    # group 0 is the body's (its base rate 0.004); the head keeps the 2.5x ratio
    phases = [lrs[0], lrs[1] + lrs[2]]
    for phase in phases:
        n = len(phase)
        for i, lr in enumerate(phase):
            t = i / n
            if kind == "cosine":
                factor = 0.5 * (1 + math.cos(math.pi * t))
            elif t < 0.3:
                factor = 0.04 + 0.96 * t / 0.3
            else:
                factor = 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))
            assert lr == pytest.approx(0.004 * factor, rel=1e-12)
    assert phases[1][0] == phases[0][0]  # restarted when the body is unfrozen


def test_phase_curve_pickles_and_fitted_model_is_lean(data):
    curve = PhaseCurve("cosine", [(0, 4), (4, 8)])
    assert curve(0) == curve(4) == 1.0  # restarted at step 4
    assert pickle.loads(pickle.dumps(curve))(8) == curve(8) == pytest.approx(0.5)
    X, y = data
    clf = FineTunedClassifier(**FT_TINY, train_layers="all", augment=None).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    # the first layer trains: no activation cache, so both run the whole
    # network, one path
    assert clf.policy_["cache"].startswith("off")
    assert_array_equal(again.decision_function(X), clf.decision_function(X))


# ------------------------------------------------------------ one stage notion
@pytest.mark.parametrize(
    "model, stages",
    [
        (
            "efficientnet_lite0",
            ["conv_stem", "bn1"]
            + [f"blocks.{i}" for i in range(7)]
            + ["conv_head", "bn2"],
        ),
        ("resnet18", ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]),
    ],
)
def test_one_definition_of_a_stage(model, stages):
    net, _ = load_backbone(model, None)
    strip_head(net)
    assert [n for n, _ in backbone_stages(net)] == stages
    units = [n for n, _ in sequential_units(net)]
    # the stages are the units that own parameters, in the same order
    assert [u for u in units if u in stages] == stages
    # the cache cuts at the first trained stage of train_layers=k
    probe = torch.rand(2, 3, 64, 64)
    for k in (1, 3):
        trainable = resolve_trainable(net, k)
        cut, reason = plan_cut(net, trainable, "frozen", probe)
        assert reason is None and units[cut] == stages[-k]


def test_the_activation_cache_has_no_stage_definition_of_its_own():
    assert _activations.sequential_units is _backbones.sequential_units
    assert not hasattr(_activations, "_CONTAINERS")


# ------------------------------------------------- few-shot heads use _heads
def test_fewshot_heads_use_the_heads_module(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 6))
    y = np.arange(30) % 3
    w = rng.uniform(0.5, 2, 30)
    calls = []
    for name in ("class_sums", "class_means", "cosine_logits"):
        real = getattr(_fewshot, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(_fewshot, name, spy)
    proto = PrototypeClassifier().fit(X, y, sample_weight=w)
    means = _heads.class_means(X, y, 3, w).numpy()
    np.testing.assert_allclose(proto.prototypes_, means, rtol=1e-12, atol=1e-15)
    scores = proto.decision_function(X)
    P = torch.from_numpy(proto.prototypes_)
    assert_array_equal(scores, _heads.cosine_logits(X, P, 10.0).numpy())
    assert {"class_sums", "cosine_logits"} <= set(calls)
    calls.clear()
    cos = CosineSoftmaxClassifier(max_iter=0).fit(X, y, sample_weight=w)
    assert_array_equal(cos.prototypes_, means)
    C = torch.from_numpy(cos.coef_)
    assert_array_equal(cos.decision_function(X), _heads.cosine_logits(X, C, 10.0))
    np.testing.assert_allclose(cos.decision_function(X), scores, rtol=1e-12)
    assert {"class_means", "cosine_logits"} <= set(calls)
    calls.clear()
    CosineSoftmaxClassifier(max_iter=3).fit(X, y)
    assert calls.count("cosine_logits") >= 3  # the training objective too
    # the few-shot module has no normalization of its own any more
    assert not hasattr(_fewshot, "_l2_normalize")
