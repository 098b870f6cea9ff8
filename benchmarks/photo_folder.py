"""A folder of camera-sized JPEGs: CNNFeatureExtractor vs a careful torchvision loop.

64 photos of 2400x1800 px (scikit-image's bundled colour photos, cropped to 4:3
and upscaled; every fourth stored sideways with EXIF orientation 6, as phones
do) are written to a temporary folder. Then, interleaved (extractor, plain,
extractor, plain, ...), medians compared:

- ``CNNFeatureExtractor().fit(paths)`` then ``.transform(paths)`` timed, all
  defaults (EfficientNet-Lite0 with its shipped ImageNet weights);
- the plain pipeline a careful user writes: a Dataset opening each file with
  PIL and ``draft("RGB", (224, 224))``, ``Resize(224)``, ``CenterCrop(224)``,
  ``ToTensor``, ``Normalize`` (the weights' 0.5 / 0.5), a ``DataLoader`` with
  batch 32 and ``num_workers`` = the number of cores, and the same network in
  fp32 eager mode (classifier removed) under ``torch.inference_mode``.

Memory: in a fresh subprocess per photo size (2400x1800 and 4000x3000), an
extractor decodes 8 photos with ``num_workers=0`` (decoding in that process) and
reports how far its RSS (sampled every 2 ms) rises during ``transform`` above
its level before, and the tracemalloc peak; a full-resolution float32 copy of
one photo would be 52 MB / 144 MB. As a control of the meter, the same process
then decodes one photo the old way (full resolution, float32).

Usage: python benchmarks/photo_folder.py [--n 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench import cpu_kind  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.base import clone  # noqa: E402

from sktransfer import CNNFeatureExtractor  # noqa: E402
from sktransfer._images import (  # noqa: E402
    Preprocessor,
    check_images,
    resolve_num_workers,
)


def make_photos(root, n, size=(2400, 1800)):
    import skimage.data as d

    sources = [
        d.astronaut(),
        d.coffee(),
        d.chelsea(),
        d.rocket(),
        d.stereo_motorcycle()[0],
        d.retina(),
    ]
    exif = Image.Exif()
    exif[0x0112] = 6
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        a = sources[i % len(sources)]
        h, w = a.shape[:2]
        ch = int(min(h, w * 3 / 4) * rng.uniform(0.7, 1.0))
        cw = int(ch * 4 / 3)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = Image.fromarray(a[top : top + ch, left : left + cw]).resize(
            size, Image.Resampling.BICUBIC
        )
        path = os.path.join(root, f"photo_{i:03d}.jpg")
        if i % 4 == 3:
            img.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif)
        else:
            img.save(path, quality=90)
        paths.append(path)
    return paths


class PlainDataset(torch.utils.data.Dataset):
    def __init__(self, paths):
        from torchvision import transforms as T

        self.paths = paths
        self.t = T.Compose(
            [
                T.Resize(224),
                T.CenterCrop(224),
                T.ToTensor(),
                T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            img.draft("RGB", (224, 224))
            return self.t(img.convert("RGB"))


def plain_codes(net, paths, workers):
    loader = torch.utils.data.DataLoader(
        PlainDataset(paths), batch_size=32, num_workers=workers
    )
    out = []
    with torch.inference_mode():
        for x in loader:
            out.append(net(x))
    return torch.cat(out).numpy()


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_growth(fn):
    """MB the resident set grows above its level before ``fn`` (sampled 2 ms)."""
    import threading

    base = _rss_mb()
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return max(peak[0], _rss_mb()) - base


def memory_child(path_list_file):
    """Run in a subprocess: RSS growth and tracemalloc peak of transform."""
    import tracemalloc

    from sktransfer._images import _open_image

    paths = json.loads(Path(path_list_file).read_text())
    ext = CNNFeatureExtractor(num_workers=0, batch_size=8)
    small = np.zeros((1, 224, 224, 3), np.uint8)
    ext.fit(small).transform(small)  # network and engine ready
    ext.transform(paths[:1])
    tracemalloc.start()
    growth = _peak_rss_growth(lambda: ext.transform(paths))
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one = check_images(paths[:1])
    pre = Preprocessor(ext.preprocessing_)
    decode = _peak_rss_growth(lambda: pre.load(one, 0))
    # The meter's control: one photo decoded the old way (full-res float32).
    control = _peak_rss_growth(lambda: _open_image(paths[0]))
    print(
        json.dumps(
            {
                "peak_growth_mb": growth,
                "tracemalloc_peak_mb": traced / 2**20,
                "control_mb": control,
                "decode_mb": decode,
            }
        )
    )


def measure_memory(root, size):
    sub = os.path.join(root, f"{size[0]}x{size[1]}")
    os.makedirs(sub)
    paths = make_photos(sub, 8, size)
    listing = os.path.join(sub, "paths.json")
    Path(listing).write_text(json.dumps(paths))
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", listing],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def decode_engine_limit(ext, paths, cores):
    """``cores / (d + cores * e)`` img/s: the decode + engine limit (issue 20).

    d: seconds per photo of draft decode + EXIF + resize on one core; e: the
    engine's seconds per image on the same pixels, already resized (all
    threads). With perfect overlap every core-second goes to one of the two.
    """
    pre = Preprocessor(ext.preprocessing_)
    images = check_images(paths)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        for i in range(len(paths)):
            pre.load(images, i)
        d = (time.perf_counter() - t0) / len(paths)
    finally:
        torch.set_num_threads(threads)
    batch = pre.load_batch(images, np.arange(min(32, len(paths))))
    engine = ext._get_engine()
    engine(batch)
    t0 = time.perf_counter()
    for _ in range(4):
        engine(batch)
    e = (time.perf_counter() - t0) / (4 * len(batch))
    return d, e, cores / (d + cores * e)


def rate_with_workers(paths, workers, repeats):
    ext = CNNFeatureExtractor(num_workers=workers).fit(paths[:2])
    ext.transform(paths[:8])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ext.transform(paths)
        times.append(time.perf_counter() - t0)
    return len(paths) / statistics.median(times)


def speed(root, args, cores):
    paths = make_photos(root, args.n)
    ext = CNNFeatureExtractor().fit(paths)
    engine = ext._get_engine()
    engine_name = (
        type(engine).__name__
        + (" (traced TorchScript)" if getattr(engine, "traced", None) else "")
        + f", autocast {getattr(engine, 'autocast', None)}"
    )
    crop = clone(ext).set_params(resize="crop").fit(paths)
    net = copy.deepcopy(ext.backbone_)
    net.reset_classifier(0)
    net.eval()
    ext.transform(paths[:8])  # engine build / trace outside the clock
    crop.transform(paths[:8])
    plain_codes(net, paths[:8], 0)
    t_ext, t_crop, t_plain = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        codes = ext.transform(paths)
        t_ext.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        crop_codes = crop.transform(paths)
        t_crop.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = plain_codes(net, paths, cores)
        t_plain.append(time.perf_counter() - t0)
    r_ext = args.n / statistics.median(t_ext)
    r_plain = args.n / statistics.median(t_plain)
    r_crop = args.n / statistics.median(t_crop)

    def cosine(a, b):
        return np.median(
            np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        )

    d, e, limit = decode_engine_limit(ext, paths, cores)
    by_workers = {w: rate_with_workers(paths, w, args.repeats) for w in (0, 1, 2)}
    auto = resolve_num_workers("auto", check_images(paths))
    return [
        f"decode + engine limit cores / (d + cores * e): d {d * 1000:.1f} ms "
        f"(draft decode + EXIF + resize, one core), e {e * 1000:.2f} ms (engine, "
        f"resized pixels) -> {limit:.0f} images/s; default transform at "
        f"{r_ext / limit:.2f}x of it (target >= 0.8x)",
        "num_workers -> images/s: "
        + ", ".join(f"{w}: {r:.1f}" for w, r in by_workers.items())
        + f" ('auto' is {auto} here)",
        f"{args.n} JPEGs 2400x1800 (every 4th EXIF orientation 6), batch 32, "
        f"{args.repeats} interleaved repeats, medians",
        f"extractor engine: {engine_name}; resize={ext.resize}, "
        f"num_workers={ext.num_workers!r} (here "
        f"{resolve_num_workers(ext.num_workers, check_images(paths))} worker)",
        f"CNNFeatureExtractor().transform(paths): {r_ext:6.1f} images/s "
        f"(runs {[round(args.n / t, 1) for t in t_ext]})",
        f"plain torchvision (draft, Resize+CenterCrop, DataLoader "
        f"num_workers={cores}, fp32 eager, inference_mode): {r_plain:6.1f} "
        f"images/s (runs {[round(args.n / t, 1) for t in t_plain]})",
        f"ratio extractor / plain: {r_ext / r_plain:.2f}x (target >= 1.5x)",
        f"CNNFeatureExtractor(resize='crop') (the plain loop's own preprocessing "
        f"but 256 -> 224 crop_pct): {r_crop:6.1f} images/s (runs "
        f"{[round(args.n / t, 1) for t in t_crop]}), ratio {r_crop / r_plain:.2f}x",
        f"median code cosine to the plain loop: default {cosine(codes, ref):.3f}, "
        f"resize='crop' {cosine(crop_codes, ref):.3f}",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-child")
    ap.add_argument("--memory-only", action="store_true", help="skip the speed part")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    cores = len(os.sched_getaffinity(0))
    lines = [
        f"photo_folder: CPU {cpu_kind()}; {cores} cores; torch threads "
        f"{torch.get_num_threads()}; load average before {os.getloadavg()}",
    ]
    print(lines[0], flush=True)
    with tempfile.TemporaryDirectory() as root:
        if not args.memory_only:
            lines += speed(root, args, cores)
        for line in lines[1:]:
            print(line, flush=True)
        for size in ((2400, 1800), (4000, 3000)):
            m = measure_memory(root, size)
            full = size[0] * size[1] * 3 * 4 / 1e6
            line = (
                f"memory, 8 photos {size[0]}x{size[1]}, num_workers=0: peak RSS "
                f"growth {m['peak_growth_mb']:.1f} MB, tracemalloc peak "
                f"{m['tracemalloc_peak_mb']:.1f} MB; decoding one photo: "
                f"{m['decode_mb']:.1f} MB (control, one photo decoded the old way, "
                f"full-res float32 of {full:.0f} MB: {m['control_mb']:.0f} MB)"
            )
            print(line, flush=True)
            lines.append(line)
    lines.append(f"load average after: {os.getloadavg()}")
    out = ROOT / "benchmarks" / "results" / "photo_folder.txt"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
