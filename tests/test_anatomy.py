"""Each family's anatomy (head, stages, cuts, drop-path slots), read once a fit."""

import numpy as np
import pytest
import torch
from conftest import FT_TINY, TinyNet, bands

from sktransfer import FineTunedClassifier
from sktransfer import _anatomy as anatomy_module
from sktransfer._backbones import (
    anatomy,
    drop_path_slots,
    load_backbone,
    probe_anatomy,
    strip_head,
)
from sktransfer._training import set_drop_path

# model, probe size -> head, last downsampling, first block after it, the
# last two composite blocks, the number of drop-path slots, the cut points
FAMILIES = {
    "efficientnet_lite0": (
        224,
        "classifier",
        "blocks.5.0",
        "blocks.5.1",
        ("blocks.5", "blocks.6"),
        9,
        ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"),
    ),
    "resnet18": (
        64,
        "fc",
        "layer4.0",
        "layer4.1",
        ("layer3", "layer4"),
        0,
        ("layer1.1", "layer2.1", "layer3.1", "layer4.1"),
    ),
    "efficientnet_b0": (
        64,
        "classifier.1",
        "features.6.0",
        "features.6.1",
        ("features.7", "features.8"),
        16,
        (
            "features.1.0",
            "features.2.1",
            "features.3.1",
            "features.5.2",
            "features.8.1",
        ),
    ),
    "timm/test_efficientnet": (
        64,
        "classifier",
        "blocks.4.0",
        "conv_head",
        ("blocks.3", "blocks.4"),
        0,
        ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"),
    ),
    "timm/resnet18": (
        64,
        "fc",
        "layer4.0",
        "layer4.1",
        ("layer3", "layer4"),
        8,
        ("act1", "layer1", "layer2", "layer3", "layer4"),
    ),
}


@pytest.mark.parametrize("model", list(FAMILIES))
def test_each_family_has_its_anatomy(model):
    size, head, down, after, blocks, n_slots, cuts = FAMILIES[model]
    net, _ = load_backbone(model, None)
    found, out = probe_anatomy(net, torch.zeros(2, 3, size, size))
    assert out.shape[0] == 2
    assert (found.head, found.last_downsampling, found.first_after) == (
        head,
        down,
        after,
    )
    assert found.blocks[-2:] == blocks
    assert len(found.drop_path_slots) == n_slots
    assert found.cut_points == cuts
    assert found.units[0] == found.stages[0] or found.stages[0] in found.units
    if hasattr(net, "feature_info"):  # timm: its own feature levels
        assert found.cut_points == tuple(d["module"] for d in net.feature_info)
    # names only (no probe): everything but the resolution
    static = anatomy(net)
    assert static.stages == found.stages and static.blocks == found.blocks
    assert static.last_downsampling is None


def test_a_plain_module_reads_its_anatomy_from_its_tree_and_the_probe():
    found, _ = probe_anatomy(TinyNet(), torch.zeros(2, 3, 16, 16))
    assert found.head == "fc"
    assert found.units == ("features.0", "features.1", "features.2") + (
        "features.3",
        "features.4",
        "features.5",
        "pool",
        "fc",
    )
    assert found.last_downsampling == "features.3"  # the stride-2 conv
    assert found.first_after == "features.4"
    assert found.cut_points == ("features.1", "features.4")
    assert found.drop_path_slots == ()


@pytest.mark.parametrize("model", ["timm/resnet18", "efficientnet_b0"])
def test_drop_path_goes_into_the_anatomy_slots(model):
    net, _ = load_backbone(model, None)
    slots = drop_path_slots(net)
    sites = set_drop_path(net, 0.2, slots)
    assert sites == [s.block for s in slots] and len(sites) > 1
    last = net.get_submodule(slots[-1].block)
    rate = getattr(last, slots[-1].slots[0])
    rate = rate.p if slots[-1].kind == "torchvision" else rate.drop_prob
    assert rate == pytest.approx(0.2)
    # without slots given, the same sites are read from the network
    again, _ = load_backbone(model, None)
    assert set_drop_path(again, 0.2) == sites


def test_one_probe_reads_the_anatomy_per_fit(monkeypatch):
    calls = []
    blocks = anatomy_module._blocks

    def counted(net):
        calls.append(type(net).__name__)
        return blocks(net)

    monkeypatch.setattr(anatomy_module, "_blocks", counted)
    X, y = bands(24)
    clf = FineTunedClassifier(**{**FT_TINY, "max_epochs": 1}).fit(X, y)
    assert len(calls) == 1
    # the default train_layers is that anatomy's first block after downsampling
    net, _ = load_backbone(FT_TINY["model"], None)
    strip_head(net)
    size = FT_TINY["input_size"]
    found, _ = probe_anatomy(net, torch.zeros(2, 3, size, size))
    assert len(calls) == 2
    assert clf.policy_["train_layers"] == found.first_after is not None
    assert np.isfinite(clf.predict_proba(X)).all()
