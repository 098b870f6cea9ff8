"""GPU check (at most ~3 minutes): the CUDA paths the CPU-only test suite cannot run.

1. extraction with autocast: ``CNNFeatureExtractor(device="cuda")`` picks the torch
   engine with bf16 (or fp16) autocast, channels_last and pinned memory;
2. agreement with the CPU codes (the CPU default: ONNX Runtime fp32), for
   ``precision="auto"`` (autocast: bf16 tolerance) and ``precision="fp32"``;
3. a 2-epoch fine-tune on CUDA, then predict (and its accuracy);
4. out-of-memory halving: a batch that raises CUDA OOM is split in halves and the
   codes stay the same; a single image that does not fit raises a clear MemoryError.

Run it whenever a GPU is available; its output goes to
``benchmarks/results/cuda_check.txt``. Without CUDA it says so and exits 0.

Usage: python benchmarks/cuda_check.py
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench import Log  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cuda_check.txt"


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    if not torch.cuda.is_available():
        print("no CUDA: nothing to check here (torch.cuda.is_available() is False)")
        return 0

    from sktransfer import CNNFeatureExtractor, FineTunedClassifier
    from sktransfer import _extractor as extractor_mod
    from sktransfer.datasets import load_fashion_mnist_sample

    log, failures = Log(), []
    say = log.say

    def check(ok, what):
        say(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            failures.append(what)

    start = time.perf_counter()
    say(
        f"# cuda_check  ({torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
        f"bf16 supported: {torch.cuda.is_bf16_supported()})"
    )
    Xtr, ytr = load_fashion_mnist_sample(subset="train", return_X_y=True)
    Xte, yte = load_fashion_mnist_sample(subset="test", return_X_y=True)
    X = Xte[:256]

    # 1. extraction with autocast
    say("1. extraction on CUDA (precision='auto')")
    gpu = CNNFeatureExtractor(device="cuda", input_size=128, batch_size=64).fit(X[:2])
    engine = gpu._get_engine()
    check(engine.kind == "torch", f"engine is torch on CUDA (got {engine.kind})")
    check(
        engine.autocast in (torch.bfloat16, torch.float16),
        f"autocast dtype {engine.autocast}",
    )
    gpu.transform(X[:64])  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    Z_gpu = gpu.transform(X)
    torch.cuda.synchronize()
    say(f"  {len(X) / (time.perf_counter() - t0):.0f} img/s (lite0, 128 px, batch 64)")
    check(Z_gpu.dtype == np.float32 and np.isfinite(Z_gpu).all(), "finite float32")

    # 2. agreement with the CPU
    say("2. agreement with the CPU codes")
    cpu = CNNFeatureExtractor(device="cpu", input_size=128, batch_size=64).fit(X[:2])
    Z_cpu = cpu.transform(X)
    err = rel_l2(Z_gpu, Z_cpu)
    check(err < 0.1, f"autocast codes vs CPU fp32: relative L2 {err:.1e} (< 0.1)")
    fp32 = CNNFeatureExtractor(
        device="cuda", precision="fp32", input_size=128, batch_size=64
    ).fit(X[:2])
    err = rel_l2(fp32.transform(X), Z_cpu)
    check(err < 1e-2, f"fp32 CUDA codes vs CPU fp32: relative L2 {err:.1e} (< 1e-2)")

    # 3. a 2-epoch fine-tune and predict
    say("3. fine-tune 2 epochs on CUDA, then predict")
    clf = FineTunedClassifier(
        device="cuda", input_size=96, max_epochs=2, batch_size=64, random_state=0
    )
    t0 = time.perf_counter()
    clf.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    pred = clf.predict(Xte)
    acc = float(np.mean(pred == yte))
    say(f"  fit {fit_s:.0f} s; test accuracy {acc:.3f} (1000 train / 1000 test)")
    check(acc > 0.5, f"the fine-tuned net learned (accuracy {acc:.3f} > 0.5)")
    proba = clf.predict_proba(Xte[:300])
    check(
        np.allclose(proba.sum(1), 1, atol=1e-4),
        f"predict_proba rows sum to 1 (engine {clf._derived()['engine'].kind})",
    )

    # 4. out-of-memory halving
    say("4. out-of-memory halving")
    engine_cls = type(gpu._get_engine())
    real_call = engine_cls.__call__
    sizes = []

    def oom_above_8(self, x):
        sizes.append(len(x))
        if len(x) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_call(self, x)

    engine_cls.__call__ = oom_above_8
    try:
        halved = gpu.transform(X[:64])
    finally:
        engine_cls.__call__ = real_call
    check(64 in sizes and max(sizes) == 64, "tried the full batch first")
    err = float(np.abs(halved - Z_gpu[:64]).max() / np.abs(Z_gpu[:64]).max())
    check(err < 2e-2, f"halved batches give the same codes ({err:.1e} of scale)")

    def always_oom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    engine_cls.__call__ = always_oom
    try:
        extractor_mod._forward_halving(gpu._get_engine(), torch.zeros(2, 3, 8, 8))
        check(False, "a single image that does not fit raises MemoryError")
    except MemoryError as exc:
        check("single image" in str(exc), f"single image: MemoryError ({exc})")
    finally:
        engine_cls.__call__ = real_call

    say(f"# {time.perf_counter() - start:.0f} s; {len(failures)} failure(s)")
    log.save(RESULTS.name)
    print(f"written to {os.path.relpath(RESULTS)}")
    return 1 if failures else 0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        sys.exit(main())
