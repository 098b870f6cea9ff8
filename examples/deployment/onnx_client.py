"""
Serving client: label images with ONNX Runtime alone
====================================================

Labels a folder of images with a file written by :func:`sktransfer.export_onnx`.
Needs onnxruntime, numpy and Pillow only: no torch, no scikit-learn, no
sktransfer. Copy this script next to the ``.onnx`` file on the serving machine::

    python onnx_client.py model.onnx photos/ --out labels.csv --threads 2

Images are decoded and resized here exactly as sktransfer's ``predict`` does for
8-bit images larger than the input size (the usual case of photos): JPEGs
decoded at a reduced DCT scale (``Image.draft``), turned upright per their EXIF
orientation, grayscale kept as one channel and RGB(A) / palette images converted
to RGB, then resized in uint8 by PIL with the model's interpolation
(``resize="squash"``: to the input size; ``"crop"``: the shorter side to
``input_size / crop_pct``, then the centre), grayscale repeated to three
channels. The exported file does the rest (normalization, network, head).

sktransfer enlarges images that are *smaller* than the input size in both axes
in float (torch, antialiased) rather than in uint8; for those, this client's
pixels differ by rounding (at most 1/255), which some networks amplify: fit the
model on images resized by ``resize_image`` so that training and serving
see the same pixels. 16-bit and float images are converted to 8-bit by PIL
here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GRAY_MODES = ("1", "L", "LA", "La")
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def open_model(path, threads=None):
    """An ONNX Runtime session on ``path`` and its sktransfer metadata.

    ``threads``: intra-op threads of one call (``None``: ONNX Runtime's default,
    one per physical core). A server that runs several sessions or worker
    processes on one machine gives each a share of the cores.
    """
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is one chain: no parallel branches
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    raw = session.get_modelmeta().custom_metadata_map
    meta = {k: _json(v) for k, v in raw.items()}
    return session, meta


def _json(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def resize_plan(height, width, prep):
    """``(new_h, new_w), (top, left)``: sktransfer's ``Preprocessing.resize_plan``."""
    th, tw = prep["input_size"]
    if prep["resize"] == "squash":
        return (th, tw), (0, 0)
    rh, rw = (math.floor(s / prep["crop_pct"] + 1e-6) for s in (th, tw))
    if rh == rw:
        if width <= height:
            new_w, new_h = rh, int(rh * height / width)
        else:
            new_h, new_w = rh, int(rh * width / height)
    else:
        scale = max(rh / height, rw / width)
        new_h, new_w = max(rh, round(height * scale)), max(rw, round(width * scale))
    new_h, new_w = max(new_h, th), max(new_w, tw)
    return (new_h, new_w), (
        int(round((new_h - th) / 2.0)),
        int(round((new_w - tw) / 2.0)),
    )


def _orientation(img):
    try:
        o = int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return o if 1 <= o <= 8 else 1


def load_image(path, prep):
    """An image file -> uint8 ``(height, width, 3)`` at the model's input size."""
    with Image.open(path) as img:
        if img.format == "JPEG":  # decode at the smallest DCT scale that covers it
            w, h = img.size
            turned = _orientation(img) in (5, 6, 7, 8)
            if turned:
                w, h = h, w
            (nh, nw), _ = resize_plan(h, w, prep)
            img.draft("RGB", (nh, nw) if turned else (nw, nh))
        img.load()
        if _orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        return resize_image(img, prep)


def resize_image(img, prep):
    """A PIL image -> uint8 ``(height, width, 3)`` at the model's input size."""
    mode = "L" if img.mode in _GRAY_MODES else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    (nh, nw), (top, left) = resize_plan(img.height, img.width, prep)
    if img.size != (nw, nh):
        img = img.resize((nw, nh), _RESAMPLE[prep["interpolation"]])
    th, tw = prep["input_size"]
    if (nh, nw) != (th, tw):
        img = img.crop((left, top, left + tw, top + th))
    a = np.asarray(img, dtype=np.uint8)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def find_images(root):
    """Image files under ``root`` (a folder, searched recursively, or one file)."""
    if os.path.isfile(root):
        return [root]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(folder, f)
            for f in sorted(files)
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        ]
    return found


def predict(session, meta, paths, batch_size=16):
    """Run the model on image files; ``{output name: array}`` in file order."""
    prep = meta["preprocessing"]
    names = [o.name for o in session.get_outputs()]
    results = {n: [] for n in names}
    for start in range(0, len(paths), batch_size):
        batch = np.stack(
            [load_image(p, prep) for p in paths[start : start + batch_size]]
        )
        for name, value in zip(names, session.run(None, {"images": batch})):
            results[name].append(value)
    return {n: np.concatenate(v) for n, v in results.items()}


def write_csv(out, paths, results, meta):
    """One row per image: path, label, then one column per class (or value)."""
    classes = meta.get("classes")
    scores = next(
        (results[k] for k in ("probabilities", "decision") if k in results), None
    )
    header = ["path"] + (["label"] if "label" in results else [])
    if scores is not None and scores.ndim == 2 and classes:
        header += [str(c) for c in classes]
    elif scores is not None:
        header += ["decision"]
    if "values" in results:
        v = results["values"]
        header += (
            ["value"] if v.ndim == 1 else [f"value_{i}" for i in range(v.shape[1])]
        )
    writer = csv.writer(out)
    writer.writerow(header)
    for i, path in enumerate(paths):
        row = [path]
        if "label" in results:
            row.append(results["label"][i])
        if scores is not None:
            row += np.atleast_1d(scores[i]).tolist()
        if "values" in results:
            row += np.atleast_1d(results["values"][i]).tolist()
        writer.writerow([f"{x:.9g}" if isinstance(x, float) else x for x in row])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Label images with a file written by sktransfer.export_onnx."
    )
    parser.add_argument(
        "model", help="the .onnx file written by sktransfer.export_onnx"
    )
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", help="CSV file to write (default: standard output)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    session, meta = open_model(args.model, args.threads)
    paths = [p for root in args.images for p in find_images(root)]
    if not paths:
        parser.error("no image files found")
    results = predict(session, meta, paths, args.batch_size)
    if args.out:
        with open(args.out, "w", newline="") as f:
            write_csv(f, paths, results, meta)
    else:
        write_csv(sys.stdout, paths, results, meta)
    if "label" in results:
        labels, counts = np.unique(results["label"].astype(str), return_counts=True)
        summary = ", ".join(f"{lab}: {n}" for lab, n in zip(labels, counts))
        print(f"{len(paths)} images labelled ({summary})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
