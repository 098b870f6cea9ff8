"""
Do layers converge at different speeds?
=======================================

A deep-learning tutorial this package's brief drew on (not published with it)
claims that the *later* layers of a network settle first and the early layers
keep moving; other sources say the opposite (the early layers stabilise first
and the top keeps adapting). Rather than assume either, we measure it on that
tutorial's own experiment: two 12-dimensional
Gaussians with the same covariance and means 1 apart in every dimension, 400
training points, an MLP with **three hidden layers** (12-32-32-32-1, tanh),
trained with SGD.

After every epoch we record, for each layer's weight matrix :math:`W_l`,

* the relative change over the epoch, :math:`\\|W_l^{(t)} - W_l^{(t-1)}\\| /
  \\|W_l^{(t-1)}\\|`;
* the fraction of its total journey the layer still has to travel,
  :math:`\\|W_l^{(t)} - W_l^{(T)}\\| / \\|W_l^{(0)} - W_l^{(T)}\\|`: 1 at the start,
  0 at the end; a layer has settled when this stays near zero.

Ten seeds; the same measurement is available for any
:class:`~sktransfer.FineTunedClassifier` fit through the callback
:class:`~sktransfer.callbacks.WeightTracker`, which records per-layer weight
change.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
D, N_TRAIN, EPOCHS = 12, 400, 60
LAYERS = ["hidden 1", "hidden 2", "hidden 3", "output"]


def data(seed):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1], N_TRAIN // 2))
    X = rng.standard_normal((N_TRAIN, D)) + y[:, None] - 0.5
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def run(seed, optimizer="sgd"):
    X, y = data(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(D, 32), nn.Tanh(),
        nn.Linear(32, 32), nn.Tanh(),
        nn.Linear(32, 32), nn.Tanh(),
        nn.Linear(32, 1),
    )  # fmt: skip
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    snapshots = [[m.weight.detach().clone() for m in linears]]
    for _ in range(EPOCHS):
        for idx in torch.randperm(N_TRAIN).split(20):
            opt.zero_grad()
            loss_fn(net(X[idx]).squeeze(1), y[idx]).backward()
            opt.step()
        snapshots.append([m.weight.detach().clone() for m in linears])
    step = np.array(
        [
            [((b - a).norm() / a.norm()).item() for a, b in zip(prev, cur, strict=True)]
            for prev, cur in zip(snapshots[:-1], snapshots[1:], strict=True)
        ]
    )
    final = snapshots[-1]
    journey = [(w0 - f).norm() for w0, f in zip(snapshots[0], final, strict=True)]
    to_final = np.array(
        [
            [
                ((w - f).norm() / j).item()
                for w, f, j in zip(s, final, journey, strict=True)
            ]
            for s in snapshots
        ]
    )
    return step, to_final


SEEDS = range(10)
runs = {opt: [run(s, opt) for s in SEEDS] for opt in ("sgd", "adam")}

# %%
# Per-layer change, epoch to epoch
# --------------------------------
fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
for row, opt in enumerate(("sgd", "adam")):
    step = np.stack([r[0] for r in runs[opt]])  # (seeds, epochs, layers)
    to_final = np.stack([r[1] for r in runs[opt]])
    for j, name in enumerate(LAYERS):
        axes[row, 0].plot(
            np.arange(1, EPOCHS + 1), np.median(step[:, :, j], 0), lw=2, label=name
        )
        axes[row, 1].plot(np.arange(EPOCHS + 1), np.median(to_final[:, :, j], 0), lw=2)
    axes[row, 0].set_yscale("log")
    axes[row, 0].set_ylabel(f"{opt.upper()}\nrelative change per epoch")
    axes[row, 1].set_ylabel("distance left to final weights")
for ax in axes.ravel():
    ax.grid(alpha=0.3)
for ax in axes[1]:
    ax.set_xlabel("epoch")
axes[0, 0].legend(fontsize=8)
fig.suptitle("Per-layer convergence, MLP 12-32-32-32-1 (median of 10 seeds)")
fig.tight_layout()
plt.show()

# %%
# Which layer settles first?
# --------------------------
# We call a layer "settled" at the first epoch after which less than a tenth of
# its journey is left, and count, over the seeds, how often each layer
# settles first.
for opt in ("sgd", "adam"):
    settle = []
    for _, to_final in runs[opt]:
        within = to_final < 0.10
        # first epoch from which the layer stays below 10 % until the end
        settle.append(
            [EPOCHS - int(np.argmin(within[::-1, j])) for j in range(len(LAYERS))]
        )
    settle = np.array(settle)
    firsts = np.bincount(settle.argmin(1), minlength=len(LAYERS))
    print(
        f"{opt.upper():4s} median settling epoch: "
        + ", ".join(f"{n} {int(np.median(settle[:, j]))}" for j, n in enumerate(LAYERS))
        + " | settles first: "
        + ", ".join(f"{n} x{c}" for n, c in zip(LAYERS, firsts, strict=True) if c)
    )

# %%
# What we see
# -----------
# Two readings, from the same runs. **The first few epochs**: how much of its
# whole journey each layer has covered after ``EARLY`` epochs, and after how
# many epochs it has covered half of it (medians over the seeds).
EARLY = 3
for opt in ("sgd", "adam"):
    to_final = np.stack([r[1] for r in runs[opt]])  # (seeds, epochs + 1, layers)
    covered = 1 - np.median(to_final[:, EARLY], 0)
    half = [
        int(np.median(np.argmax(to_final[:, :, j] < 0.5, axis=1)))
        for j in range(len(LAYERS))
    ]
    step = np.stack([r[0] for r in runs[opt]])
    leader = np.bincount(np.median(step, 0).argmax(1), minlength=len(LAYERS))
    order = "later layers first" if covered[-1] > covered[0] else "not later first"
    print(
        f"{opt.upper():4s} covered after {EARLY} epochs: "
        + ", ".join(f"{n} {c:.0%}" for n, c in zip(LAYERS, covered, strict=True))
        + f" ({order}); half the journey after epochs "
        + ", ".join(f"{n} {h}" for n, h in zip(LAYERS, half, strict=True))
        + f"; largest relative change per epoch: {LAYERS[int(leader.argmax())]} in "
        f"{leader.max()} of {EPOCHS} epochs"
    )

# %%
# **The end of training** is the stricter criterion printed in the previous
# section (less than a tenth of the journey left): the settling epochs and
# which layer settles first, counted over the seeds. When the two readings
# disagree -- later layers moving first early on, yet all layers settling late
# and together -- "later layers converge first" describes the early phase only:
# once the network fits its training points, the loss keeps pushing all
# weights to grow together, which is what early stopping and weight decay are
# for. The size of the effect depends on the optimizer, as the two rows show.
# Measure it on *your* network rather than trusting either rule:
# :class:`~sktransfer.callbacks.WeightTracker` records the same quantities for
# any :class:`~sktransfer.FineTunedClassifier` fit.
