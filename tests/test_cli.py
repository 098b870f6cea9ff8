"""The sktransfer command line, end to end on a small mixed-format image folder."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_TINY, FT_TINY, TINY_MODEL
from PIL import Image

from sktransfer.cli import main

# tracing is tested in test_extractor; eager extraction keeps these tests fast
pytestmark = pytest.mark.usefixtures("eager_extraction")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes, 6 images each: PNG grayscale, PNG RGBA, JPEG RGB, mixed sizes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["boots", "shirts"]):
        (root / cls).mkdir()
        for i in range(6):
            size = (12 + 3 * i, 16 + 2 * c)
            base = rng.integers(0, 100, size=(size[1], size[0], 3), dtype=np.uint8)
            base[: size[1] // 2] += np.uint8(120 * c)
            img = Image.fromarray(base)
            kind = i % 3
            if kind == 0:
                img.convert("L").save(root / cls / f"{i}.png")
            elif kind == 1:
                img.convert("RGBA").save(root / cls / f"{i}.png")
            else:
                img.save(root / cls / f"{i}.jpg", quality=90)
    (root / "boots" / "notes.txt").write_text("not an image, skipped")
    return root


def test_compare_end_to_end(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "compare",
            str(folder),
            *CLI_TINY,
            "--cv",
            "2",
            "--strategies",
            "pixels_logreg,codes_logreg,earlier_svc",
            "--out",
            str(out),
            "--seed",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "codes_logreg" in captured.out and "best:" in captured.out
    assert "report.png" in captured.out
    assert "[1/3] pixels_logreg" in captured.err  # progress display
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["n_samples"] == 12
    assert {r["strategy"] for r in report["results"]} == {
        "pixels_logreg",
        "codes_logreg",
        "earlier_svc",
    }
    assert all(r["status"] == "ok" for r in report["results"])
    assert (out / "report.csv").read_text().count("\n") == 4
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_two_backbones(folder, tmp_path, capsys):
    """--model a,b: one ranked report of strategy x backbone, the winner saved."""
    out, saved = tmp_path / "out", tmp_path / "best.skt"
    argv = ["compare", str(folder), "--model", f"{TINY_MODEL},efficientnet_lite0"]
    argv += ["--weights", "none", "--input-size", "32", "--cv", "2"]
    argv += ["--strategies", "codes_logreg,pixels_logreg", "--out", str(out)]
    rc = main([*argv, "--save", str(saved), "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    pairs = {(r["strategy"], r["backbone"]) for r in report["results"]}
    assert pairs == {
        ("codes_logreg", "test_efficientnet"),
        ("codes_logreg", "efficientnet_lite0"),
        ("pixels_logreg", None),
    }
    assert report["info"]["models"] == ["test_efficientnet", "efficientnet_lite0"]
    lines = captured.out.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert lines[title].split()[:3] == ["rank", "strategy", "backbone"]
    assert "backbone" in (out / "report.csv").read_text().splitlines()[0].split(",")
    from sktransfer import load

    best, winner = load(saved), report["results"][0]
    if winner["backbone"] is None:  # the pixel baseline won
        assert "pixels" in best.named_steps
    else:  # refit on the winner's own backbone
        spec = {"test_efficientnet": TINY_MODEL}.get(
            winner["backbone"], "efficientnet_lite0"
        )
        assert best.named_steps["cnn"].model == spec


def test_extract(folder, tmp_path, capsys):
    target = tmp_path / "codes.npz"
    rc = main(
        [
            "extract",
            str(folder),
            "-o",
            str(target),
            *CLI_TINY,
            "--layer",
            "blocks.1",
            "--pooling",
            "max",
            "--per-class",
            "4",
            "-q",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with np.load(target) as z:
        assert z["codes"].shape[0] == 8
        assert z["codes"].shape[1] == len(z["feature_names"])
        assert sorted(set(z["labels"])) == ["boots", "shirts"]


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "precision (auto)" in out
    assert "engine (auto)" in out and "codes_svc" in out


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(3):
            Image.new("L", (10, 10), color=40 * i).save(root / cls / f"{i}.png")
    (root / "b" / "bad.png").write_bytes(b"\x89PNG definitely not an image")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", "/no/such/folder"], "neither an existing folder nor a named"),
        (["compare", "fashion-mnst"], "neither an existing folder nor a named"),
        (["compare", "EMPTY"], "no images found"),
        (["compare", "BROKEN"], "cannot read image file"),
        (["extract", "BROKEN", "-o", "x.npz"], "cannot read image file"),
        (["compare", "digits", "--strategies", "codes_svc,magic"], "unknown strategy"),
        (["compare", "FILE"], "is a file"),
    ],
)
def test_bad_data_one_clear_line(args, message, tmp_path, broken_folder, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.png").write_bytes(b"")
    subs = {
        "EMPTY": str(tmp_path / "empty"),
        "BROKEN": str(broken_folder),
        "FILE": str(tmp_path / "file.png"),
    }
    args = [subs.get(a, a) for a in args]
    rc = main(args + ["--out", str(tmp_path / "o")] if args[0] == "compare" else args)
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


def test_python_m_help():
    res = subprocess.run(
        [sys.executable, "-m", "sktransfer", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0
    assert "--per-class" in res.stdout and "--strategies" in res.stdout


def test_named_datasets_and_per_class():
    from sktransfer.cli import load_data

    X, y, desc = load_data("digits", per_class=3, seed=0)
    assert X.shape == (30, 8, 8) and X.dtype == np.uint8 and X.max() == 255
    assert "digits" in desc
    X, y, _ = load_data("fashion-mnist-sample", per_class=2)
    assert len(X) == 20 and "Trouser" in set(y)


# ------------------------------------------------- issue 20: bad input, exit 2
def _one_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _jpeg_bytes(seed=0, size=48):
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=90
    )
    return buf.getvalue()


def write_corrupt_folder(root, damage):
    """Two classes of good JPEG / PNG files and ONE bad ``.jpg``; returns its path.

    ``garbage``: not an image at all; ``truncated``: the first half of a JPEG
    (its header reads, PIL's verify passes, decoding fails).
    """
    for c, cls in enumerate(["a", "b"]):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.jpg").write_bytes(_jpeg_bytes(10 * c + i, 24))
        Image.new("L", (20, 20), color=90 * c).save(root / cls / "p.png")
    bad = root / "b" / "bad.jpg"
    if damage == "garbage":
        bad.write_bytes(b"these are not the bytes of a JPEG file" * 20)
    else:
        data = _jpeg_bytes(99)
        bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize(
    "command, damage, extra",
    [
        ("compare", "garbage", []),
        ("compare", "truncated", []),
        ("extract", "garbage", []),
        ("extract", "truncated", []),
        ("extract", "truncated", ["--num-workers", "1"]),  # raised in a worker
    ],
)
def test_one_corrupt_image_is_exit_2_naming_it(
    command, damage, extra, tmp_path, capsys
):
    bad = write_corrupt_folder(tmp_path / "data", damage)
    out = tmp_path / "out"
    if command == "compare":
        args = ["--cv", "2", "--strategies", "pixels_logreg,codes_logreg"]
        args += ["--out", str(out)]
    else:
        args = ["-o", str(out / "codes.npz")]
        out.mkdir()
    rc = main([command, str(tmp_path / "data"), *CLI_TINY, *args, *extra, "-q"])
    line = _one_line(capsys)
    assert rc == 2, line
    assert repr(str(bad)) in line and "cannot read image file" in line
    # compare decodes every file before any work: no report was started
    assert not (out / "report.csv").exists()
    assert not (out / "codes.npz").exists()


def test_fashion_mnist_corrupt_idx_is_exit_2_naming_it(tmp_path, monkeypatch, capsys):
    import gzip

    def idx(array):
        header = bytes([0, 0, 8, array.ndim])
        header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        return header + array.astype(np.uint8).tobytes()

    images = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    images.write_bytes(gzip.compress(idx(np.zeros((4, 28, 28)))[:-10]))  # truncated
    labels.write_bytes(gzip.compress(idx(np.array([0, 1, 0, 1]))))
    monkeypatch.setenv("SKTRANSFER_DATA", str(tmp_path))
    rc = main(["compare", "fashion-mnist", "--out", str(tmp_path / "o")])
    line = _one_line(capsys)
    assert rc == 2
    assert repr(str(images)) in line and "is truncated" in line


# ------------------------------------------- issue 20: the paths really written
def test_outputs_report_the_paths_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # compare --out / --save, relative: the messages give the absolute paths
    rc = main(
        ["compare", "digits", *CLI_TINY, "--per-class", "3", "--cv", "2"]
        + ["--strategies", "pixels_logreg", "--out", "rep", "--save", "m.skt", "-q"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    folder = (tmp_path / "rep").resolve()
    assert f"wrote report.json, report.csv, report.png to {folder}\n" in out
    assert all((folder / f).is_file() for f in ("report.json", "report.csv"))
    assert (
        f"saved pixels_logreg (refit on all 30 images) to {tmp_path / 'm.skt'};" in out
    )
    assert (tmp_path / "m.skt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.skt", "rep"]
    # extract -o: "codes" gets numpy's .npz; any other name is kept as given
    for given, written in [("codes", "codes.npz"), ("codes.NPZ", "codes.NPZ")]:
        rc = main(["extract", "digits", *CLI_TINY, "--per-class", "2", "-o", given])
        out = capsys.readouterr().out
        assert rc == 0
        assert f"wrote {tmp_path / written} (codes, " in out
        with np.load(tmp_path / written) as z:
            assert z["codes"].shape[0] == 20
    assert not (tmp_path / "codes.NPZ.npz").exists()


# ----------------------------- issue 20: every option checked before any work
@pytest.fixture
def no_work(monkeypatch):
    """Reading data or image files fails the test: options come first."""
    import sktransfer.cli as cli

    def started(*args, **kwargs):
        raise AssertionError("the command read its data before checking options")

    for name in ("load_data", "collect_images", "_check_folder_images"):
        monkeypatch.setattr(cli, name, started)


BAD_OPTIONS = [
    # compare
    (["compare", "D", "--cv", "1"], "--cv 1: The 'cv' parameter"),
    (["compare", "D", "--cv", "two"], "argument --cv: invalid int value: 'two'"),
    (["compare", "D", "--model", f"{TINY_MODEL},nonet"], "unknown model 'nonet'"),
    (["compare", "D", "--model", f"{TINY_MODEL},timm/no"], "unknown timm model 'no'"),
    (["compare", "D", "--model", " , "], "--model is empty"),
    (["compare", "D", "--model", "nonet"], "unknown model 'nonet'"),
    (["compare", "D", "--model", "timm/nonet"], "unknown timm model 'nonet'"),
    (["compare", "D", *CLI_TINY[:2], "--weights", "/no/w.pt"], "'/no/w.pt': no such"),
    (["compare", "D", "--weights", "in22k"], "unknown weights 'in22k'"),
    (["extract", "D", "-o", "X", "--model", "hf-hub:noslash"], "'hf-hub:<org>/<repo>'"),
    (["extract", "D", "-o", "X", "--model", "resnet18", "--weights", "V9"], "V9"),
    (["compare", "D", "--time-budget", "-1"], "--time-budget -1.0: The 'time_b"),
    (["compare", "D", "--seed", "-1"], "argument --seed: '-1' must be >= 0"),
    (["compare", "D", "--seed", "9" * 12], "--seed 999999999999: The 'random_s"),
    (["compare", "D", "--per-class", "0"], "argument --per-class: '0' must be"),
    (["compare", "D", "--input-size", "0"], "argument --input-size: '0' must be"),
    (["compare", "D", "--out", "FILE"], "--out 'FILE' is a file, not a folder"),
    (["compare", "D", "--out", "FILE/sub"], "'FILE' is a file, not a folder"),
    (["compare", "D", "--out", "RO/report"], "folder 'RO' is not writable"),
    (["compare", "D", "--save", "TMP"], "--save 'TMP' is a folder"),
    (["compare", "D", "--save", "RO/m.skt"], "folder 'RO' is not writable"),
    (["compare", "D", "--device", "gpu"], "--device: device must be"),
    (["compare", "D", "--precision", "fp16"], "'fp16' needs a CUDA device"),
    (["compare", "D", "--bogus"], "unrecognized arguments: --bogus"),
    # extract
    (["extract", "D", "-o", "X", "--layer", "blocks.1,nope"], "unknown layer 'nope'"),
    (["extract", "D", "-o", "X", "--pooling", "sum"], "argument --pooling: invalid"),
    (["extract", "D", "-o", "X", "--batch-size", "-1"], "argument --batch-size"),
    (["extract", "D", "-o", "X", "--num-workers", "-1"], "argument --num-workers"),
    (["extract", "D", "-o", "X", "--model", "m1 m2"], "names 2 backbones (m1, m2)"),
    (["extract", "D", "-o", "TMP"], "-o 'TMP' is a folder"),
    (["extract", "D", "-o", "/no/such/x.npz"], "folder '/no/such' does not exist"),
    (["extract", "D", "-o", "RO/x.npz"], "folder 'RO' is not writable"),
    (["extract", "D"], "the following arguments are required: -o/--output"),
    # predict
    (["predict", "M", "D", "--batch-size", "0"], "argument --batch-size: '0' must"),
    (["predict", "M", "D", "--out", "/no/such/p.csv"], "folder '/no/such' does not"),
    (["predict", "M", "D", "--out", "TMP"], "--out 'TMP' is a folder"),
    (["predict", "M", "D", "--out", "RO/p.csv"], "folder 'RO' is not writable"),
    (["predict", "M", "D", "--device", "cuda:x"], "got 'cuda:x'"),
]


@pytest.mark.parametrize(
    "argv, message", BAD_OPTIONS, ids=[" ".join(argv) for argv, _ in BAD_OPTIONS]
)
def test_bad_option_is_one_line_exit_2_before_any_work(
    argv, message, tmp_path, no_work, monkeypatch, capsys
):
    import os

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "ro").mkdir()
    real_access = os.access
    # a read-only folder, also for root (who may write anywhere)
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: os.path.basename(p) != "ro" and real_access(p, mode),
    )
    subs = {
        "D": str(tmp_path),
        "M": str(tmp_path / "m.skt"),
        "X": str(tmp_path / "x.npz"),
        "TMP": str(tmp_path),
        "FILE": str(tmp_path / "file.txt"),
        "RO": str(tmp_path / "ro"),
    }

    def sub(text):
        head, sep, rest = text.partition("/")
        return subs[head] + sep + rest if head in subs else text

    # the tiny backbone first: options given by the case come later and win
    defaults = CLI_TINY if argv[0] != "predict" else []
    argv = [argv[0], *defaults, *map(sub, argv[1:])]
    message = re.sub(r"'([A-Z]+)", lambda m: "'" + sub(m.group(1)), message)
    assert main(argv) == 2
    line = _one_line(capsys)
    assert message in line, line


# --------------------------------------- issue 21: targets from a CSV, --task
@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """A flat folder of images (gray levels, stripes) and CSVs of their targets."""
    root = tmp_path_factory.mktemp("targets")
    images = root / "images"
    (root / "meta").mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    values, tags, counts = ["path,brightness,darkness"], [], ["path,count"]
    kinds = ["kind,path"]
    for i in range(12):
        level = rng.uniform(0.1, 0.9)
        noise = rng.normal(0, 30, (20, 20, 3))
        gray = np.clip(level * 255 + noise, 0, 255).astype(np.uint8)
        Image.fromarray(gray).save(images / f"g{i}.png")
        values.append(f"g{i}.png,{level:.4f},{1 - level:.4f}")
        counts.append(f"g{i}.png,{i % 4}")
        kinds.append(f"{'light' if level > 0.5 else 'dark'},g{i}.png")
        labels = [int(i % 3 == j or (i + 1) % 4 == j) for j in range(3)]
        stripes = rng.integers(0, 60, (18, 18, 3)).astype(np.uint8)
        for j in range(3):
            stripes[:, 6 * j : 6 * (j + 1)] += np.uint8(180 * labels[j])
        Image.fromarray(stripes).save(images / f"s{i}.png")
        tags.append(f"{images / f's{i}.png'}," + ",".join(map(str, labels)))
    (images / "values.csv").write_text("\n".join(values) + "\n")
    (images / "counts.csv").write_text("\n".join(counts) + "\n")
    (images / "kinds.csv").write_text("\n".join(kinds) + "\n")
    # elsewhere, absolute paths, the paths in a first column not named "path"
    header = "file,stripe_a,stripe_b,stripe_c"
    (root / "meta" / "tags.csv").write_text("\n".join([header, *tags]) + "\n")
    return root


@pytest.mark.parametrize(
    "csv_name, task, want, shape",
    [
        ("images/values.csv", None, "regression", (12, 2)),
        ("meta/tags.csv", None, "multilabel", (12, 3)),
        ("images/counts.csv", None, "classification", (12,)),  # integers: classes
        ("images/counts.csv", "regression", "regression", (12,)),
        ("images/kinds.csv", None, "classification", (12,)),  # names, path 2nd
    ],
)
def test_targets_task_is_read_from_the_columns(targets, csv_name, task, want, shape):
    from sktransfer.cli import load_targets

    images = targets / "images"
    paths, y, got, names, desc = load_targets(str(images), targets / csv_name, task)
    assert got == want and np.shape(y) == shape
    assert all(Path(p).is_file() and Path(p).parent == images for p in paths)
    assert Path(csv_name).name in desc
    if csv_name.startswith("meta"):
        assert names == ["stripe_a", "stripe_b", "stripe_c"]
        assert set(np.unique(y)) == {0, 1}
    if csv_name.endswith("kinds.csv"):
        assert set(y) == {"light", "dark"} and Path(paths[0]).name == "g0.png"


def test_compare_targets_regression_then_predict_writes_values(
    targets, tmp_path, capsys
):
    import csv

    import sktransfer

    images, out, model = targets / "images", tmp_path / "out", tmp_path / "reg.skt"
    argv = ["compare", str(images), "--targets", str(images / "values.csv")]
    argv += [*CLI_TINY, "--cv", "2", "--strategies", "codes_ridge,codes_knn"]
    rc = main([*argv, "--out", str(out), "--save", str(model), "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "12 images, regression, 2 targets" in captured.err
    assert "regression: 2-fold CV r2 on 12 images, 2 targets" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["task"] == "regression"
    assert report["info"]["scoring"] == "r2"
    assert report["info"]["target_columns"] == ["brightness", "darkness"]
    assert all(np.isfinite(r["mean"]) for r in report["results"])
    files = [str(images / f"g{i}.png") for i in range(4)]
    preds = tmp_path / "preds.csv"
    rc = main(["predict", str(model), *files, "--out", str(preds)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = list(csv.reader(preds.open()))
    assert rows[0] == ["path", "brightness", "darkness"]
    assert [r[0] for r in rows[1:]] == files
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    want = sktransfer.load(model).predict(files)
    np.testing.assert_allclose(values, want, rtol=1e-6)
    assert re.search(r"^  brightness +mean \S+, min \S+, max \S+$", captured.out, re.M)


def test_compare_targets_multilabel_then_predict_writes_label_columns(
    targets, tmp_path, capsys
):
    import csv

    import sktransfer

    tags, model = targets / "meta" / "tags.csv", tmp_path / "ml.skt"
    argv = ["compare", str(targets / "images"), "--targets", str(tags), *CLI_TINY]
    argv += ["--cv", "2", "--strategies", "codes_ovr,pixels_ovr"]
    rc = main([*argv, "--out", str(tmp_path / "o"), "--save", str(model), "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "multilabel: 2-fold CV f1_micro on 12 images, 3 labels" in captured.out
    files = [str(targets / "images" / f"s{i}.png") for i in range(5)]
    rc = main(["predict", str(model), *files])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = list(csv.reader(io.StringIO(captured.out)))
    names = ["stripe_a", "stripe_b", "stripe_c"]
    assert rows[0] == ["path", *names, *[f"proba_{n}" for n in names]]
    labels = np.array([[int(v) for v in r[1:4]] for r in rows[1:]])
    np.testing.assert_array_equal(labels, sktransfer.load(model).predict(files))
    assert re.search(r"^  stripe_a +\d+ images?$", captured.err, re.M)


def test_predict_fine_tuned_values_and_labels_without_names(targets, tmp_path, capsys):
    """Models not trained from --targets: value / label_<j> columns."""
    import csv

    import sktransfer
    from sktransfer import FineTunedClassifier, FineTunedRegressor

    kw = {**FT_TINY, "max_epochs": 1}
    files = [str(targets / "images" / f"s{i}.png") for i in range(8)]
    Y = np.array([[i % 2, (i // 2) % 2] for i in range(8)])
    for est, y, header in [
        (FineTunedRegressor(**kw), np.linspace(0, 1, 8), ["path", "value"]),
        (FineTunedClassifier(**kw), Y, ["path", "label_0", "label_1"]),
    ]:
        path = sktransfer.save(est.fit(files, y), tmp_path / "m.skt")
        rc = main(["predict", str(path), *files[:3]])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        rows = list(csv.reader(io.StringIO(captured.out)))
        assert rows[0][: len(header)] == header
        cells = np.array([[float(v) for v in r[1 : len(header)]] for r in rows[1:]])
        want = est.predict(files[:3]).reshape(3, -1)
        np.testing.assert_allclose(cells, want, rtol=1e-5, atol=1e-6)


def _bad_csv(tmp_path, targets, text):
    """``text`` as a CSV in tmp_path; IMG is an existing image's absolute path."""
    path = tmp_path / "bad.csv"
    path.write_text(text.replace("IMG", str(targets / "images" / "g0.png")))
    return str(path)


BAD_TARGETS = [
    (["--targets", "NOPE.csv"], None, "'NOPE.csv' does not exist"),
    (["--targets", "BAD"], "path\nIMG\n", "has no target column"),
    (["--targets", "BAD"], "path,a,b\nIMG,1\n", "line 2: 2 cells, but the header"),
    (["--targets", "BAD"], "path,a\nIMG,1\nmissing.png,2\n", "'missing.png' does not"),
    (["--targets", "BAD"], "path,a\nIMG,\nIMG,1\n", "column 'a' is empty"),
    (["--targets", "BAD"], "path,a,b\nIMG,1,tall\n", "column 'b' holds 'tall', not a"),
    (["--targets", "BAD", "--task", "regression"], "path,a\nIMG,x\n", "not a number"),
    (["--targets", "BAD"], "path,a\nIMG,0.5\nIMG,nan\n", "finite target"),
    (["--targets", "BAD"], "path,a,b\nIMG,1,2\nIMG,3,0\n", "use --task regression"),
    (["--targets", "BAD", "--task", "multilabel"], "path,a\nIMG,1\n", "2 or more"),
    (["--targets", "BAD", "--task", "classification"], "p,a,b\nIMG,1,0\n", "one col"),
    (["--targets", "BAD"], "path,a,b\nIMG,1,0\nIMG,0,0\n", "label column(s) ['b']"),
    (["--targets", "VALUES", "--strategies", "codes_logreg"], None, "do not serve"),
    (["--targets", "VALUES", "--per-class", "2"], None, "--per-class counts images"),
    (["--task", "regression"], None, "--task regression needs --targets"),
    (["--strategies", "codes_ridge"], None, "do not serve the classification task"),
]


@pytest.mark.parametrize(
    "extra, text, message", BAD_TARGETS, ids=[m for _, _, m in BAD_TARGETS]
)
def test_bad_targets_are_one_line_exit_2_before_any_image_is_read(
    extra, text, message, targets, tmp_path, no_work, capsys
):
    subs = {
        "BAD": _bad_csv(tmp_path, targets, text or ""),
        "NOPE.csv": "NOPE.csv",
        "VALUES": str(targets / "images" / "values.csv"),
    }
    argv = ["compare", str(targets / "images"), *CLI_TINY]
    argv += [subs.get(a, a) for a in extra] + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert message in line, line
    assert not (tmp_path / "o").exists()


def test_targets_with_a_named_dataset_is_refused(capsys, tmp_path):
    argv = ["compare", "digits", "--targets", str(tmp_path / "t.csv"), *CLI_TINY]
    assert main(argv) == 2
    assert "not the named dataset 'digits'" in _one_line(capsys)
