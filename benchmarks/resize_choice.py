"""Which ``resize`` default: "squash" or "crop"? Measured on two real tasks.

EfficientNet-Lite0 (shipped ImageNet weights), codes + LogisticRegression:

1. the bundled Fashion-MNIST sample (1,000 train / 1,000 test images, 28 px
   arrays, objects filling the frame), at ``--size`` px;
2. a JPEG photo task built from scikit-image's bundled colour photos: each class
   is one photo (astronaut, coffee, chelsea, rocket, motorcycle, retina); every
   image is a random crop of it (random aspect ratio 0.6-1.7, 12-35 % of its
   area), saved as an 800 px JPEG (some stored rotated with EXIF orientation 6);
   30 train / 30 test images per class. It asks "which scene is this part of"
   on camera-shaped files, where squashing distorts and cropping drops borders.

Usage: python benchmarks/resize_choice.py [--size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from _bench import cpu_kind  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sktransfer import CNNFeatureExtractor  # noqa: E402
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402


def photo_task(root, n_per_class=60, seed=0):
    import skimage.data as d

    photos = {
        "astronaut": d.astronaut(),
        "coffee": d.coffee(),
        "chelsea": d.chelsea(),
        "rocket": d.rocket(),
        "motorcycle": d.stereo_motorcycle()[0],
        "retina": d.retina(),
    }
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, a in photos.items():
        h, w = a.shape[:2]
        for i in range(n_per_class):
            area = rng.uniform(0.12, 0.35) * h * w
            ratio = np.exp(rng.uniform(np.log(0.6), np.log(1.7)))  # w / h
            ch = int(min(h, np.sqrt(area / ratio)))
            cw = int(min(w, ch * ratio))
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            img = Image.fromarray(a[top : top + ch, left : left + cw])
            scale = 800 / max(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)))
            path = os.path.join(root, f"{name}_{i}.jpg")
            if i % 3 == 0:  # stored sideways, as phones do
                img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
            else:
                img.save(path, quality=90)
            paths.append(path)
            labels.append(name)
    paths, labels = np.asarray(paths, dtype=object), np.asarray(labels)
    train = np.arange(len(paths)) % 2 == 0
    return paths[train], labels[train], paths[~train], labels[~train]


def score(resize, size, Xtr, ytr, Xte, yte):
    ext = CNNFeatureExtractor(input_size=size, resize=resize)
    t0 = time.perf_counter()
    ftr = ext.fit_transform(Xtr)
    fte = ext.transform(Xte)
    secs = time.perf_counter() - t0
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return clf.fit(ftr, ytr).score(fte, yte), secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    lines = [
        f"resize_choice: CPU {cpu_kind()}; {os.cpu_count()} cores; "
        f"load average {os.getloadavg()}",
        f"EfficientNet-Lite0 ImageNet codes at {args.size} px + StandardScaler + "
        f"LogisticRegression; accuracy on held-out images",
    ]
    print(lines[0], flush=True)
    Xtr, ytr = load_fashion_mnist_sample(subset="train", return_X_y=True)
    Xte, yte = load_fashion_mnist_sample(subset="test", return_X_y=True)
    with tempfile.TemporaryDirectory() as root:
        ptr, pytr, pte, pyte = photo_task(root)
        for task, data in (
            ("Fashion-MNIST sample (28 px arrays, 1000/1000)", (Xtr, ytr, Xte, yte)),
            (
                f"photo crops (800 px JPEGs, {len(ptr)}/{len(pte)})",
                (ptr, pytr, pte, pyte),
            ),
        ):
            for resize in ("squash", "crop"):
                acc, secs = score(resize, args.size, *data)
                line = (
                    f"{task:48s} resize={resize:6s} accuracy {acc:.3f} ({secs:.0f} s)"
                )
                print(line, flush=True)
                lines.append(line)
    lines.append(f"load average after: {os.getloadavg()}")
    out = Path(__file__).parent / "results" / "resize_choice.txt"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
