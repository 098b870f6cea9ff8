"""Peak memory of streaming extraction from image files: grows with the batch, not N.

Generates N small PNG files (32x32 RGB, from the bundled Fashion-MNIST sample) in a
temporary directory, then, in a fresh subprocess per run, extracts codes (32 px
input, batch 64, one DataLoader worker; the tiny timm ``test_efficientnet``
architecture with random weights by default so that 22,000 images take about a
minute on 2 loaded cores; ``--lite0`` uses EfficientNet-Lite0 with its real
weights, about 10x slower here: memory behaviour is the same) with
``CNNFeatureExtractor.transform_to_file`` (codes appended to a ``.npy`` file batch
by batch). Each child reports its peak resident memory (VmHWM from
/proc/self/status, else ``ru_maxrss``) after loading the model and after the whole
extraction, and the peak of its DataLoader worker (``RUSAGE_CHILDREN``).

For contrast, ``--in-memory`` also runs ``transform`` (codes collected in one
in-RAM array of N x 1280 float32) for the largest N.

Usage: python benchmarks/stream_memory.py [--sizes 2000 20000] [--in-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results" / "stream_memory.txt"


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def child(n, folder, out, mode, model):
    import torch

    torch.set_num_threads(1)  # the other core decodes in the DataLoader worker
    from sktransfer import CNNFeatureExtractor

    paths = sorted(str(p) for p in Path(folder).glob("*.png"))[:n]
    spec = (
        {"model": "efficientnet_lite0", "weights": "imagenet"}
        if model == "lite0"
        else {"model": "timm/test_efficientnet", "weights": None}
    )
    ext = CNNFeatureExtractor(
        **spec, input_size=32, batch_size=64, num_workers=1, device="cpu"
    ).fit(paths[:2])
    ext.transform(paths[:64])  # warm the engine before the baseline
    base = peak_rss_mib()
    t0 = time.perf_counter()
    if mode == "file":
        Z = ext.transform_to_file(paths, out)
    else:
        Z = ext.transform(paths)
    dt = time.perf_counter() - t0
    assert Z.shape == (n, ext.n_features_out_)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "n": n,
                "mode": mode,
                "baseline_mib": base,
                "peak_mib": peak_rss_mib(),
                "worker_peak_mib": kids,
                "seconds": dt,
                "codes_mib": Z.nbytes / 2**20,
            }
        )
    )


def make_pngs(folder, n):
    import numpy as np
    from PIL import Image

    from sktransfer.datasets import load_fashion_mnist_sample

    X, _ = load_fashion_mnist_sample(subset="all", return_X_y=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.pad(X[i % len(X)], 2)  # 32x32
        rgb = np.stack([a, np.roll(a, i % 7, 0), a[::-1]], -1)
        rgb = (rgb.astype(np.int16) + rng.integers(-8, 9, rgb.shape)).clip(0, 255)
        Image.fromarray(rgb.astype(np.uint8)).save(Path(folder) / f"{i:06d}.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--in-memory", action="store_true")
    parser.add_argument("--lite0", action="store_true")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        n, folder, out, mode, model = args.child
        return child(int(n), folder, out, mode, model)
    lines = []

    def say(msg):
        print(msg, flush=True)
        lines.append(msg)

    name = "lite0 (real weights)" if args.lite0 else "timm/test_efficientnet (random)"
    say(
        f"# stream_memory: {name}"
        f" 32px, batch 64, 1 DataLoader worker, torch threads 1, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_pngs(tmp, max(args.sizes))
        say(f"  wrote {max(args.sizes)} PNG files in {time.perf_counter() - t0:.0f} s")
        runs = [(n, "file") for n in args.sizes]
        if args.in_memory:
            runs.append((max(args.sizes), "memory"))
        for n, mode in runs:
            out = os.path.join(tmp, f"codes_{n}.npy")
            model = "lite0" if args.lite0 else "tiny"
            cmd = [sys.executable, __file__, "--child", str(n), tmp, out, mode, model]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                print(res.stderr[-3000:])
                raise SystemExit(res.returncode)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            how = "transform_to_file" if mode == "file" else "transform (in RAM)"
            say(
                f"  N={n:6d} {how:19s}: peak RSS {r['peak_mib']:7.1f} MiB "
                f"(after model load {r['baseline_mib']:7.1f}, growth "
                f"{r['peak_mib'] - r['baseline_mib']:6.1f}); worker peak "
                f"{r['worker_peak_mib']:6.1f} MiB; codes {r['codes_mib']:6.1f} MiB; "
                f"{r['seconds']:.0f} s ({n / r['seconds']:.0f} img/s)"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written to {os.path.relpath(RESULTS)}")


if __name__ == "__main__":
    main()
