"""Training stays finite, or stops with a clear error.

bf16 training steps: the two mechanisms behind the NaN on AMX.

* oneDNN's bf16 weight gradient of a convolution whose input is smaller than its
  stride is garbage (``benchmarks/bf16_conv_grad.py``): such convolutions run in
  fp32 inside the steps (``_training.bf16_unsafe_convs``).
* A cosine head on an all-zero feature row: no direction, so zero logits and no
  gradient, instead of ``F.normalize``'s 1e12-fold gradient.

Both are run with the bf16 detection forced on and off, so every CPU checks them.
A loss that does become NaN (training or validation) ends the fit with the same
"training diverged" error.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FT_TINY
from skorch.callbacks import Callback
from torch import nn

from sktransfer import FineTunedClassifier
from sktransfer._heads import CosineHead, class_means, normalize_rows
from sktransfer._runtime import force_cpu_bf16
from sktransfer._training import FP32Conv2d, bf16_unsafe_convs, fp32_convs

BOTH = pytest.mark.parametrize("fast_bf16", [True, False], ids=["bf16-cpu", "no-bf16"])


def test_unsafe_convs_are_the_sub_stride_and_depthwise_ones():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 4x4 -> 2x2: safe
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 8, 3, stride=2, padding=1),  # input 1x1 < stride 2
        nn.Conv2d(8, 8, 1),  # 1x1 map, stride 1: safe
    )
    net.train()
    unsafe = bf16_unsafe_convs(net, torch.zeros(2, 3, 4, 4))
    assert unsafe == [net[1], net[2]]
    assert all(m.training for m in net.modules())  # modes restored
    with fp32_convs(unsafe):
        assert [type(m) for m in net] == [nn.Conv2d, FP32Conv2d, FP32Conv2d, nn.Conv2d]
    assert all(type(m) is nn.Conv2d for m in net)


def test_fp32_conv_weight_gradient_equals_the_fp32_one_under_autocast():
    """A sub-stride convolution kept in fp32 gets fp32's exact weight gradient
    inside a bf16 autocast region (the raw bf16 kernel is what is garbage)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
    ref = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(8, 16, 1, 1)
    ref(x).pow(2).sum().backward()
    with fp32_convs([conv]), torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    out.float().pow(2).sum().backward()
    assert out.dtype == torch.float32
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad)


class MaxGrad(Callback):
    """Largest absolute gradient of any parameter over the fit."""

    def on_train_begin(self, net, **kwargs):
        self.value = 0.0

    def on_grad_computed(self, net, named_parameters, **kwargs):
        for _, p in named_parameters:
            if p.grad is not None:
                self.value = max(self.value, float(p.grad.abs().max()))


@BOTH
def test_small_resnet_trains_with_finite_bounded_gradients(fast_bf16):
    """The test that gave NaN on AMX: a tiny ResNet at 16 px reaches 1x1 maps
    with stride-2 convolutions in its trained stages."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    kw = {**FT_TINY, "model": "timm/test_resnet", "drop_path": 0.2}
    grads = {}
    for precision in ("auto", "fp32"):
        spy = MaxGrad()
        with force_cpu_bf16(fast_bf16):
            clf = FineTunedClassifier(**kw, precision=precision, callbacks=[spy])
            clf.fit(X, y)
        losses = clf.net_.history[:, "train_loss"]
        assert np.isfinite(losses).all()
        grads[precision] = spy.value
    if fast_bf16:
        assert clf.policy_["precision"] == "fp32"  # the last fit: fp32 asked
    # bf16 steps see gradients of the fp32 size (without the fp32 convolutions
    # they reached 1e25-1e31 here, and NaN on AMX)
    assert grads["auto"] < 3 * grads["fp32"] + 1e-3


@BOTH
def test_cosine_head_on_zero_rows_is_finite_and_sends_no_gradient(fast_bf16):
    head = CosineHead(8, 3)
    x = torch.zeros(4, 8, requires_grad=True)
    with (
        force_cpu_bf16(fast_bf16),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16),
    ):
        logits = head(x)
        loss = F.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(np.log(3), rel=1e-3)
    assert torch.equal(logits.float(), torch.zeros(4, 3))
    assert torch.equal(x.grad, torch.zeros_like(x))  # F.normalize's: ~1e12
    assert torch.isfinite(head.weight.grad).all()


def test_normalize_rows_matches_f_normalize_on_real_rows():
    x = torch.randn(16, 5, dtype=torch.float64)
    x[3] = 0
    x[4] = 1e-9
    want = F.normalize(x, dim=1)
    want[4] = 0  # shorter than NORM_EPS: no direction
    assert torch.equal(normalize_rows(x), want)  # same kernel, same rounding
    means = class_means(x, torch.tensor([0] * 8 + [1] * 8), 2)
    torch.testing.assert_close(means.norm(dim=1), torch.ones(2, dtype=torch.float64))


def test_nan_validation_loss_is_a_diverged_error_not_a_missing_best_epoch():
    """A NaN validation loss left best_epoch_ None and the last weights kept;
    now it stops the fit with the training-divergence error."""

    class PoisonAfterTraining(Callback):  # the epoch's training loss stays finite
        def on_batch_begin(self, net, training=False, **kwargs):
            if not training and len(net.history) == 2:  # epoch 2's validation
                with torch.no_grad():
                    net.module_.head.weight.fill_(float("nan"))

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 2
    clf = FineTunedClassifier(
        **{**FT_TINY, "max_epochs": 3},
        head="linear",
        early_stopping=True,
        callbacks=[PoisonAfterTraining()],
    )
    with pytest.raises(ValueError, match="validation loss became nan in epoch 2"):
        clf.fit(X, y)


@pytest.mark.parametrize("entry", ["x", print, ("a", 3), ("a",), (3, Callback())])
def test_invalid_callbacks_entry_is_a_clear_type_error(entry):
    X = np.zeros((8, 16, 16, 3), np.uint8)
    y = np.arange(8) % 2
    with pytest.raises(TypeError, match=r"callbacks\[0\] is .*skorch callback"):
        FineTunedClassifier(**FT_TINY, callbacks=[entry]).fit(X, y)
