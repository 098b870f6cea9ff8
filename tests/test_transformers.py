"""Transformers first-class: ViT token pooling, block layers, the activation
cache's cut between blocks, layer-wise learning-rate decay (issue 24, item 3).

timm's ``test_vit`` (6 blocks, dim 64, class token, dynamic image size) and
``test_vit2`` (a register token, no class token, average pooling) with random
weights at 32 px; ``vit_tiny_patch16_224`` (12 blocks, fixed 224 px) where the
real size matters. No network access.
"""

import numpy as np
import pytest
import torch
from conftest import assert_close_paths, assert_far_apart, bands, untrained

from sktransfer import (
    CNNFeatureExtractor,
    FineTunedClassifier,
    FineTunedRegressor,
    load_backbone,
)
from sktransfer._images import Preprocessor

VIT = {"model": "timm/test_vit", "weights": None, "input_size": 32}
VIT_REG = {"model": "timm/test_vit2", "weights": None, "input_size": 32}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


def _tokens(model, images, layer):
    """``layer``'s raw output on the images, computed with timm's network itself."""
    net, prep = load_backbone(model, None)
    ext = CNNFeatureExtractor(model=model, weights=None, input_size=32).fit(images)
    from sktransfer._images import Preprocessor, iter_batches

    batch = next(
        iter(
            iter_batches(
                ext._check_X(images),
                Preprocessor(ext.preprocessing_),
                64,
                num_workers=0,
            )
        )
    )
    got = {}
    handle = net.get_submodule(layer).register_forward_hook(
        lambda m, a, out: got.setdefault("out", out)
    )
    with torch.no_grad():
        net.eval()(batch)
    handle.remove()
    return net, batch, got["out"]


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax", "cls", None])
def test_vit_block_pooling_leaves_out_the_prefix_tokens(images, pooling):
    net, _, tokens = _tokens("timm/test_vit", images, "blocks.3")
    assert net.num_prefix_tokens == 1 and tokens.ndim == 3
    patches = tokens[:, 1:]  # the class token is token 0
    want = {
        "avg": patches.mean(1),
        "max": patches.amax(1),
        "avgmax": torch.cat([patches.mean(1), patches.amax(1)], 1),
        "cls": tokens[:, 0],
        None: tokens.flatten(1),  # the whole grid, class token included
    }[pooling]
    ext = CNNFeatureExtractor(
        **VIT, layer="blocks.3", pooling=pooling, engine="torch"
    ).fit(images)
    codes = ext.transform(images)
    assert codes.shape == (len(images), want.shape[1]) == (5, ext.n_features_out_)
    assert_close_paths(codes, want.numpy())
    part = pooling or "flat"
    assert ext.get_feature_names_out()[0] == f"test_vit.blocks.3.{part}_0"


def test_register_tokens_are_left_out_and_cls_needs_a_class_token(images):
    net, _, tokens = _tokens("timm/test_vit2", images, "blocks.1")
    assert net.num_prefix_tokens == 1 and net.cls_token is None  # a register
    ext = CNNFeatureExtractor(**VIT_REG, layer="blocks.1", engine="torch").fit(images)
    assert_close_paths(ext.transform(images), tokens[:, 1:].mean(1).numpy())
    with pytest.raises(ValueError, match="has none .*register tokens.*'avg'"):
        CNNFeatureExtractor(**VIT_REG, layer="blocks.1", pooling="cls").fit(images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": "timm/test_efficientnet"}, "for transformers with one"),
        ({**VIT, "layer": "patch_embed.proj"}, "outputs no tokens"),
    ],
)
def test_cls_pooling_without_a_class_token_is_a_clear_error(images, kwargs, match):
    params = {"weights": None, "input_size": 32, "pooling": "cls", **kwargs}
    with pytest.raises(ValueError, match=match):
        CNNFeatureExtractor(**params).fit(images)


def test_vit_penultimate_codes_are_timms_pre_logits(images):
    """layer=None: the normed class token, as forward_head(pre_logits=True)."""
    net, batch, _ = _tokens("timm/test_vit", images, "norm")
    with torch.no_grad():
        want = net.forward_head(net.forward_features(batch), pre_logits=True)
    ext = CNNFeatureExtractor(**VIT, engine="torch").fit(images)
    assert ext.n_features_out_ == net.num_features == 64
    assert_close_paths(ext.transform(images), want.numpy())
    # ... the class token of the final norm: pooling="cls" there says the same
    cls = CNNFeatureExtractor(**VIT, layer="norm", pooling="cls", engine="torch")
    assert_close_paths(cls.fit(images).transform(images), want.numpy())


