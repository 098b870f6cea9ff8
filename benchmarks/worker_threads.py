"""Torch threads in parallel workers: what they get, and what oversubscription costs.

Two joblib (loky) worker processes each extract codes of the same 128 images
(EfficientNet-Lite0, real offline weights, 64 px). Compared:

- ``default``: whatever the worker starts with. joblib sets OMP_NUM_THREADS to
  cpu_count // n_jobs in loky workers, and dask.distributed sets it to 1
  (``distributed.nanny.pre-spawn-environ``); torch honours it at import.
- ``oversubscribed``: each worker forces ``torch.set_num_threads(os.cpu_count())``,
  i.e. 2 workers x all cores, what happens when a worker ignores those limits.

Usage: python benchmarks/worker_threads.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from joblib import Parallel, delayed  # noqa: E402
from joblib.externals.loky import get_reusable_executor  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "worker_threads.txt"


def work(threads, root):
    sys.path.insert(0, root)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from sktransfer import CNNFeatureExtractor
    from sktransfer.datasets import load_fashion_mnist_sample

    X, _ = load_fashion_mnist_sample(subset="test", return_X_y=True)
    ext = CNNFeatureExtractor(input_size=64, device="cpu").fit(X[:2])
    ext.transform(X[:32])  # warm-up (tracing, oneDNN caches)
    t0 = time.perf_counter()
    ext.transform(X[:128])
    return torch.get_num_threads(), time.perf_counter() - t0


def main():
    root = str(Path(__file__).resolve().parents[1])
    lines = []

    def say(msg):
        print(msg, flush=True)
        lines.append(msg)

    say(
        f"# worker_threads: 2 loky workers x 128 images, lite0 64px, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for name, threads in (
        ("default", None),
        ("oversubscribed", os.cpu_count()),
        ("default", None),
    ):
        with Parallel(n_jobs=2, backend="loky") as par:
            t0 = time.perf_counter()
            res = par(delayed(work)(threads, root) for _ in range(2))
            wall = time.perf_counter() - t0
        # fresh workers for the next setting: loky reuses its processes, and a
        # thread count set in one would leak into the next run
        get_reusable_executor().shutdown(wait=True)
        per = [r[1] for r in res]
        say(
            f"  {name:15s}: torch threads per worker {[r[0] for r in res]}, "
            f"extraction {max(per):5.1f} s (slowest worker), "
            f"{256 / max(per):5.1f} img/s total; wall incl. start {wall:5.1f} s"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written to {os.path.relpath(RESULTS)}")


if __name__ == "__main__":
    main()
