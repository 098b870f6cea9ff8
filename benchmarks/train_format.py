"""Training step on the CPU: NCHW vs channels_last (fp32) vs bf16 autocast.

The last variant, bf16 with the depthwise convolutions in fp32
(``sktransfer._training.fp32_convs``), is what ``precision="auto"`` runs
the steps of a cached fit in on a CPU with native bf16.

Issue 13 item 5: a memory format or precision is used for training only where
it is measured faster (and accuracy-neutral) on the CPU at hand. channels_last
in fp32 is the same arithmetic up to summation order; bf16 is not, and is
only worth an accuracy check where it is faster.

What is timed: one forward + backward of a batch of 16 through the part a
fine-tune trains -- EfficientNet-Lite0 from ``blocks.5`` on (``train_layers=4``
on cached ``blocks.4`` activations at 224 px) and ResNet-18 from ``layer3`` on
-- with a new 10-class head. Four interleaved rounds of 5 steps per variant;
the best round of each is reported.

Run: ``python benchmarks/train_format.py``; writes
``benchmarks/results/train_format.txt``.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402
from torch import nn  # noqa: E402

from sktransfer import load_backbone  # noqa: E402
from sktransfer._training import bf16_unsafe_convs, fp32_convs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_format.txt"


def step(module, x, autocast):
    if not autocast:
        module(x).float().sum().backward()
        return
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    out.float().sum().backward()


def step_fp32_convs(convs):
    """A bf16 step with ``convs`` in fp32 (what the cached fit's steps run)."""

    def run(module, x, autocast):
        with fp32_convs(convs):
            step(module, x, autocast)

    return run


def bench(suffix, h):
    suffix.train()
    cl = copy.deepcopy(suffix).to(memory_format=torch.channels_last)
    hcl = h.contiguous(memory_format=torch.channels_last)
    variants = {
        "NCHW fp32": (suffix, h, False, step),
        "channels_last fp32": (cl, hcl, False, step),
        "channels_last bf16": (cl, hcl, True, step),
        "cl bf16, dw fp32": (
            cl,
            hcl,
            True,
            step_fp32_convs(bf16_unsafe_convs(cl, hcl[:2])),
        ),
    }
    times = {k: [] for k in variants}
    for _ in range(4):
        for name, (m, x, bf16, run) in variants.items():
            run(m, x, bf16)
            t = time.perf_counter()
            for _ in range(5):
                run(m, x, bf16)
            times[name].append((time.perf_counter() - t) / 5 * 1000)
    return {k: min(v) for k, v in times.items()}


def main():
    log = Log()
    say = log.say

    say(f"CPU: {cpu_kind()}; torch threads {torch.get_num_threads()}")
    say(f"load average at start: {os.getloadavg()}")
    x = torch.randn(16, 3, 224, 224)
    lite, _ = load_backbone("efficientnet_lite0", "imagenet")
    lite.eval()
    with torch.no_grad():
        h = lite.bn1(lite.conv_stem(x))
        for i in range(5):
            h = lite.blocks[i](h)
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    cases = {
        "EfficientNet-Lite0 blocks.5 on": (
            nn.Sequential(
                lite.blocks[5],
                lite.blocks[6],
                lite.conv_head,
                lite.bn2,
                *pool,
                nn.Linear(1280, 10),
            ),
            h,
        ),
    }
    r18 = torchvision.models.resnet18().eval()
    with torch.no_grad():
        h = r18.layer2(r18.layer1(r18.maxpool(r18.relu(r18.bn1(r18.conv1(x))))))
    cases["ResNet-18 layer3 on"] = (
        nn.Sequential(r18.layer3, r18.layer4, *pool, nn.Linear(512, 10)),
        h,
    )
    say(f"{'what':<32} {'variant':<20} {'ms/step':>8} {'vs NCHW':>8}")
    for name, (suffix, h) in cases.items():
        t = bench(suffix, h)
        base = t["NCHW fp32"]
        for variant, ms in t.items():
            say(f"{name:<32} {variant:<20} {ms:>8.0f} {base / ms:>7.2f}x")
        say(
            f"{'':<32} bf16 steps as shipped vs channels_last fp32: "
            f"{t['channels_last fp32'] / t['cl bf16, dw fp32']:.2f}x"
        )
    say(f"load average at end: {os.getloadavg()}")
    log.save(RESULTS.name)


if __name__ == "__main__":
    main()
