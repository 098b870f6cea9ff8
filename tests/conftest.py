"""Shared fixtures: tiny backbones and tiny images so the suite stays fast on CPU."""

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


# Tolerances of the same result computed on two compute paths (activation
# stores vs the whole network, ONNX Runtime vs torch, another batch size or
# thread count, a saved and loaded model): float sums in another order. Exact
# equality is only for two runs of one path. Scaled to the largest magnitude.
FP32_RTOL = 1e-5
BF16_RTOL = 2e-2


def assert_close_paths(actual, desired, rtol=FP32_RTOL, err_msg=""):
    """``actual`` equals ``desired`` up to ``rtol`` times ``desired``'s scale."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = max(1.0, float(np.abs(desired).max(initial=0.0)))
    np.testing.assert_allclose(
        actual, desired, rtol=0, atol=rtol * scale, err_msg=err_msg
    )


def assert_same_labels(actual, desired, scores, rtol=FP32_RTOL):
    """Labels equal except where ``scores`` (n, k) or (n,) are a near-tie."""
    scores = np.asarray(scores, dtype=np.float64)
    scale = max(1.0, float(np.abs(scores).max(initial=0.0)))
    if scores.ndim == 1:
        margin = np.abs(scores)
    else:
        top2 = np.sort(scores, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    clear = margin > 10 * rtol * scale
    np.testing.assert_array_equal(np.asarray(actual)[clear], np.asarray(desired)[clear])


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
