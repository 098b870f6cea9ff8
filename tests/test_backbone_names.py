"""Every form of backbone name, offline: hf-hub:, timm tags, torchvision enums, files.

A Hugging Face cache is laid out in ``tmp_path`` the way ``huggingface_hub``
keeps downloads (``models--org--repo/snapshots/<rev>/`` + ``refs/main``), with
the files ``timm.models.save_for_hf`` writes (config.json, model.safetensors),
and read with ``HF_HUB_OFFLINE=1``: no test touches the network.
"""

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import timm
import torch
from timm.models import save_for_hf

from sktransfer import CNNFeatureExtractor, load_backbone
from sktransfer._backbones import _CACHE, check_spec, family_of, model_display_name

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache; ``add(repo)`` publishes a tiny timm net."""
    home = tmp_path / "hf"
    hub = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import: patch the constants too
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    _CACHE.clear()  # loaded networks are kept per name, per process

    def add(repo, arch="test_efficientnet", num_classes=7, seed=0):
        torch.manual_seed(seed)
        net = timm.create_model(arch, pretrained=False, num_classes=num_classes)
        folder = hub / f"models--{repo.replace('/', '--')}"
        snapshot = folder / "snapshots" / REV
        snapshot.mkdir(parents=True)
        save_for_hf(net, snapshot, model_config={"num_classes": num_classes})
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(REV)
        return net.eval()

    yield add
    _CACHE.clear()


def images(n=4, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hf_hub_name_loads_offline_from_the_cache_end_to_end(hf_cache):
    saved = hf_cache("acme/tiny-eff")
    ext = CNNFeatureExtractor(model="hf-hub:acme/tiny-eff", input_size=48)
    codes = ext.fit_transform(images())
    assert codes.shape == (4, saved.num_features)
    assert np.isfinite(codes).all()
    assert same_state(ext.backbone_, saved)
    # mean / std / interpolation from the weights' config; input_size: the size
    p = ext.preprocessing_
    assert p.input_size == (48, 48)
    assert (p.interpolation, p.crop_pct) == ("bicubic", 0.95)
    assert p.mean == pytest.approx(saved.pretrained_cfg["mean"])
    assert ext.get_feature_names_out()[0].startswith("tiny-eff")


def test_hf_hub_weights_none_builds_the_configured_architecture(hf_cache):
    hf_cache("acme/tiny-eff", num_classes=7)
    net, prep = load_backbone("hf-hub:acme/tiny-eff", None, seed=1)
    again, _ = load_backbone("hf-hub:acme/tiny-eff", None, seed=1)
    assert net.num_classes == 7 and same_state(net, again)
    assert prep.input_size == (160, 160)


def test_timm_tag_names_are_the_timm_hub_repo(hf_cache):
    saved = hf_cache("timm/test_efficientnet.r160_in1k", num_classes=1000)
    net, prep = load_backbone("timm/test_efficientnet.r160_in1k", "imagenet")
    assert same_state(net, saved)
    assert prep.interpolation == "bicubic"
    assert model_display_name("timm/test_efficientnet.r160_in1k") == (
        "test_efficientnet.r160_in1k"
    )


def test_local_dir_name_loads_a_saved_folder(tmp_path):
    torch.manual_seed(0)
    saved = timm.create_model("test_efficientnet", num_classes=3).eval()
    save_for_hf(saved, tmp_path / "mine", model_config={"num_classes": 3})
    net, _ = load_backbone(f"local-dir:{tmp_path / 'mine'}", "imagenet")
    assert same_state(net, saved)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(f"local-dir:{tmp_path / 'nothing'}", "imagenet")


@pytest.mark.parametrize(
    "model, repo",
    [
        ("hf-hub:acme/not-cached", "acme/not-cached"),
        ("timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k"),
    ],
)
def test_missing_weights_offline_say_how_to_get_them(hf_cache, model, repo):
    with pytest.raises(FileNotFoundError) as info:
        load_backbone(model, "imagenet")
    message = str(info.value)
    assert f"hf download {repo}" in message
    assert "HF_HUB_OFFLINE is set" in message and "weights=None" in message
    assert info.value.__cause__ is None  # no huggingface_hub stack trace


@pytest.mark.parametrize(
    "model, weights, match",
    [
        ("hf-hub:no-org", None, "hf-hub:<org>/<repo>"),
        ("hf-hub:acme/x", "laion2b", "unknown weights"),
        ("timm/not_a_model_xyz", None, "unknown timm model"),
        ("resnet18", "IMAGENET9K", "IMAGENET1K_V1"),
        ("resnet_18", None, "Did you mean"),
    ],
)
def test_bad_names_are_refused_before_anything_is_built(model, weights, match):
    with pytest.raises(ValueError, match=match):
        check_spec(model, weights)


def test_torchvision_weight_enums_and_their_names_offline(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    saved = resnet18().eval()
    # the torch hub cache holds the file: torchvision reads it, no download
    torch.save(saved.state_dict(), checkpoints / weights.url.rpartition("/")[2])
    _CACHE.clear()
    try:
        for spec in (weights, "ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1"):
            net, prep = load_backbone("resnet18", spec)
            assert same_state(net, saved), spec
            assert (prep.input_size, prep.crop_pct) == ((224, 224), 224 / 256)
    finally:
        _CACHE.clear()


def test_each_spec_has_its_family():
    from conftest import TinyNet

    names = {
        "efficientnet_lite0": "shipped",
        "hf-hub:acme/tiny": "hf-hub",
        "local-dir:/models/mine": "hf-hub",
        "timm/resnet18": "timm",
        "resnet18": "torchvision",
    }
    for model, family in names.items():
        assert family_of(model).name == family, model
    assert family_of(TinyNet()).name == "module"
    with pytest.raises(TypeError, match="model must be a model name"):
        family_of(3)
