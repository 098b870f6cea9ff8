"""A refactor of the fine-tuning core must not change one weight: check it.

A one-off check, not a test: it fits ``FineTunedClassifier`` in fp32 (pinned,
with one torch thread, the CPU kind forced to one without bf16 rules) on 12
configurations (two backbones) that walk every branch of the fit -- the
activation cache with and without views, no cache, head-only epochs, early
stopping, BatchNorm modes, weights, drop path, L1, SGD, the linear-probe head
-- and hashes the fitted weights, the logits and the logits after ``save`` / ``load``.

Run ``python benchmarks/refactor_identity.py --record`` on the code before the
refactor (writes ``benchmarks/results/refactor_identity.json``), then
``python benchmarks/refactor_identity.py`` after it: it prints each
configuration as ``same`` or ``DIFFERENT`` and exits 1 on any difference.
Only two runs of one compute path are compared, on one machine: bit-identical
is the bar.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("SKTRANSFER_CPU_KIND", "avx512")  # no bf16 rule: fp32 steps
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench import RESULTS, Log, cpu_kind  # noqa: E402

import sktransfer  # noqa: E402
from sktransfer import FineTunedClassifier  # noqa: E402
from sktransfer._runtime import clear_caches  # noqa: E402

BASE = {
    "model": "timm/test_efficientnet",
    "weights": None,
    "input_size": 32,
    "max_epochs": 2,
    "batch_size": 8,
    "precision": "fp32",
    "random_state": 0,
}
CONFIGS = {
    "defaults (cache, 4 views)": {},
    "no augmentation": {"augment": None},
    "cache=False": {"cache": False},
    "train_layers=all": {"train_layers": "all"},
    "freeze_epochs=1": {"freeze_epochs": 1, "max_epochs": 3},
    "early stopping": {"early_stopping": True, "validation_fraction": 0.25},
    "bn=train": {"bn": "train"},
    "bn=adabn": {"bn": "adabn", "train_layers": 2},
    "linear head, lp init": {"head": "linear", "head_init": "lp"},
    "class_weight, label smoothing": {
        "class_weight": "balanced",
        "label_smoothing": 0.1,
    },
    "resnet, drop path, dropout": {
        "model": "timm/test_resnet",
        "drop_path": 0.2,
        "dropout": 0.3,
        "train_layers": "all",
    },
    "sgd, no scheduler, l1": {"optimizer": "sgd", "scheduler": None, "l1": 1e-4},
}


def bands(n=24, n_classes=3, size=32, seed=0):
    """Class k is a bright band on a noisy background (tests/conftest.bands)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.integers(0, 80, size=(n, size, size, 3), dtype=np.uint8)
    width = size // n_classes
    for k in range(n_classes):
        X[y == k, k * width : (k + 1) * width] += 170
    return X, y


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def run_one(params, X, y):
    clear_caches()
    weight = np.linspace(0.5, 1.5, len(y))
    clf = FineTunedClassifier(**{**BASE, **params}).fit(X, y, sample_weight=weight)
    state = clf.net_.module_.state_dict()
    weights = digest(*(state[k].detach().cpu().numpy() for k in sorted(state)))
    logits = clf.decision_function(X)
    with tempfile.TemporaryDirectory() as tmp:
        path = sktransfer.save(clf, Path(tmp) / "m.skt")
        clear_caches()
        loaded = sktransfer.load(path).decision_function(X)
    return {
        "weights": weights,
        "logits": digest(logits),
        "loaded logits": digest(loaded),
        "epochs": int(clf.n_epochs_),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", action="store_true", help="write the reference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    X, y = bands()
    log = Log()
    log.say(f"CPU: {cpu_kind()}; torch {torch.__version__}; fp32, 1 thread")
    results = {name: run_one(params, X, y) for name, params in CONFIGS.items()}
    ref_path = RESULTS / "refactor_identity.json"
    if args.record:
        ref_path.parent.mkdir(exist_ok=True)
        ref_path.write_text(json.dumps(results, indent=1) + "\n")
        for name, r in results.items():
            log.say(f"recorded  {name:32s} {r['weights']}")
        return 0
    reference = json.loads(ref_path.read_text())
    bad = 0
    for name, r in results.items():
        same = reference.get(name) == r
        bad += not same
        log.say(f"{'same' if same else 'DIFFERENT':9s} {name:32s} {r['weights']}")
        if not same:
            log.say(f"          reference {reference.get(name)}\n          now {r}")
    log.say(f"{len(results) - bad} of {len(results)} configurations bit-identical")
    log.save("refactor_identity.txt")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
