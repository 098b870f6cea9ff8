"""GridSearchCV over an SVC head on CNN codes, with and without the code cache.

2,000 images (the bundled Fashion-MNIST sample, subset="all"), EfficientNet-Lite0
with its real offline weights at a modest input size (``--size``, 32 px by default
so the uncached search stays within minutes on 2 cores), 5 folds x 6 values of C.

Measured, in one process, torch.set_num_threads(2), n_jobs=1:

- ``extract``  : one extraction pass over the 2,000 images (no cache);
- ``svc grid`` : the same GridSearchCV on precomputed codes (the SVC fits alone);
- ``cached``   : GridSearchCV(Pipeline(CNNFeatureExtractor(cache=dir), SVC)), cold
  cache (empty directory);
- ``warm``     : the same search again (a repeated run: every code from disk);
- ``uncached`` : GridSearchCV(Pipeline(CNNFeatureExtractor(), SVC)), which extracts
  the training and test images of every fold for every candidate (estimated, see
  below).

Target: cached <= 1.3 x (extract + svc grid).

By default the uncached search is estimated from one timed (fold, C) candidate
times the 30 candidates plus the refit (it is 30 extraction passes; on a loaded
2-core machine that is most of an hour); ``--full-uncached`` runs it all.

Usage: python benchmarks/grid_cache.py [--size 32] [--full-uncached]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench import Log  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

import sktransfer._extractor as extractor_mod  # noqa: E402
from sktransfer import CNNFeatureExtractor  # noqa: E402
from sktransfer.datasets import load_fashion_mnist_sample  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "grid_cache.txt"
CS = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--full-uncached",
        action="store_true",
        help="run the whole uncached search (30 extraction passes) instead of "
        "timing one candidate and multiplying",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    X, y = load_fashion_mnist_sample(subset="all", return_X_y=True)
    log = Log()
    say = log.say

    # count images that really go through the network
    counter = {"n": 0}
    real = extractor_mod._forward_halving

    def counting(engine, batch):
        counter["n"] += len(batch)
        return real(engine, batch)

    extractor_mod._forward_halving = counting

    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    ext_params = {"input_size": args.size, "batch_size": 64, "device": "cpu"}
    say(
        f"# grid_cache: {len(X)} images, lite0 {args.size}px, 5 folds x {len(CS)} C "
        f"(SVC rbf), torch threads 2, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    # warm the per-process backbone / engine caches so no run pays the load
    CNNFeatureExtractor(**ext_params).fit(X[:2]).transform(X[:2])

    counter["n"] = 0
    t0 = time.perf_counter()
    Z = CNNFeatureExtractor(**ext_params).fit(X).transform(X)
    t_extract = time.perf_counter() - t0
    say(f"  one extraction pass      : {t_extract:7.1f} s  ({counter['n']} images)")

    def svc():
        return make_pipeline(StandardScaler(), SVC())

    t0 = time.perf_counter()
    g_codes = GridSearchCV(svc(), {"svc__C": CS}, cv=cv).fit(Z, y)
    t_svc = time.perf_counter() - t0
    say(f"  SVC grid on codes        : {t_svc:7.1f} s")

    grid = {"svc__C": CS}
    with tempfile.TemporaryDirectory() as cache:
        pipe = make_pipeline(
            CNNFeatureExtractor(**ext_params, cache=cache), StandardScaler(), SVC()
        )
        counter["n"] = 0
        t0 = time.perf_counter()
        g_cached = GridSearchCV(pipe, grid, cv=cv).fit(X, y)
        t_cached = time.perf_counter() - t0
        n_cached = counter["n"]
        t0 = time.perf_counter()
        GridSearchCV(pipe, grid, cv=cv).fit(X, y)
        t_warm = time.perf_counter() - t0
        n_warm = counter["n"] - n_cached
    budget = t_extract + t_svc
    say(
        f"  grid, cache (cold)       : {t_cached:7.1f} s  ({n_cached} images through "
        f"the network)"
    )
    say(f"  grid, cache (warm rerun) : {t_warm:7.1f} s  ({n_warm} images)")
    say(
        f"  cold cached / (extract + SVC grid) = {t_cached / budget:.2f}  "
        f"(target <= 1.3)"
    )
    same = np.allclose(
        g_cached.cv_results_["mean_test_score"], g_codes.cv_results_["mean_test_score"]
    )
    say(f"  same cv scores as the grid on precomputed codes: {same}")
    pipe = make_pipeline(CNNFeatureExtractor(**ext_params), StandardScaler(), SVC())
    if args.full_uncached:
        counter["n"] = 0
        t0 = time.perf_counter()
        GridSearchCV(pipe, grid, cv=cv).fit(X, y)
        t_plain = time.perf_counter() - t0
        say(
            f"  grid, no cache           : {t_plain:7.1f} s  ({counter['n']} images "
            f"through the network)"
        )
    else:
        # One (fold, C) candidate of the uncached search, timed, times the 30
        # candidates + the final refit: an estimate, labelled as such.
        train, test = next(cv.split(X, y))
        counter["n"] = 0
        t0 = time.perf_counter()
        p = clone(pipe).set_params(svc__C=CS[0]).fit(X[train], y[train])
        p.score(X[test], y[test])
        t_one = time.perf_counter() - t0
        n_fits = cv.get_n_splits() * len(CS)
        t_plain = t_one * n_fits + (t_extract + t_svc / (n_fits + 1))
        say(
            f"  grid, no cache (ESTIMATE): {t_plain:7.1f} s  (one candidate measured: "
            f"{t_one:.1f} s, {counter['n']} images; x {n_fits} candidates + refit; "
            f"--full-uncached runs it all)"
        )
    ratio = t_plain / t_cached
    say(f"  speed-up of the cache (no cache / cold cache) = {ratio:.1f}x")
    best = g_cached.best_params_["svc__C"]
    say(f"  best C {best}, cv accuracy {g_cached.best_score_:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    log.save(RESULTS.name)
    print(f"written to {os.path.relpath(RESULTS)}")


if __name__ == "__main__":
    main()
