"""Serving a fitted model: the file ``sktransfer.export_onnx`` writes vs ``predict``.

One model: EfficientNet-Lite0 (its ImageNet weights, shipped offline) at 224 px
+ StandardScaler + LogisticRegression(C=0.05) (the head of the FeatureUnion
gallery example), fitted on the bundled Fashion-MNIST sample's train part. It
is exported with ``sktransfer.export_onnx``, and then, in this one process,
interleaved (file, predict, file, predict, ...) with medians compared:

- **per-image latency**: one image per call, as a request-per-image server
  does: ``session.run`` on one uint8 224x224 RGB image vs ``pipe.predict`` on
  the same image, the two alternated call by call;
- **throughput**: ``--n`` images in calls of ``--batch`` images, both sides,
  and the file in calls of 4 images (what sktransfer's own ONNX Runtime engine
  gives one call on the CPU: ``_engine.ORT_PIXELS_PER_CALL``).

Both sides get the same uint8 224x224 RGB arrays (the test images resized by
the example client, ``examples/deployment/onnx_client.py``: PIL, the model's
interpolation), so they compute the same thing, and both use ``--threads``
threads (ONNX Runtime's ``intra_op_num_threads``; torch's threads, and the
extractor's own ONNX Runtime engine). The file's side is what a server without
Python's ML stack runs; ``predict`` adds sktransfer's input checks, batching,
and scikit-learn's head. The client's own resize (28 px to 224 px, PIL) is timed
apart. Agreement: probabilities and labels of both sides, and of ``predict`` on
the original 28 px images (resized in float by sktransfer, since they grow) vs
the file on the client's uint8 arrays.

Usage: python benchmarks/serve_latency.py [--n 128] [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from _bench import Log, cpu_kind  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sktransfer import CNNFeatureExtractor, export_onnx  # noqa: E402
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402

CLIENT = ROOT / "examples" / "deployment" / "onnx_client.py"


def lscpu_bf16():
    """``lscpu | grep -o 'avx512_bf16\\|amx_bf16'``, deduplicated."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "lscpu unavailable"
    found = sorted({f for f in ("avx512_bf16", "amx_bf16") if f in out.split()})
    return " ".join(found) or "neither avx512_bf16 nor amx_bf16"


