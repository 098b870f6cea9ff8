"""Which convolutions the CPU's bf16 kernels get wrong in training.

oneDNN's bf16 weight gradient of a convolution whose input is smaller than its
stride (a 3x3 stride-2 convolution on a 1x1 map) came out as garbage on the
CPUs this was run on -- up to 1e37, or NaN, different from run to run -- while
the forward pass and the input gradient were right. That made the bf16
training steps' loss NaN on an AMX Xeon (small networks at small input sizes
reach 1x1 maps in their last stages). ``sktransfer._training.bf16_unsafe_convs``
keeps such convolutions (and depthwise ones) in fp32 inside bf16 steps.

This scans shapes on the CPU at hand: for each (input size, kernel, stride,
padding), six trials of a 32-channel convolution's weight gradient in bf16
autocast against fp32. A shape is "bad" when any trial is off by more than 10%
(bf16 rounding is ~0.5%). The last column says whether the rule covers it.

Run: ``python benchmarks/bf16_conv_grad.py``; writes
``benchmarks/results/bf16_conv_grad.txt``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402
from torch import nn  # noqa: E402

from sktransfer._training import bf16_unsafe_convs  # noqa: E402


def weight_grad_error(conv, x):
    """Relative max error of the bf16 weight gradient against fp32."""
    ref = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        groups=conv.groups,
        bias=False,
    )
    ref.load_state_dict(conv.state_dict())
    ref(x).pow(2).sum().backward()
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    out.float().pow(2).sum().backward()
    err = (conv.weight.grad - ref.weight.grad).abs().max()
    return float(err / ref.weight.grad.abs().max().clamp_min(1e-30))


def main():
    log = Log()
    log.say(f"CPU: {cpu_kind()}; torch {torch.__version__}")
    log.say("bf16 weight gradient vs fp32, 32 channels, batch 8, 6 trials each")
    log.say(f"{'input':>5} {'k':>2} {'s':>2} {'p':>2} {'groups':>6}  max error  rule")
    torch.manual_seed(0)
    n_bad = n_missed = 0
    shapes = itertools.product([1, 2, 3, 4, 7], [1, 3, 5], [1, 2, 3, 4], [0, 1, 2])
    for (hw, k, s, p), groups in itertools.product(shapes, [1, 32]):
        if p > k // 2 or hw + 2 * p < k or (groups > 1 and k == 1):
            continue
        conv = nn.Conv2d(32, 32, k, stride=s, padding=p, groups=groups, bias=False)
        x = torch.randn(8, 32, hw, hw)
        errors = [weight_grad_error(conv, x) for _ in range(6)]
        worst = max(errors) if all(e == e for e in errors) else float("nan")
        if not worst <= 0.1:
            covered = conv in bf16_unsafe_convs(conv, x[:2])
            n_bad += 1
            n_missed += not covered
            log.say(
                f"{hw:>5} {k:>2} {s:>2} {p:>2} {groups:>6}  {worst:9.2g}  "
                f"{'fp32' if covered else 'MISSED'}"
            )
    log.say(f"{n_bad} bad shape(s), {n_missed} not covered by bf16_unsafe_convs")
    log.save("bf16_conv_grad.txt")
    return 1 if n_missed else 0


if __name__ == "__main__":
    sys.exit(main())
