"""
L1 vs L2: sparse weights or small weights
=========================================

Two penalties, two priors. Adding :math:`\\lambda \\|w\\|_2^2` to the loss (L2,
*weight decay*) is maximum a posteriori estimation under a **Gaussian prior** on
the weights: every weight shrinks towards zero, none becomes exactly zero. Adding
:math:`\\lambda \\|w\\|_1` (L1, the *LASSO*) corresponds to a **Laplace prior**,
whose sharp peak at zero drives many weights to *exactly* zero: a sparse model
that ignores most of its inputs.

We see both on scikit-learn's handwritten digits (8x8 pixels), where a picture
of the weights says which pixels each model looks at, then on the CNN codes of
Fashion-MNIST, where L1 picks a subset of the codes, and finally inside a
fine-tuned network (:class:`~sktransfer.FineTunedClassifier`'s ``l1`` and
``weight_decay``).
"""

# %%
# Digits: the weights as pictures
# -------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

X, y = load_digits(return_X_y=True)
X_tr, X_te, y_tr, y_te = train_test_split(
    X, y, test_size=0.5, stratify=y, random_state=0
)
scaler = StandardScaler().fit(X_tr)
X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)

C = 0.05  # the same strength for both; smaller C = stronger prior
models = {
    "L2 (Gaussian prior)": LogisticRegression(C=C, l1_ratio=0, max_iter=2000),
    "L1 (Laplace prior)": LogisticRegression(
        C=C, l1_ratio=1, solver="saga", max_iter=5000, tol=1e-3
    ),
}
for name, model in models.items():
    model.fit(X_tr, y_tr)
    w = model.coef_
    print(
        f"{name:20s} test accuracy {model.score(X_te, y_te):.3f}, "
        f"exact zeros {np.mean(w == 0):.0%} of {w.size} weights"
    )

