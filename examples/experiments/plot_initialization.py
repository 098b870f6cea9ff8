"""
Initialization: Xavier vs Gaussian vs constant
==============================================

A deep-learning tutorial this package's brief drew on (not published with it;
the published work on initialization is [Glorot2010]_) reports an experiment: a
small multilayer perceptron learns to separate **two 12-dimensional Gaussians
with the same covariance whose means are 1 apart in every dimension** (400 samples
to train, 100 to test), and the only thing that changes is how the weights
start:

* Xavier / Glorot uniform (scaled to each layer's fan-in and fan-out);
* a Gaussian with a small standard deviation (0.1);
* a Gaussian with a large standard deviation (3.0);
* a constant (every weight 0.1, biases 0).

Their findings: Xavier is best, a small-variance Gaussian is fine, a large
variance trains slowly, and constant initialization -- which cannot break the
symmetry between hidden units -- *still* trained. We rerun it in plain PyTorch,
five seeds per initialization, and plot the curves side by side.
"""

# %%
# The data: two Gaussians, same covariance, means 1 apart per dimension
# ---------------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import norm
from torch import nn

torch.set_num_threads(1)  # tiny networks: one thread is fastest
D, N_TRAIN, N_TEST = 12, 400, 100


def two_gaussians(seed):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1], (N_TRAIN + N_TEST) // 2))
    X = rng.standard_normal((len(y), D)) + y[:, None] * 1.0  # cov = identity
    X = X - 0.5  # centre the pair of means on the origin
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return t(X[:N_TRAIN]), t(y[:N_TRAIN]), t(X[N_TRAIN:]), t(y[N_TRAIN:])


# The best any classifier can do: the means are sqrt(12) standard deviations apart.
bayes = norm.cdf(np.sqrt(D) / 2)
print(f"Bayes-optimal accuracy: {bayes:.3f}")

# %%
# The network and the four initializations
# ----------------------------------------


def mlp():
    return nn.Sequential(
        nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)
    )


def init_(net, how):
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
            if how == "Xavier":
                nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain("tanh"))
            elif how == "Gaussian, std 0.1":
                nn.init.normal_(m.weight, std=0.1)
            elif how == "Gaussian, std 3":
                nn.init.normal_(m.weight, std=3.0)
            else:
                nn.init.constant_(m.weight, 0.1)


def train(how, seed, epochs=40):
    Xtr, ytr, Xte, yte = two_gaussians(seed)
    torch.manual_seed(seed)
    net = mlp()
    init_(net, how)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss()
    losses, accs = [], []
    for _ in range(epochs):
        for idx in torch.randperm(N_TRAIN).split(20):
            opt.zero_grad()
            loss_fn(net(Xtr[idx]).squeeze(1), ytr[idx]).backward()
            opt.step()
        with torch.no_grad():
            losses.append(loss_fn(net(Xtr).squeeze(1), ytr).item())
            accs.append(
                ((net(Xte).squeeze(1) > 0).float() == yte).float().mean().item()
            )
    return losses, accs


INITS = ["Xavier", "Gaussian, std 0.1", "Gaussian, std 3", "constant 0.1"]
SEEDS = range(5)
results = {how: np.array([train(how, s) for s in SEEDS]) for how in INITS}

# %%
# Training curves, side by side
# -----------------------------
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
epochs = np.arange(1, results["Xavier"].shape[2] + 1)
for i, how in enumerate(INITS):
    for ax, k in ((axes[0], 0), (axes[1], 1)):
        curves = results[how][:, k]
        ax.plot(epochs, curves.mean(0), color=f"C{i}", lw=2, label=how)
        ax.fill_between(epochs, curves.min(0), curves.max(0), color=f"C{i}", alpha=0.15)
axes[0].set_yscale("log")
axes[0].set_ylabel("training loss (log scale)")
axes[1].axhline(bayes, color="k", ls=":", label="Bayes optimum")
axes[1].set_ylabel("test accuracy (100 points)")
axes[1].set_ylim(0.4, 1.0)
for ax in axes:
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
axes[1].legend(loc="lower right", fontsize=8)
fig.suptitle("12-d Gaussians, MLP 12-16-16-1 (tanh), SGD; mean and range of 5 seeds")
fig.tight_layout()
plt.show()

for how in INITS:
    loss, acc = results[how][:, 0], results[how][:, 1]
    print(
        f"{how:18s} loss after 5 epochs {loss[:, 4].mean():.3f}, after 40 "
        f"{loss[:, -1].mean():.3f}; final test accuracy {acc[:, -1].mean():.3f}"
    )

# %%
# What we see, and why constant initialization still trains
# ---------------------------------------------------------
# Read from the curves of this run. One test accuracy on ``N_TEST`` points has a
# standard error of about ``se`` (printed first): smaller differences are noise.
final = {how: results[how][:, 1, -1].mean() for how in INITS}
early = {how: results[how][:, 0, 4].mean() for how in INITS}
last_loss = {how: results[how][:, 0, -1].mean() for how in INITS}
se = np.sqrt(bayes * (1 - bayes) / N_TEST)
print(f"standard error of one test accuracy: {se:.3f}; Bayes optimum {bayes:.3f}")
print(
    "training loss after 5 epochs, fastest first: "
    + ", ".join(f"{h} {early[h]:.3f}" for h in sorted(early, key=early.get))
)
print(
    "final test accuracy, best first: "
    + ", ".join(
        f"{h} {final[h]:.3f} ({final[h] - bayes:+.3f} vs Bayes)"
        for h in sorted(final, key=final.get, reverse=True)
    )
)
worst = min(final, key=final.get)
print(f"worst final test accuracy: {worst}")
d = final["constant 0.1"] - final["Xavier"]
print(
    f"constant vs Xavier: test accuracy {d:+.3f} "
    f"({'within' if abs(d) <= se else 'outside'} one standard error); final "
    f"training loss {last_loss['constant 0.1']:.3f} vs {last_loss['Xavier']:.3f}"
)

# %%
# Why. A **large-variance Gaussian** saturates the tanh units: gradients through
# them vanish, the loss falls slowly, and the boundary it learns can be wildly
# curved. Well-scaled starts (**Xavier**, the **small Gaussian**) keep the units
# in their linear range; their training loss keeps falling long after the test
# accuracy has settled, as the 16-16 network starts fitting the noise of its
# training points, which is what early stopping is for.
#
# **Constant** initialization gives every hidden unit of a layer the same
# weights; they receive identical gradients and stay identical forever, so the
# network behaves like a chain of single units. It can still train, as the
# authors found, because this problem's optimal boundary is a single hyperplane
# orthogonal to ``(1, ..., 1)``: one unit can represent it (and a constant first
# layer even starts pointing in that direction). Its training loss then plateaus
# at the level of a linear model -- it *cannot* overfit -- which the last line
# above compares with Xavier's. On a problem that needs several hidden units it
# would fail.
#
# In sktransfer the new head of a :class:`~sktransfer.FineTunedClassifier` is
# initialized with ``head_init="xavier"``, ``"normal"``, ``"zeros"`` or
# ``"class_means"`` (the few-shot recipe: the normalized class means of the
# frozen features).
