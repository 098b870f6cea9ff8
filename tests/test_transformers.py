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
from conftest import assert_close_paths

from sktransfer import CNNFeatureExtractor, load_backbone

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
    ext = CNNFeatureExtractor(**VIT, layer=["blocks.1", "blocks.5"], pooling="cls")
    codes = ext.fit(images).transform(images)
    one = CNNFeatureExtractor(**VIT, layer="blocks.5", pooling="cls").fit(images)
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
