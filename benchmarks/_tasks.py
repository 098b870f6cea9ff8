"""What ``regression.py`` and ``multilabel.py`` share: the Fashion-MNIST
images their tasks are made of (``sktransfer.datasets.make_rotated`` /
``make_mosaics``), and the plain fine-tuning loop a careful user would write
by hand.
"""

from __future__ import annotations

import time

import torch

from sktransfer.datasets import load_fashion_mnist, load_fashion_mnist_sample


def fashion():
    """Fashion-MNIST train images and labels: the Debian package, else the sample."""
    try:
        X, y = load_fashion_mnist(subset="train", return_X_y=True)
        return X, y, "full Fashion-MNIST (Debian package)"
    except (FileNotFoundError, OSError):
        X, y = load_fashion_mnist_sample(subset="train", return_X_y=True)
        return X, y, "bundled 2,000-image sample"


def timed(make, X, y, X_test):
    """``make()`` fit on ``(X, y)`` from a cold process cache, then ``predict``
    on ``X_test``: the predictions and the seconds of both."""
    from sktransfer._runtime import clear_caches

    clear_caches()  # every method starts cold: no activations of another
    t0 = time.perf_counter()
    pred = make().fit(X, y).predict(X_test)
    return pred, time.perf_counter() - t0


def sample_parser(doc):
    """The command line both scripts share: samples, their sizes, the loop."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--no-loop", action="store_true", help="skip the plain loop")
    return parser


def plain_loop(X, Y, X_test, *, loss, epochs=15, size=96, lr=1e-3, seed=0):
    """A hand-written fine-tuning loop: EfficientNet-Lite0 (ImageNet, offline),
    a new linear head, every layer trained with AdamW for ``epochs`` epochs at
    ``size`` px (batch 32, weight decay 1e-2, ImageNet normalization), targets
    standardized for regression. Returns the test outputs and the seconds.
    """
    from sktransfer import load_backbone
    from sktransfer._backbones import find_head, strip_head

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    net, prep = load_backbone("efficientnet_lite0")
    strip_head(net) if find_head(net) else None
    n_out = Y.shape[1] if Y.ndim == 2 else 1
    n_feat = net(torch.zeros(1, 3, size, size)).flatten(1).shape[1]
    head = torch.nn.Linear(n_feat, n_out)
    model = torch.nn.Sequential(net, torch.nn.Flatten(), head)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)

    def pixels(imgs):
        t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear")
        return (t - mean) / std

    Xt, Xv = pixels(X), pixels(X_test)
    T = torch.as_tensor(Y, dtype=torch.float32).reshape(len(Y), n_out)
    if loss == "mse":
        mu, sd = T.mean(0), T.std(0).clamp_min(1e-8)
        T = (T - mu) / sd
        criterion = torch.nn.MSELoss()
    else:
        criterion = torch.nn.BCEWithLogitsLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(Xt), generator=gen).split(32):
            opt.zero_grad()
            criterion(model(Xt[b]), T[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(Xv[i : i + 64]) for i in range(0, len(Xv), 64)])
    if loss == "mse":
        out = out * sd + mu
    return out.numpy(), time.perf_counter() - t0