def test_vit_blocks_are_layer_names(images):
    """blocks.N of a ViT name layers; several come from one forward pass."""
    from sktransfer import list_layers

    names = list_layers("timm/test_vit")
    assert [f"blocks.{i}" for i in range(6)] == [
        n for n in names if n.startswith("blocks.") and n.count(".") == 1
    ]
    ext = CNNFeatureExtractor(
        **VIT, layer=["blocks.1", "blocks.5"], pooling="cls", engine="torch"
    )
    codes = ext.fit(images).transform(images)
    one = CNNFeatureExtractor(
        **VIT, layer="blocks.5", pooling="cls", engine="torch"
    ).fit(images)
    assert codes.shape == (5, 128)
    assert_close_paths(codes[:, 64:], one.transform(images))
    with pytest.raises(ValueError, match="unknown layer 'blocks.9'.*blocks.5"):
        CNNFeatureExtractor(**VIT, layer="blocks.9").fit(images)


def test_vit_codes_onnx_engine_match_torch(images):
    """The exported graph pools the same tokens (engine='onnxruntime')."""
    pytest.importorskip("onnxruntime")
    kw = {**VIT, "layer": ["blocks.2", "norm"], "pooling": "avgmax"}
    eager = CNNFeatureExtractor(**kw, engine="torch").fit(images).transform(images)
    onnx = CNNFeatureExtractor(**kw, engine="onnxruntime").fit(images)
    assert_close_paths(onnx.transform(images), eager)


# ------------------------------------------------------------------ fine-tuning
FT_VIT = {**VIT, "max_epochs": 2, "batch_size": 4, "random_state": 0}


@pytest.fixture(scope="module")
def vit_data():
    return bands(12, size=32)


@pytest.mark.parametrize(
    "train_layers, cut, derived",
    [
        ("blocks.4", "after blocks.3 (5 of 8 units", False),
        # stages: patch_embed, blocks.0 .. blocks.5, norm; the checkpoint is
        # where the default trains when nothing downsamples: the last 3 stages
        (1, "after blocks.5 (7 of 8 units", True),
        ("head", "after pool (8 of 8 units", True),
    ],
)
def test_vit_activation_cache_cuts_between_blocks(vit_data, train_layers, cut, derived):
    """Cache on predicts what cache off does; the cut is between blocks."""
    X, y = vit_data
    kw = {**FT_VIT, "train_layers": train_layers, "augment": None}
    cached = FineTunedClassifier(**kw).fit(X, y)
    plain = FineTunedClassifier(**kw, cache=False).fit(X, y)
    note = cached.policy_["cache"]
    assert note.startswith(cut), note
    assert ("derived from the shared checkpoint after blocks.3" in note) == derived
    assert plain.policy_["cache"] == "off: cache=False"
    assert_close_paths(cached.decision_function(X), plain.decision_function(X))
    assert_far_apart(
        cached.decision_function(X), untrained(cached, X, y).decision_function(X)
    )
    assert set(cached.predict(X)) <= {0, 1}


def test_vit_cut_units_compose_to_the_network():
    from sktransfer._activations import cache_units, plan_cut
    from sktransfer._anatomy import strip_head
    from sktransfer._vit import token_units

    net, _ = load_backbone("timm/test_vit2", None)  # register token, avg pool
    strip_head(net)  # as a fit's body
    names = ["embed", *[f"blocks.{i}" for i in range(8)], "pool"]
    units = token_units(net)
    assert [n for n, _ in units] == names
    assert [n for n, _ in cache_units(net, set(), ("patch_embed",))] == names
    probe = torch.zeros(2, 3, 32, 32)
    trainable = {n for n, _ in net.named_parameters() if n.startswith("fc_norm.")}
    assert plan_cut(net, trainable, "frozen", probe) == (len(units) - 1, None)
    # the embeddings' tensors are the network's: training them cuts nothing
    assert plan_cut(net, {"pos_embed"}, "frozen", probe)[0] is None
    assert token_units(load_backbone("timm/test_efficientnet", None)[0]) is None


def _group_lrs(clf):
    """Each parameter of the fitted module -> the base rate of its group."""
    rate = {}
    for group in clf.net_.optimizer_.param_groups:
        for p in group["params"]:
            rate[id(p)] = group["base_lr"]
    return {n: rate.get(id(p)) for n, p in clf.net_.module_.named_parameters()}


