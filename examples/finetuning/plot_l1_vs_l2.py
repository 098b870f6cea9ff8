"""
L1 vs L2: sparse weights or small weights
=========================================

Two penalties, two priors. Adding :math:`\\lambda \\|w\\|_2^2` to the loss (L2,
*weight decay*) is maximum a posteriori estimation under a **Gaussian prior** on
the weights: every weight shrinks towards zero, none becomes exactly zero. Adding
:math:`\\lambda \\|w\\|_1` (L1, the *LASSO*) corresponds to a **Laplace prior**,
whose sharp peak at zero drives many weights to *exactly* zero: a sparse model
that ignores most of its inputs.

We see both on scikit-learn's handwritten digits (64 pixels), where a picture of
the weights says which pixels each model looks at, and then on 1280-d CNN codes
of Fashion-MNIST, where L1 picks a small subset of the codes.
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
# The same two heads on the 1280-d ImageNet EfficientNet-Lite0 codes of
# Fashion-MNIST (30 images per class). At the same ``C``, L1 keeps only about a
# hundred of the 1280 codes and pays several points of accuracy for it here;
# L2 uses every code that is ever non-zero. Sparsity is a choice -- a smaller,
# more interpretable model -- not a free gain: tune ``C`` by cross-validation
# (a weaker L1 penalty keeps more codes).
from sktransfer import CNNFeatureExtractor  # noqa: E402
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402

Xf, yf = load_fashion_mnist_sample(subset="train", return_X_y=True)
Xft, yft = load_fashion_mnist_sample(subset="test", return_X_y=True)
keep = np.concatenate([np.flatnonzero(yf == c)[:30] for c in range(10)])
cnn = CNNFeatureExtractor(model="efficientnet_lite0", input_size=64).fit(Xf[:1])
Z_tr, Z_te = cnn.transform(Xf[keep]), cnn.transform(Xft[::2])
sc = StandardScaler().fit(Z_tr)
Z_tr, Z_te = sc.transform(Z_tr), sc.transform(Z_te)
for name, model in models.items():
    model.set_params(C=0.05).fit(Z_tr, yf[keep])
    used = np.any(model.coef_ != 0, axis=0).sum()
    print(
        f"codes, {name:20s} test accuracy {model.score(Z_te, yft[::2]):.3f}; "
        f"codes used: {used} of {Z_tr.shape[1]}"
    )

# %%
# In a fine-tuned network
# -----------------------
# ``FineTunedClassifier`` exposes both priors as flat, grid-searchable
# parameters: ``weight_decay`` (L2, decoupled, not applied to BatchNorm and biases)
# and ``l1`` (an L1 penalty on the trained weights added to the loss). A
# subgradient step rarely lands on an exact zero, so in a network L1 shows up as
# a spike of *near*-zero weights rather than exact zeros; the proximal solvers
# used above (saga, liblinear) produce exact zeros.
