"""
Serving a fitted model with ONNX Runtime alone
==============================================

A fitted pipeline needs torch, scikit-learn and sktransfer to predict. A
server does not have to: :func:`~sktransfer.export_onnx` writes the whole
model -- normalization, the network, the scikit-learn head -- as one ONNX
file, checked against the pipeline before it is written, and
``onnx_client.py`` (next to this example) labels images with onnxruntime,
numpy and Pillow only.

The file takes uint8 RGB images already resized to the model's input size;
the client resizes them the way sktransfer does. Fashion-MNIST images are
smaller than that size, and sktransfer enlarges small images in float, where
a client works in uint8: so here the pipeline is fitted on images the client
resized, and both sides see the same pixels (see :ref:`deployment`).
"""

# %%
# Fit a pipeline on images resized as the client resizes them
# -----------------------------------------------------------
# ``onnx_client.py`` is a plain script; its functions are imported here to
# resize the training images exactly as a server will.
import csv
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import CNNFeatureExtractor, export_onnx
from sktransfer.datasets import load_fashion_mnist_sample

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs each example from its own folder
    HERE = Path.cwd()
spec = importlib.util.spec_from_file_location("onnx_client", HERE / "onnx_client.py")
client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client)

train = load_fashion_mnist_sample(subset="train")
test = load_fashion_mnist_sample(subset="test")
names = train.target_names
idx = np.concatenate([np.flatnonzero(train.target == c)[:20] for c in range(10)])
X_raw, y = train.images[idx], names[train.target[idx]]
X_test_raw, y_test = test.images[:60], names[test.target[:60]]

# fit() only loads the network; its preprocessing_ says how to resize
extractor = CNNFeatureExtractor(input_size=96, precision="fp32").fit(X_raw[:1])
p = extractor.preprocessing_
prep = {"input_size": p.input_size, "resize": p.resize, "crop_pct": p.crop_pct,
        "interpolation": p.interpolation}  # fmt: skip
X = np.stack([client.resize_image(Image.fromarray(a), prep) for a in X_raw])
pipe = make_pipeline(extractor, StandardScaler(), LogisticRegression(C=0.05))
pipe.fit(X, y)
print(f"fitted on {len(X)} images of shape {X.shape[1:]}, dtype {X.dtype}")

# %%
# Export: one file, checked at export
# -----------------------------------
# ``export_onnx`` runs the file with ONNX Runtime on a probe batch and
# compares it with ``pipe.predict_proba`` before writing it; a mismatch is an
# error. The metadata says how to feed the file.
folder = Path(tempfile.mkdtemp())
start = time.perf_counter()
path = export_onnx(pipe, folder / "fashion.onnx")
print(f"exported in {time.perf_counter() - start:.1f} s: {path.name}, "
      f"{path.stat().st_size / 2**20:.1f} MiB")  # fmt: skip
session, meta = client.open_model(path, threads=1)
for key in ("input", "preprocessing", "outputs", "check"):
    print(f"{key}: {meta[key]}")
print("inputs:", [(i.name, i.type, i.shape) for i in session.get_inputs()])
print("outputs:", [(o.name, o.type, o.shape) for o in session.get_outputs()])

# %%
# Serve a folder of images from a process without torch
# -----------------------------------------------------
# The test images are written as PNG files, and the client labels the folder
# in a fresh Python process; it then says which of the heavy libraries it
# imported (none).
photos = folder / "photos"
photos.mkdir()
for i, a in enumerate(X_test_raw):
    Image.fromarray(a).save(photos / f"{i:03d}.png")
check = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
heavy = sorted({"torch", "sklearn", "sktransfer"} & set(sys.modules))
print("heavy libraries imported by the client:", heavy or "none", file=sys.stderr)
"""
out = folder / "labels.csv"
res = subprocess.run(
    [sys.executable, "-c", check, str(HERE / "onnx_client.py"), str(path),
     str(photos), "--out", str(out), "--threads", "1"],
    capture_output=True, text=True, check=True,
)  # fmt: skip
print(res.stderr.strip())
with open(out) as f:
    rows = list(csv.reader(f))
served = np.array([r[1] for r in rows[1:]])
served_proba = np.array([[float(v) for v in r[2:]] for r in rows[1:]])

# %%
# The file and the pipeline agree
# -------------------------------
# In Python, the pipeline predicts the same client-resized arrays.
X_test = np.stack([client.resize_image(Image.fromarray(a), prep) for a in X_test_raw])
proba = pipe.predict_proba(X_test)
print(f"labels equal: {np.mean(served == pipe.predict(X_test)):.3f} of the images")
print(f"largest probability difference: {np.abs(served_proba - proba).max():.1e}")
print(f"accuracy of the served labels: {np.mean(served == y_test):.3f}")

fig, axes = plt.subplots(3, 6, figsize=(9, 5))
for ax, a, label, truth in zip(axes.flat, X_test_raw, served, y_test, strict=False):
    ax.imshow(a, cmap="gray")
    ax.set_title(label, fontsize=8, color="C0" if label == truth else "C3")
    ax.axis("off")
fig.suptitle("Labels served by onnxruntime alone (red: wrong)")
fig.tight_layout()
plt.show()

# %%
# Thread settings
# ---------------
# One session serves many requests (``session.run`` is thread-safe); its
# ``intra_op_num_threads`` is the number of cores one call may use. A server
# that handles one request per core gives each call one thread; one that
# batches gives a call all the cores. Per image, here:
x = X_test[:1]
for threads in (1, 2):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    s.run(None, {"images": x})  # first call: memory planning
    times = []
    for _ in range(20):
        start = time.perf_counter()
        s.run(None, {"images": x})
        times.append(time.perf_counter() - start)
    print(f"intra_op_num_threads={threads}: {1000 * np.median(times):.1f} ms "
          f"per image (median of {len(times)} calls)")  # fmt: skip