fig = plt.figure(figsize=(10, 5.2))
grid = fig.add_gridspec(2, 6, width_ratios=[1, 1, 1, 1, 0.15, 2.4])
for row, (name, model) in enumerate(models.items()):
    lim = np.abs(model.coef_).max()
    for j, digit in enumerate([0, 3, 7, 8]):
        ax = fig.add_subplot(grid[row, j])
        ax.imshow(model.coef_[digit].reshape(8, 8), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(f"class {digit}")
        if j == 0:
            ax.set_ylabel(name.split(" (")[0], fontsize=12)
    ax = fig.add_subplot(grid[row, 5])
    w = model.coef_.ravel()
    ax.hist(w, bins=61, color=f"C{row}")
    ax.set_yscale("log")
    ax.set_title(f"{name}: {np.mean(w == 0):.0%} exactly zero", fontsize=10)
    ax.set_xlim(-1.6, 1.6)
fig.suptitle("Logistic regression weights on digits (red +, blue -, white = 0)")
fig.tight_layout()
plt.show()

# %%
# The whole regularization path
# -----------------------------
# As the penalty strengthens (C falls), L1 removes more and more weights while
# L2 keeps all of them, only smaller. (The few exact zeros under L2 are pixels
# that are blank in every training image: standardized, they are always 0, so
# no penalty is needed to zero their weights.)
Cs = np.logspace(-3, 0, 7)
path = {name: [] for name in models}
for c in Cs:
    for name, model in models.items():
        model.set_params(C=c).fit(X_tr, y_tr)
        path[name].append(
            (
                np.mean(model.coef_ == 0),
                np.abs(model.coef_).mean(),
                model.score(X_te, y_te),
            )
        )

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for i, (name, rows) in enumerate(path.items()):
    rows = np.array(rows)
    for ax, col in zip(axes, range(3), strict=True):
        ax.plot(Cs, rows[:, col], "o-", color=f"C{i}", lw=2, label=name)
for ax, label in zip(
    axes, ["fraction of exact zeros", "mean |weight|", "test accuracy"], strict=False
):
    ax.set_xscale("log")
    ax.set_xlabel("C (inverse penalty strength)")
    ax.set_title(label)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# On CNN codes: L1 as feature selection
# -------------------------------------
# The same two heads on the ImageNet EfficientNet-Lite0 codes of Fashion-MNIST
# (30 images per class), at the same ``C``: the lines printed below give how many
# codes each head uses and what it scores.
from sktransfer import CNNFeatureExtractor  # noqa: E402
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402

Xf, yf = load_fashion_mnist_sample(subset="train", return_X_y=True)
Xft, yft = load_fashion_mnist_sample(subset="test", return_X_y=True)
keep = np.concatenate([np.flatnonzero(yf == c)[:30] for c in range(10)])
cnn = CNNFeatureExtractor(
    model="efficientnet_lite0", input_size=64, precision="fp32"
).fit(Xf[:1])
Z_tr, Z_te = cnn.transform(Xf[keep]), cnn.transform(Xft[::2])
sc = StandardScaler().fit(Z_tr)
Z_tr, Z_te = sc.transform(Z_tr), sc.transform(Z_te)
code_scores = {}
for name, model in models.items():
    model.set_params(C=C).fit(Z_tr, yf[keep])
    used = np.any(model.coef_ != 0, axis=0).sum()
    code_scores[name] = (model.score(Z_te, yft[::2]), used)
    print(
        f"codes, {name:20s} test accuracy {code_scores[name][0]:.3f}; "
        f"codes used: {used} of {Z_tr.shape[1]}"
    )
(acc_l2, used_l2), (acc_l1, used_l1) = code_scores.values()
print(
    f"L1 kept {used_l1} of the {used_l2} codes L2 uses, and changed the test "
    f"accuracy by {acc_l1 - acc_l2:+.3f}"
)

# %%
# Sparsity is a choice -- a smaller, more interpretable model -- not a free
# gain: tune ``C`` by cross-validation (a weaker L1 penalty keeps more codes).

# %%
# In a fine-tuned network
# -----------------------
# :class:`~sktransfer.FineTunedClassifier` exposes both priors as flat,
# grid-searchable parameters: ``weight_decay`` (L2, decoupled, not applied to
# BatchNorm and biases) and ``l1`` (an L1 penalty on the trained weight matrices
# and kernels, added to the loss). A plain (sub)gradient step on ``|w|`` would
# make a weight oscillate around zero without ever reaching it; the estimator
# therefore clips a weight whose update crosses zero to exactly ``0``
# (the *truncated gradient*), and keeps it there while the data gradient is
# weaker than the penalty. So L1 in a fine-tuned network gives **exact** zeros,
# like the solvers above.
#
# We fit the new head on the frozen network (``train_layers="head"``) twice, on
# the same images, once with ``l1=0`` and once with an L1 penalty, and compare
# the histograms of the head's weights.
from sktransfer import FineTunedClassifier  # noqa: E402

L1 = 1e-3
heads = {}
for l1 in (0.0, L1):
    ft = FineTunedClassifier(
        model="efficientnet_lite0",
        input_size=64,
        train_layers="head",
        head="linear",  # L1 acts on the weights a linear head scores with
        lr=1e-3,
        batch_size=32,
        l1=l1,
        max_epochs=10,
        precision="fp32",  # a technique, not a speed test: the same on every CPU
        random_state=0,
    ).fit(Xf[keep], yf[keep])
    w = ft.net_.module_.head.weight.detach().numpy().ravel()
    heads[l1] = (w, ft.score(Xft[::2], yft[::2]))
    print(
        f"FineTunedClassifier(l1={l1:g}): test accuracy {heads[l1][1]:.3f}, "
        f"exact zeros {np.mean(w == 0):.1%} of {w.size} head weights, "
        f"|w| < 1e-3: {np.mean(np.abs(w) < 1e-3):.1%}"
    )

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharex=True)
for ax, (l1, (w, acc)) in zip(axes, heads.items(), strict=True):
    ax.hist(w, bins=81, color="C1" if l1 else "C0")
    ax.set_yscale("log")
    ax.set_xlabel("head weight")
    ax.set_ylabel("number of weights (log scale)")
    ax.set_title(
        f"l1={l1:g}: {np.mean(w == 0):.1%} exactly zero, test {acc:.3f}", fontsize=10
    )
    ax.grid(alpha=0.3)
fig.suptitle("FineTunedClassifier head weights, EfficientNet-Lite0 frozen, 64 px")
fig.tight_layout()
plt.show()

zeros = {l1: float(np.mean(w == 0)) for l1, (w, _) in heads.items()}
print(
    f"exact zeros: l1=0 -> {zeros[0.0]:.1%}, l1={L1:g} -> {zeros[L1]:.1%}: "
    + (
        "the L1 penalty produced exact zeros in the fine-tuned head"
        if zeros[L1] > zeros[0.0]
        else "no more exact zeros with the L1 penalty than without, in this run"
    )
)