def load_client():
    spec = importlib.util.spec_from_file_location("onnx_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_ms(times):
    return 1000 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images per throughput run")
    parser.add_argument("--batch", type=int, default=32, help="images per call")
    parser.add_argument("--latency-calls", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=300, help="training images")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = Log()
    say = log.say
    say(
        f"# serve_latency  (CPU: {cpu_kind()}; lscpu bf16 flags: {lscpu_bf16()}; "
        f"{os.cpu_count()} cores, threads={args.threads}; torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; load average {os.getloadavg()[0]:.1f} at "
        f"start)"
    )

    # ---- the model, fitted and exported
    X, y = load_fashion_mnist_sample(subset="train", return_X_y=True)
    X_test, _ = load_fashion_mnist_sample(subset="test", return_X_y=True)
    X, y = X[: args.train], y[: args.train]
    pipe = make_pipeline(
        CNNFeatureExtractor(model="efficientnet_lite0", device="cpu"),
        StandardScaler(),
        LogisticRegression(C=0.05, max_iter=500),
    )
    t0 = time.perf_counter()
    pipe.fit(X, y)
    fit_s = time.perf_counter() - t0
    folder = tempfile.mkdtemp(prefix="serve-latency-")
    path = Path(folder) / "lite0.onnx"
    t0 = time.perf_counter()
    export_onnx(pipe, path)
    export_s = time.perf_counter() - t0
    say(
        f"model: EfficientNet-Lite0 224 px + StandardScaler + LogisticRegression"
        f"(C=0.05), "
        f"fitted on {len(X)} Fashion-MNIST images in {fit_s:.1f} s; exported "
        f"(graph, check) in {export_s:.1f} s, file {path.stat().st_size / 2**20:.1f} "
        f"MiB"
    )

    # ---- the client's inputs: test images resized to 224 px uint8 RGB
    client = load_client()
    session, meta = client.open_model(path, threads=args.threads)
    prep = meta["preprocessing"]
    raw = X_test[: args.n]
    t0 = time.perf_counter()
    images = np.stack([client.resize_image(Image.fromarray(a), prep) for a in raw])
    resize_ms = 1000 * (time.perf_counter() - t0) / len(raw)
    say(
        f"client resize (28 px grayscale -> {images.shape[1]} px RGB, PIL "
        f"{prep['interpolation']}): {resize_ms:.2f} ms per image, one core"
    )

    def file_run(batch):
        return session.run(None, {"images": batch})

    def predict(batch):
        return pipe.predict(batch)

    # warm-up: the extractor's engine, both sessions' first calls
    file_run(images[: args.batch])
    predict(images[: args.batch])

    # ---- per-image latency, interleaved
    one = [images[i : i + 1] for i in range(args.latency_calls)]
    lat = {"file": [], "predict": []}
    for _ in range(args.repeats):
        for x in one:  # alternate call by call: load from elsewhere hits both
            for name, run in (("file", file_run), ("predict", predict)):
                t0 = time.perf_counter()
                run(x)
                lat[name].append(time.perf_counter() - t0)

    # ---- throughput, interleaved
    def chunked(size):
        return [images[i : i + size] for i in range(0, len(images), size)]

    sides = (
        ("file", file_run, chunked(args.batch)),
        ("predict", predict, chunked(args.batch)),
        ("file4", file_run, chunked(4)),
    )
    thr = {name: [] for name, _, _ in sides}
    for _ in range(args.repeats):
        for name, run, chunks in sides:
            t0 = time.perf_counter()
            for c in chunks:
                run(c)
            thr[name].append(time.perf_counter() - t0)
    ips = {k: len(images) / statistics.median(v) for k, v in thr.items()}
    say(
        f"per-image latency, batch 1, {args.latency_calls} images x {args.repeats} "
        f"repeats, calls alternated (median; p90)"
    )
    for name, label in (
        ("file", "exported file, onnxruntime"),
        ("predict", "pipe.predict in Python"),
    ):
        p90 = 1000 * float(np.percentile(lat[name], 90))
        say(f"  {label:28s}: {median_ms(lat[name]):7.2f} ms  ({p90:.2f} ms)")
    say(
        f"  {'ratio predict / file':28s}: "
        f"{statistics.median(lat['predict']) / statistics.median(lat['file']):7.2f}x"
    )
    say(
        f"throughput, {len(images)} images in calls of {args.batch}, "
        f"{args.repeats} interleaved repeats (median)"
    )
    say(f"  {'exported file, onnxruntime':28s}: {ips['file']:7.1f} images/s")
    say(f"  {'pipe.predict in Python':28s}: {ips['predict']:7.1f} images/s")
    say(f"  {'ratio file / predict':28s}: {ips['file'] / ips['predict']:7.2f}x")
    say(f"  {'exported file, calls of 4':28s}: {ips['file4']:7.1f} images/s")
    say(f"  {'ratio file (4) / predict':28s}: {ips['file4'] / ips['predict']:7.2f}x")

    # ---- agreement
    label_f, proba_f = file_run(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba_p = pipe.predict_proba(images)
        proba_raw = pipe.predict_proba(raw)
    label_p = pipe.predict(images)
    label_raw = pipe.predict(raw)
    say(
        f"agreement on the same 224 px arrays: labels {np.mean(label_f == label_p):.3f}"
        f", max |probability difference| {np.abs(proba_f - proba_p).max():.1e}"
    )
    say(
        f"file on the client's uint8 resize vs predict on the 28 px originals "
        f"(resized in float): labels {np.mean(label_f == label_raw):.3f}, max "
        f"|probability difference| {np.abs(proba_f - proba_raw).max():.1e}"
    )
    say(f"# load average {os.getloadavg()[0]:.1f} at the end")
    out = log.save("serve_latency.txt")
    print(f"written to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
