"""The practitioner's path on the command line: compare --save, predict, extract.

These run the default CPU path (no fixture patches tracing off).
"""

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

import sktransfer
from sktransfer.cli import main

TINY_ARGS = ["--model", TINY["model"], "--weights", "none", "--input-size", "32"]
REPO = Path(__file__).resolve().parents[1]


def _image(rng, cls):
    a = rng.integers(0, 100, size=(20, 20, 3), dtype=np.uint8)
    a[:10] += np.uint8(120 * cls)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A training ImageFolder, and new photos in nested folders with decoys."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["boots", "shirts"]):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(6):
            _image(rng, c).save(root / "train" / cls / f"{i}.png")
    new = root / "new"
    (new / "sub").mkdir(parents=True)
    (new / ".thumbs").mkdir()
    for i in range(3):
        _image(rng, i % 2).save(new / f"n{i}.png")
        _image(rng, i % 2).convert("L").save(new / "sub" / f"m{i}.JPG")
    _image(rng, 0).save(new / ".thumbs" / "t.png")  # hidden folder: skipped
    _image(rng, 0).save(new / ".hidden.png")  # hidden file: skipped
    (new / "notes.txt").write_text("not an image")
    expected = sorted(
        [str(new / f"n{i}.png") for i in range(3)]
        + [str(new / "sub" / f"m{i}.JPG") for i in range(3)]
    )
    return root, expected


@pytest.fixture(scope="module")
def saved_model(folders, tmp_path_factory):
    root, _ = folders
    out = tmp_path_factory.mktemp("report")
    model = out / "best.skt"
    rc = main(
        [
            "compare",
            str(root / "train"),
            *TINY_ARGS,
            "--cv",
            "2",
            "--strategies",
            "codes_logreg,prototype",
            "--out",
            str(out),
            "--save",
            str(model),
            "-q",
        ]
    )
    assert rc == 0
    return model, out


