"""Shared fixtures: tiny backbones and tiny images so the suite stays fast on CPU."""

import numpy as np
import pytest
import torch
from torch import nn

# A tiny timm network (random init, ~0.36M parameters): real architecture, fast.
TINY_MODEL = "timm/test_efficientnet"
TINY = {"model": TINY_MODEL, "weights": None, "input_size": 32}


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
