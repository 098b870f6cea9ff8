"""Photo files: reduced JPEG decoding, EXIF orientation, resize modes, workers.

Also the image-input failures that used to pass silently or name nothing: float
TIFFs with NaN, a zero std, hidden folders, decompression bombs and corrupt files
read in DataLoader workers.
"""

import os
import re
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from sktransfer import CNNFeatureExtractor, _images
from sktransfer._backbones import Preprocessing, _torchvision_preprocessing
from sktransfer._images import Preprocessor, check_images, iter_batches
from sktransfer.datasets import load_image_folder

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def photo():
    """An upright 640x480 RGB photo (scikit-image's astronaut, cropped)."""
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()[16:496, :]).resize((640, 480))


def _save_sideways(img, path):
    """Store ``img`` rotated, tagged orientation 6 (how phones save portraits)."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    img.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def _pixels(paths_or_images, prep):
    images = check_images(paths_or_images)
    return next(iter_batches(images, Preprocessor(prep), 64, num_workers=0))


def _cosine(a, b):
    return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))


# ------------------------------------------------------------------------ EXIF
@pytest.mark.slow  # the shipped EfficientNet-Lite0 ImageNet weights (offline)
def test_exif_orientation_gives_the_upright_photos_codes(photo, tmp_path):
    upright, sideways = tmp_path / "upright.jpg", tmp_path / "sideways.jpg"
    photo.save(upright, quality=95)
    _save_sideways(photo, sideways)
    with Image.open(sideways) as im:
        assert im.size == (480, 640)  # really stored rotated
    ext = CNNFeatureExtractor(input_size=96, num_workers=0)
    codes = ext.fit_transform([str(upright), str(sideways)])
    assert _cosine(codes[0], codes[1]) > 0.99
    # The same pixels without the tag are a sideways photo: codes differ, so the
    # check above could fail if the orientation were ignored.
    plain = tmp_path / "plain.jpg"
    photo.transpose(Image.Transpose.ROTATE_90).save(plain, quality=95)
    assert _cosine(codes[0], ext.transform([str(plain)])[0]) < 0.97


def test_exif_orientation_also_applies_to_pil_inputs(photo, tmp_path):
    path = tmp_path / "sideways.jpg"
    _save_sideways(photo, path)
    prep = Preprocessing(input_size=(48, 64))
    from_file = _pixels([str(path)], prep)
    with Image.open(path) as im:
        im.load()
        from_pil = _pixels([im], prep)
    upright = _pixels([photo], prep)
    assert from_file.shape == from_pil.shape == (1, 3, 48, 64)
    # JPEG artefacts only (the file is also decoded at 1/8 DCT scale)
    assert (from_pil - upright).abs().mean() < 0.02
    assert (from_file - upright).abs().mean() < 0.05
    sideways = _pixels([photo.transpose(Image.Transpose.ROTATE_90)], prep)
    assert (sideways - upright).abs().mean() > 0.3


# ------------------------------------------------------------ reduced decoding
def test_large_jpeg_is_decoded_at_reduced_scale_with_bounded_memory(
    photo, tmp_path, monkeypatch
):
    path = tmp_path / "camera.jpg"
    photo.resize((4000, 3000)).save(path, quality=90)
    seen = []
    upright = _images._upright
    monkeypatch.setattr(
        _images, "_upright", lambda img: seen.append(img.size) or upright(img)
    )
    ext = CNNFeatureExtractor(**TINY, num_workers=0).fit([str(path)])
    ext.transform([str(path)])  # the engine (an ONNX export, alone) outside the window
    seen.clear()
    tracemalloc.start()
    try:
        codes = ext.transform([str(path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(codes).all()
    # 32 px squash: libjpeg's 1/8 scale (500x375) still covers the target.
    assert seen == [(500, 375)]
    full_float = 4000 * 3000 * 3 * 4  # what a full-resolution float32 copy takes
    assert peak < full_float / 20, peak


def test_draft_scale_still_covers_the_crop_size(photo, tmp_path, monkeypatch):
    path = tmp_path / "camera.jpg"
    photo.resize((2400, 1800)).save(path, quality=90)
    seen = []
    upright = _images._upright
    monkeypatch.setattr(
        _images, "_upright", lambda img: seen.append(img.size) or upright(img)
    )
    prep = Preprocessing(input_size=(224, 224), resize="crop", crop_pct=0.875)
    x = _pixels([str(path)], prep)
    assert x.shape == (1, 3, 224, 224)
    # shorter side must reach 256: 1/8 (225 px) is too small, 1/4 (450 px) is not
    assert seen == [(600, 450)]


# ---------------------------------------------------------------- resize modes
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_resize_crop_matches_torchvision_weights_transforms(photo, tmp_path, suffix):
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2  # resize 232, crop 224: not 0.875
    t = weights.transforms()
    prep = _torchvision_preprocessing(weights).override(resize="crop")
    assert prep.resize_plan(480, 640)[0] == (232, 309)
    path = tmp_path / f"photo{suffix}"
    photo.save(path)
    with Image.open(path) as im:
        # a careful torchvision user decodes JPEGs at reduced scale too
        im.draft("RGB", (309, 232))
        ref = t(im.convert("RGB"))
    got = _pixels([str(path)], prep)[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    # arrays take the tensor path (float resize): within uint8 rounding
    arr = np.asarray(photo)
    got = _pixels(arr[None], prep)[0]
    ref = t(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    assert (got - ref).abs().max() < 0.05  # normalized units (1/255 / std ~ 0.017)


def test_resize_crop_codes_match_a_torchvision_pipeline(photo, tmp_path):
    from torchvision.models import ResNet18_Weights, resnet18

    path = tmp_path / "photo.png"
    photo.save(path)
    ext = CNNFeatureExtractor(
        model="resnet18", weights=None, resize="crop", num_workers=0
    )
    codes = ext.fit_transform([str(path)])
    t = ResNet18_Weights.IMAGENET1K_V1.transforms()
    net = resnet18()
    net.load_state_dict(ext.backbone_.state_dict(), strict=False)
    net.fc = torch.nn.Identity()
    with Image.open(path) as im, torch.inference_mode():
        ref = net.eval()(t(im.convert("RGB"))[None]).numpy()
    np.testing.assert_allclose(codes, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


def test_squash_keeps_the_whole_image_and_crop_drops_borders(tmp_path):
    a = np.zeros((60, 120, 3), np.uint8)
    a[:, :10] = 255  # a white band at the left edge
    path = tmp_path / "band.png"
    Image.fromarray(a).save(path)
    squash = _pixels([str(path)], Preprocessing(input_size=(32, 32)))
    crop = _pixels([str(path)], Preprocessing(input_size=(32, 32), resize="crop"))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    assert (squash[0] * std + mean)[:, :, 0].min() > 0.9  # band still there
    assert (crop[0] * std + mean).max() < 0.01  # band cropped away


def test_array_and_file_inputs_agree(tmp_path, rng_images):
    X, _ = rng_images
    paths = []
    for i, a in enumerate(X[:4]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(paths[-1])
    for resize in ("squash", "crop"):
        # only upsampled: the file takes the same float path as the array
        prep = Preprocessing(input_size=(40, 40), resize=resize)
        torch.testing.assert_close(_pixels(paths, prep), _pixels(X[:4], prep))
        # downsampled: PIL resizes the file in uint8, equal to rounding
        prep = Preprocessing(input_size=(8, 8), resize=resize)
        assert (_pixels(paths, prep) - _pixels(X[:4], prep)).abs().max() < 0.05


def test_resize_is_a_validated_parameter(rng_images):
    X, _ = rng_images
    with pytest.raises(ValueError, match="resize"):
        CNNFeatureExtractor(**TINY, resize="stretch").fit(X)


# --------------------------------------------------------------------- workers
def test_num_workers_auto(monkeypatch, rng_images, tmp_path):
    X, _ = rng_images
    arrays = check_images(np.repeat(X, 2, axis=0))
    paths = []
    for i in range(40):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(X[i % len(X)]).save(paths[-1])
    files = check_images(paths)
    monkeypatch.setattr(_images, "available_cores", lambda: 4)
    assert _images.resolve_num_workers("auto", arrays) == 0
    assert _images.resolve_num_workers("auto", files) == 3
    assert _images.resolve_num_workers("auto", files.subset(range(4))) == 0
    assert _images.resolve_num_workers(3, arrays) == 3
    for cores in (1, 2):  # a worker would compete with the engine's threads
        monkeypatch.setattr(_images, "available_cores", lambda c=cores: c)
        assert _images.resolve_num_workers("auto", files) == 0
    # Workers change where decoding runs, never the codes.
    monkeypatch.setattr(_images, "available_cores", lambda: 3)
    ext = CNNFeatureExtractor(**TINY, num_workers="auto").fit(paths)
    np.testing.assert_array_equal(
        ext.transform(paths), ext.set_params(num_workers=0).transform(paths)
    )


def test_corrupt_file_in_a_worker_names_the_file(tmp_path, rng_images):
    X, _ = rng_images
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for p, a in zip(paths, X, strict=False):
        Image.fromarray(a).save(p)
    with open(paths[1], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    ext = CNNFeatureExtractor(**TINY, num_workers=1).fit(paths)
    with pytest.raises(ValueError, match=re.escape(repr(paths[1]))) as info:
        ext.transform(paths)
    assert "DataLoader worker" not in str(info.value)
    assert "cannot read image file" in str(info.value)


# ---------------------------------------------------------- silent NaN inputs
def test_float_tiff_with_nan_names_the_file(tmp_path):
    a = np.full((16, 16), 0.5, np.float32)
    a[3, 4] = np.nan
    path = tmp_path / "scan.tif"
    Image.fromarray(a, mode="F").save(path)
    with Image.open(path) as im:
        assert im.mode == "F"
    ext = CNNFeatureExtractor(**TINY, num_workers=0).fit([str(path)])
    with pytest.raises(ValueError, match=r"scan\.tif.*NaN"):
        ext.transform([str(path)])
    with pytest.raises(ValueError, match=r"image 0 .*NaN"):
        ext.transform([Image.fromarray(a, mode="F")])


def test_float_tiff_without_nan_goes_through(tmp_path):
    a = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    path = tmp_path / "scan.tif"
    Image.fromarray(a, mode="F").save(path)
    ext = CNNFeatureExtractor(**TINY, num_workers=0)
    codes = ext.fit_transform([str(path)])
    np.testing.assert_allclose(codes, ext.transform(a[None]), atol=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"std": (0, 0, 0)}, "std must be positive"),
        ({"std": (0.2, -0.1, 0.2)}, "std must be positive"),
        ({"std": (0.2, float("nan"), 0.2)}, "std must be finite"),
        ({"mean": (0.5, float("inf"), 0.5)}, "mean must be finite"),
    ],
)
def test_bad_normalization_is_refused(kw, match, rng_images):
    X, _ = rng_images
    with pytest.raises(ValueError, match=match):
        CNNFeatureExtractor(**TINY, **kw).fit(X)


# ------------------------------------------------------------ files and folders
def test_hidden_folders_and_files_are_skipped(tmp_path):
    img = Image.fromarray(np.zeros((8, 8), np.uint8))
    for rel in ("a/0.png", "a/.thumbs/0.png", "a/.x.png", "a/sub/1.png", "b/2.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / rel)
    (tmp_path / ".trash").mkdir()
    img.save(tmp_path / ".trash" / "3.png")
    X, y = load_image_folder(tmp_path, return_X_y=True)
    rel = sorted(os.path.relpath(p, tmp_path) for p in X)
    assert rel == ["a/0.png", "a/sub/1.png", "b/2.png"]
    assert sorted(y) == ["a", "a", "b"]


def test_decompression_bomb_names_the_file_and_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    ext = CNNFeatureExtractor(**TINY, num_workers=0).fit([str(path)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"bomb\.png.*MAX_IMAGE_PIXELS"):
        ext.transform([str(path)])


def test_finetune_on_files_with_auto_workers(tmp_path, rng_images, monkeypatch):
    from sktransfer import FineTunedClassifier

    X, y = rng_images
    paths = []
    for i in range(40):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(X[i % len(X)]).save(paths[-1])
    y = np.resize(y, 40)
    monkeypatch.setattr(_images, "available_cores", lambda: 3)
    clf = FineTunedClassifier(**TINY, max_epochs=1, random_state=0, resize="crop")
    clf.fit(paths, y)
    assert clf.preprocessing_.resize == "crop"
    auto = clf.predict_proba(paths)  # decoded in two workers
    np.testing.assert_array_equal(
        auto, clf.set_params(num_workers=0).predict_proba(paths)
    )


def test_files_decode_one_batch_ahead_in_a_thread_same_pixels_same_errors(tmp_path):
    """Without workers, files decode a batch ahead in a thread: the batches are
    those of image-by-image loading (the same computation), in order, and a
    corrupt file still fails with its name."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    pre = Preprocessor(Preprocessing(input_size=(16, 16)))
    images = check_images(paths)
    batches = list(iter_batches(images, pre, 2, num_workers=0))
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    one_by_one = pre.normalize(torch.stack([pre.load(images, i) for i in range(7)]))
    torch.testing.assert_close(torch.cat(batches), one_by_one, rtol=0, atol=0)
    (tmp_path / "img5.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="img5.png"):
        list(iter_batches(check_images(paths, check_files=False), pre, 2))