def test_layer_decay_groups_follow_the_blocks(vit_data):
    """Block i of n at lr * d ** (n - i), embeddings d ** (n + 1), head lr."""
    X, y = vit_data
    lr, d, n = 1e-2, 0.5, 6
    clf = FineTunedClassifier(
        **{**FT_VIT, "max_epochs": 1}, train_layers="all", lr=lr, layer_decay=d
    ).fit(X, y)
    got = _group_lrs(clf)
    for name, value in got.items():
        if name.startswith("head."):
            want = lr
        elif name.startswith("body.blocks."):
            i = int(name.split(".")[2])
            want = lr * d ** (n - i)
        elif name.startswith("body.norm."):  # with the last block (timm's)
            want = lr * d**1
        else:  # cls_token, pos_embed, patch_embed
            assert name.split(".")[1] in ("cls_token", "pos_embed", "patch_embed")
            want = lr * d ** (n + 1)
        assert value == want, (name, value, want)
    groups = {g["name"]: g for g in clf.net_.optimizer_.param_groups}
    assert len(groups) == 2 * (n + 1) + 2  # layers 0..n, with / without decay
    # timm's no_weight_decay(): no decay on the class token, position embedding
    tokens = {id(clf.net_.module_.body.cls_token), id(clf.net_.module_.body.pos_embed)}
    for g in groups.values():
        if any(id(p) in tokens for p in g["params"]):
            assert g["weight_decay"] == 0.0


def test_layer_decay_off_and_with_backbone_lr(vit_data):
    X, y = vit_data
    kw = {**FT_VIT, "max_epochs": 1, "train_layers": "blocks.4", "lr": 3e-3}
    off = _group_lrs(FineTunedClassifier(**kw).fit(X, y))
    body = {v for k, v in off.items() if k.startswith("body.") and v is not None}
    assert body == {3e-3 / 3}  # one body rate, lr / 3
    assert off["body.blocks.3.attn.qkv.weight"] is None  # frozen: no group
    on = _group_lrs(
        FineTunedClassifier(**kw, layer_decay=0.8, backbone_lr=1e-3).fit(X, y)
    )
    assert on["body.blocks.4.attn.qkv.weight"] == 1e-3 * 0.8**2
    assert on["body.norm.weight"] == 1e-3 * 0.8**1
    assert on["head.weight"] == 3e-3
    assert on["body.blocks.3.attn.qkv.weight"] is None


def test_layer_scales_without_a_group_matcher_count_stages():
    """torchvision / plain modules: one layer per stage (what train_layers counts)."""
    from sktransfer._anatomy import strip_head
    from sktransfer._trainer import layer_scales

    net, _ = load_backbone("resnet18", None)
    strip_head(net)
    scales = layer_scales(net, 0.5)  # stages conv1, bn1, layer1 .. layer4
    assert scales["conv1.weight"] == (1, 0.5**6)
    assert scales["layer1.0.conv1.weight"] == (3, 0.5**4)
    assert scales["layer4.1.bn2.bias"] == (6, 0.5**1)


@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_layer_decay_out_of_range_is_a_clear_error(vit_data, bad):
    X, y = vit_data
    with pytest.raises(ValueError, match="layer_decay"):
        FineTunedClassifier(**FT_VIT, layer_decay=bad).fit(X, y)


def test_vit_regressor_takes_layer_decay(vit_data):
    X, _ = vit_data
    target = np.linspace(0, 1, len(X))
    reg = FineTunedRegressor(
        **{**FT_VIT, "max_epochs": 1}, train_layers="blocks.4", layer_decay=0.5
    ).fit(X, target)
    lrs = _group_lrs(reg)
    assert lrs["body.blocks.5.mlp.fc1.weight"] == reg.lr * 0.5
    assert reg.predict(X).shape == (len(X),)


def test_saved_vit_model_predicts_the_same(vit_data, tmp_path):
    import sktransfer

    X, y = vit_data
    clf = FineTunedClassifier(
        **FT_VIT, train_layers="blocks.4", layer_decay=0.7, augment=None
    ).fit(X, y)
    loaded = sktransfer.load(sktransfer.save(clf, tmp_path / "vit.skt"))
    assert loaded.layer_decay == 0.7
    assert loaded.net_.config.layer_decay == 0.7
    assert_close_paths(loaded.decision_function(X), clf.decision_function(X))
    ext = CNNFeatureExtractor(**VIT, layer="blocks.2", pooling="cls", engine="torch")
    ext = ext.fit(X)
    back = sktransfer.load(sktransfer.save(ext, tmp_path / "ext.skt"))
    assert_close_paths(back.transform(X), ext.transform(X))


