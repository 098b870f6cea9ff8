"""Does precision="auto"'s bf16 training steps rule hold on this CPU kind?

The rule (``sktransfer._runtime.CPU_RULES``): on a CPU kind whose entry says
``bf16_steps``, the training steps of a cached fine-tune run in bf16 autocast
(convolutions that bf16 gets wrong or slow in fp32). It must be faster than
fp32 steps AND accuracy-neutral. This runs ``FineTunedClassifier()`` with its
defaults (input_size 224, EfficientNet-Lite0 weights shipped offline) on
Fashion-MNIST samples of 20 images per class that no default was chosen on
(seeds 10..14 by default), 1,000 test images, once with the bf16 steps forced
(``SKTRANSFER_CPU_KIND=avx512_bf16``) and once with ``precision="fp32"``.

Each fit runs in its own process, alternating the order per seed: the
activation cache is shared within a process, so whichever runs second on the
same images would look faster. Reported: test accuracy and fit seconds per
seed, the mean difference and its spread.

Run: ``python benchmarks/bf16_steps.py [--seeds 10 11 12 13 14]``; writes
``benchmarks/results/bf16_steps.txt``. Needs the full data (Debian's
``dataset-fashion-mnist``); falls back to the bundled sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402

ONE_FIT = """
import json, sys, time
sys.path.insert(0, {bench!r})
from fashion_lowdata import draw, load_data
from sktransfer import FineTunedClassifier
Xtr, ytr, Xte, yte, source = load_data()
idx = draw(ytr, {per_class}, {seed})
clf = FineTunedClassifier(random_state={seed}, precision={precision!r})
t = time.perf_counter()
clf.fit(Xtr[idx], ytr[idx])
fit_s = time.perf_counter() - t
print(json.dumps({{"acc": float(clf.score(Xte, yte)), "fit_s": fit_s,
    "precision": clf.policy_["precision"], "source": source}}))
"""


def run_one(seed, per_class, precision):
    env = dict(os.environ)
    if precision == "auto":
        env["SKTRANSFER_CPU_KIND"] = "avx512_bf16"  # the kind with bf16 steps
    code = ONE_FIT.format(
        bench=str(Path(__file__).resolve().parent),
        per_class=per_class,
        seed=seed,
        precision=precision,
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    log = Log()
    log.say(f"CPU: {cpu_kind()}")
    log.say(f"FineTunedClassifier() defaults, {args.per_class} per class")
    header = f"{'bf16 acc':>8} {'fp32 acc':>8}  {'bf16 s':>6} {'fp32 s':>6}"
    log.say(f"{'seed':>4}  {header}")
    rows = []
    for i, seed in enumerate(args.seeds):
        order = ("auto", "fp32") if i % 2 == 0 else ("fp32", "auto")
        res = {p: run_one(seed, args.per_class, p) for p in order}
        bf, fp = res["auto"], res["fp32"]
        assert bf["precision"].startswith("bf16 training steps"), bf["precision"]
        rows.append((bf["acc"], fp["acc"], bf["fit_s"], fp["fit_s"]))
        log.say(
            f"{seed:>4}  {bf['acc']:8.3f} {fp['acc']:8.3f}  "
            f"{bf['fit_s']:6.1f} {fp['fit_s']:6.1f}"
        )
    a = np.array(rows)
    diff = a[:, 0] - a[:, 1]
    log.say(f"data: {res['fp32']['source']}")
    log.say(
        f"accuracy bf16 - fp32: mean {diff.mean():+.4f}, sd {diff.std(ddof=1):.4f} "
        f"(bf16 {a[:, 0].mean():.3f} +- {a[:, 0].std(ddof=1):.3f}, fp32 "
        f"{a[:, 1].mean():.3f} +- {a[:, 1].std(ddof=1):.3f})"
    )
    log.say(
        f"fit time bf16 / fp32: {np.median(a[:, 2] / a[:, 3]):.2f}x (median of "
        f"{len(a)} seeds)"
    )
    log.save("bf16_steps.txt")


if __name__ == "__main__":
    main()