def test_compare_save_then_predict_writes_csv(folders, saved_model, tmp_path, capsys):
    root, expected = folders
    model, out = saved_model
    assert model.is_file()
    best = json.loads((out / "report.json").read_text())["results"][0]["strategy"]
    assert best in {"codes_logreg", "prototype"}
    capsys.readouterr()
    csv_path = tmp_path / "preds.csv"
    rc = main(["predict", str(model), str(root / "new"), "--out", str(csv_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["path", "label", "proba_boots", "proba_shirts"]
    assert sorted(r[0] for r in rows[1:]) == expected  # no hidden / non-image files
    labels = [r[1] for r in rows[1:]]
    assert set(labels) <= {"boots", "shirts"}
    proba = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    # the CSV is what the saved model predicts for those files
    loaded = sktransfer.load(model)
    paths = [r[0] for r in rows[1:]]
    np.testing.assert_allclose(proba, loaded.predict_proba(paths), atol=1e-6)
    assert labels == list(loaded.predict(paths))
    # the summary counts the predicted classes
    assert f"predicted {len(expected)} images" in captured.out
    for cls in set(labels):
        assert re.search(rf"^  {cls} +{labels.count(cls)}$", captured.out, re.M)
    assert str(csv_path.resolve()) in captured.out


def test_predict_learned_the_classes(folders, saved_model, capsys):
    """Images brighter at the top are 'shirts': the saved winner must see it."""
    root, _ = folders
    model, _ = saved_model
    rc = main(["predict", str(model), str(root / "train")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = list(csv.reader(io.StringIO(captured.out)))  # CSV on stdout
    truth = [Path(r[0]).parent.name for r in rows[1:]]
    assert np.mean([t == r[1] for t, r in zip(truth, rows[1:])]) >= 0.9
    assert "predicted 12 images" in captured.err  # summary on stderr


def test_predict_single_file_without_proba(folders, tmp_path, capsys):
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from sktransfer import CNNFeatureExtractor

    root, expected = folders
    X, y = sktransfer.datasets.load_image_folder(root / "train", return_X_y=True)
    pipe = make_pipeline(CNNFeatureExtractor(**TINY), LinearSVC()).fit(X, y)
    path = sktransfer.save(pipe, tmp_path / "svc.skt")
    rc = main(["predict", str(path), expected[0], "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = list(csv.reader(io.StringIO(captured.out)))
    assert rows[0] == ["path", "label"]  # LinearSVC has no predict_proba
    assert rows[1] == [expected[0], pipe.predict([expected[0]])[0]]


def test_extract_flat_folder_keeps_paths(folders, tmp_path, capsys):
    from sktransfer import CNNFeatureExtractor

    root, expected = folders
    target = tmp_path / "codes"  # no extension: np.savez adds .npz
    rc = main(["extract", str(root / "new"), "-o", str(target), *TINY_ARGS, "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"wrote {target}.npz" in out and "wrote codes " not in out
    with np.load(f"{target}.npz") as z:
        assert "labels" not in z.files
        paths = list(z["paths"])
        codes = z["codes"]
    assert sorted(paths) == expected
    ext = CNNFeatureExtractor(**TINY).fit(paths)
    np.testing.assert_allclose(codes, ext.transform(paths), atol=1e-5)


def test_extract_class_folders_keeps_paths_and_labels(folders, tmp_path, capsys):
    root, _ = folders
    target = tmp_path / "codes.npz"
    rc = main(
        [
            "extract",
            str(root / "train"),
            "-o",
            str(target),
            *TINY_ARGS,
            "-q",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--num-workers",
            "0",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with np.load(target) as z:
        assert len(z["paths"]) == len(z["labels"]) == len(z["codes"]) == 12
        assert [Path(p).parent.name for p in z["paths"]] == list(z["labels"])


@pytest.mark.parametrize(
    "command", [[], ["compare"], ["predict"], ["export"], ["extract"]]
)
def test_help_imports_no_torch(command):
    script = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from sktransfer.cli import main\n"
        "try:\n"
        f"    main({command + ['--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'timm', 'sklearn', "
        "'skorch', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'SECONDS', round(time.perf_counter() - t, 3))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY [] SECONDS" in res.stdout, res.stdout[-500:]
    assert "usage: sktransfer" in res.stdout


def test_import_sktransfer_is_lazy():
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sktransfer; assert 'torch' not in sys.modules; "
            "from sktransfer import CNNFeatureExtractor, save, load, __all__; "
            "assert 'torch' in sys.modules; "
            "assert all(hasattr(sktransfer, n) for n in __all__); "
            "assert {'save', 'load', 'CNNFeatureExtractor'} <= set(dir(sktransfer))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]


def _one_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_n_jobs_zero_is_rejected(tmp_path, capsys):
    rc = main(["compare", "digits", "--n-jobs", "0", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--n-jobs 0 has no meaning" in _one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_every_strategy_failed_exits_non_zero(folders, tmp_path, capsys, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    def broken_fit(self, X, y, sample_weight=None):
        raise ValueError("broken on purpose")

    monkeypatch.setattr(LogisticRegression, "fit", broken_fit)
    root, _ = folders
    out = tmp_path / "o"
    args = [*TINY_ARGS, "--cv", "2", "--strategies", "codes_logreg,pixels_logreg"]
    rc = main(["compare", str(root / "train"), *args, "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "every strategy failed" in err and "broken on purpose" in err
    assert "Traceback" not in err
    assert (out / "report.csv").exists()  # written for diagnosis


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_model", "does not exist"),
        ("missing_input", "does not exist"),
        ("not_an_image", "is not an image file"),
        ("empty_folder", "no images found"),
        ("joblib_model", "not a model file written by sktransfer.save"),
        ("broken_image", "cannot read image file"),
        ("tampered_model", "cannot load"),
    ],
)
def test_predict_bad_input_one_clear_line(
    case, message, folders, saved_model, tmp_path, capsys
):
    import joblib

    root, expected = folders
    model, _ = saved_model
    inputs = [expected[0]]
    (tmp_path / "empty").mkdir()
    if case == "missing_model":
        model = tmp_path / "nope.skt"
    elif case == "missing_input":
        inputs = [str(tmp_path / "no" / "such")]
    elif case == "not_an_image":
        inputs = [str(root / "new" / "notes.txt")]
    elif case == "empty_folder":
        inputs = [str(tmp_path / "empty")]
    elif case == "joblib_model":
        joblib.dump({"a": 1}, tmp_path / "m.joblib")
        model = tmp_path / "m.joblib"
    elif case == "broken_image":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
        inputs = [str(tmp_path / "bad.png")]
    elif case == "tampered_model":
        import zipfile

        with zipfile.ZipFile(model) as zf:
            items = {n: zf.read(n) for n in zf.namelist()}
        items["tensors.safetensors"] = b"garbage"
        model = tmp_path / "tampered.skt"
        with zipfile.ZipFile(model, "w") as zf:
            for n, d in items.items():
                zf.writestr(n, d)
    rc = main(["predict", str(model), *inputs])
    assert rc == 2
    assert message in _one_line(capsys)


def test_bad_save_path_fails_before_work(folders, capsys):
    root, _ = folders
    rc = main(
        ["compare", str(root / "train"), "--save", "/no/such/dir/m.skt", *TINY_ARGS]
    )
    assert rc == 2
    assert "does not exist" in _one_line(capsys)


def test_python_m_predict_bad_path_exit_2():
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "sktransfer", "predict", "/no/model.skt", "/no/dir"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "does not exist" in res.stderr
    print(f"bad-path run: {time.perf_counter() - t:.2f} s")


def test_html_repr_links_to_our_api_pages():
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC
    from sklearn.utils import estimator_html_repr

    from sktransfer import (
        CNNFeatureExtractor,
        CosineSoftmaxClassifier,
        FineTunedClassifier,
        PrototypeClassifier,
    )

    for cls in (
        CNNFeatureExtractor,
        FineTunedClassifier,
        PrototypeClassifier,
        CosineSoftmaxClassifier,
    ):
        link = cls()._get_doc_link()
        assert link == (
            "https://sktransfer.readthedocs.io/en/latest/generated/"
            f"sktransfer.{cls.__name__}.html"
        )
    html = estimator_html_repr(make_pipeline(CNNFeatureExtractor(), SVC()))
    assert "generated/sktransfer.CNNFeatureExtractor.html" in html
    assert "scikit-learn.org" in html  # sklearn's own steps keep their links


@pytest.mark.parametrize(
    "damage, extra",
    [("garbage", []), ("truncated", []), ("truncated", ["--num-workers", "1"])],
)
def test_predict_one_corrupt_image_is_exit_2_naming_it(
    damage, extra, saved_model, tmp_path, capsys
):
    from test_cli import write_corrupt_folder

    model, _ = saved_model
    bad = write_corrupt_folder(tmp_path / "new", damage)
    csv_path = tmp_path / "preds.csv"
    args = [str(model), str(tmp_path / "new"), "--out", str(csv_path), *extra]
    rc = main(["predict", *args])
    line = _one_line(capsys)
    assert rc == 2, line
    assert repr(str(bad)) in line and "cannot read image file" in line
    assert not csv_path.exists()


def test_predict_reports_the_csv_it_wrote(
    folders, saved_model, tmp_path, monkeypatch, capsys
):
    root, expected = folders
    model, _ = saved_model
    monkeypatch.chdir(tmp_path)
    rc = main(["predict", str(model), expected[0], "--out", "preds.csv"])
    assert rc == 0
    assert f"wrote {tmp_path.resolve() / 'preds.csv'}\n" in capsys.readouterr().out
    assert (tmp_path / "preds.csv").read_text().startswith("path,label")


def test_export_writes_an_onnx_file_that_labels_like_predict(
    folders, saved_model, tmp_path, capsys
):
    """`sktransfer export MODEL OUT.onnx`: one file, checked at export, whose
    labels on the model's own input are predict's; bad paths are exit 2."""
    import onnxruntime as ort

    import sktransfer

    model, _ = saved_model
    out = tmp_path / "model.onnx"
    assert main(["export", str(model), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    fitted = sktransfer.load(model)
    size = fitted[0].preprocessing_.input_size
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(6, *size, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {session.get_inputs()[0].name: X})[0]
    np.testing.assert_array_equal(labels, fitted.predict(X))
    assert main(["export", str(tmp_path / "missing.skt"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(model), str(tmp_path / "no" / "dir.onnx")]) == 2