@pytest.fixture(scope="module")
def tiny_224():
    """6 images at vit_tiny_patch16_224's own 224 px."""
    X, y = bands(6, size=224)
    return X, y


def test_vit_tiny_codes_and_fine_tuning(tiny_224):
    """vit_tiny_patch16_224 (12 blocks, random weights): codes, a fine-tune with
    layer decay, and the cache's checkpoint where nothing downsamples."""
    X, y = tiny_224
    tiny = {"model": "timm/vit_tiny_patch16_224", "weights": None}
    ext = CNNFeatureExtractor(
        **tiny, layer=["blocks.11", "norm"], pooling="cls", engine="torch"
    )
    codes = ext.fit(X).transform(X)
    assert codes.shape == (6, 2 * 192) and np.isfinite(codes).all()
    kw = {**tiny, "max_epochs": 1, "batch_size": 3, "random_state": 0}
    kw.update(augment=None, train_layers=2, layer_decay=0.75)
    cached = FineTunedClassifier(**kw).fit(X, y)
    # stages: patch_embed, blocks.0 .. blocks.11, norm: the checkpoint is the
    # input of blocks.10 (the last 3 stages), the cut of train_layers=2 after it
    note = cached.policy_["cache"]
    assert note.startswith("after blocks.10 (12 of 14 units frozen)"), note
    assert "derived from the shared checkpoint after blocks.9" in note
    lrs = _group_lrs(cached)
    assert lrs["body.blocks.11.attn.proj.weight"] == cached.lr * 0.75**1
    assert lrs["body.blocks.10.attn.proj.weight"] is None
    plain = FineTunedClassifier(**kw, cache=False).fit(X, y)
    assert_close_paths(cached.decision_function(X), plain.decision_function(X))


def test_vit_frozen_prefix_runs_on_onnx_runtime(vit_data, monkeypatch):
    """The embed unit and the frozen blocks export as one graph, no fallback."""
    pytest.importorskip("onnxruntime")
    import warnings

    import sktransfer._runtime as runtime
    from sktransfer._activations import _PREFIX_ENGINES

    monkeypatch.setattr(runtime, "TRACE_MIN_FORWARDS", 1)
    X, y = vit_data
    kw = {**FT_VIT, "max_epochs": 1, "train_layers": "blocks.4", "augment": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would warn
        clf = FineTunedClassifier(**kw).fit(X, y)
    assert {k[1]: e.kind for k, e in _PREFIX_ENGINES.items()} == {
        "embed": "onnxruntime"
    }
    assert clf.predict(X).shape == (len(X),)


def test_vits_of_any_image_size_read_the_same_anatomy():
    """A ViT taking any image size (timm's dynamic_img_size: (b, h, w, d)
    patch tokens, test_vit) and one of fixed size ((b, n, d) tokens) never
    downsample between blocks: the patch embedding is the stem, and the
    default policy trains the same last stages of both."""
    from sktransfer._anatomy import anatomy
    from sktransfer._backbones import load_backbone

    for model, size in (("timm/test_vit", 32), ("timm/vit_tiny_patch16_224", 224)):
        net, _ = load_backbone(model, None)
        found = anatomy(net, torch.zeros(1, 3, size, size))
        assert (found.last_downsampling, found.first_after) == (None, None), model


def test_vit_takes_any_input_size(tiny_224):
    """A ViT is built for any image size (its position embeddings follow the
    patch grid): input_size= works as for a CNN, and at the weights' own size
    the codes are those of the network built without the option."""
    import timm

    X, y = tiny_224
    tiny = {"model": "timm/vit_tiny_patch16_224", "weights": None}
    small = CNNFeatureExtractor(**tiny, input_size=64, engine="torch").fit(X)
    assert small.transform(X).shape == (6, 192)
    clf = FineTunedClassifier(**tiny, input_size=64, max_epochs=1, batch_size=3)
    assert clf.fit(X, y).predict(X).shape == (6,)
    ext = CNNFeatureExtractor(**tiny, engine="torch").fit(X)
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    fixed.load_state_dict(ext._net().state_dict(), strict=False)
    fixed.reset_classifier(0)
    x = Preprocessor(ext.preprocessing_)(torch.as_tensor(X).permute(0, 3, 1, 2) / 255)
    with torch.no_grad():
        want = fixed.eval()(x)
    assert_close_paths(ext.transform(X), want)
