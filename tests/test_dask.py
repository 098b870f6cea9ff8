"""Running on a dask.distributed cluster gives the same results as a local run."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, assert_close_paths, assert_same_path
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline

from sktransfer import CNNFeatureExtractor, load_backbone

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

# The workers run torch with one thread (test_workers_run_torch_with_one_thread);
# so does this process: the same kernels, so the same codes bit for bit.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    # A fixed weights file, so every worker process builds the same network
    # (weights=None would draw new random weights in each process).
    torch.manual_seed(0)
    net, _ = load_backbone(TINY_MODEL, None)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(net.state_dict(), path)
    return str(path)


def _pipe(weights):
    return make_pipeline(
        # engine="torch": ONNX export is not under test and costs each worker seconds
        CNNFeatureExtractor(
            model=TINY_MODEL, weights=weights, input_size=32, engine="torch"
        ),
        LogisticRegression(max_iter=300),
    )


def test_grid_search_and_cross_validate_match_local(client, weights_file, fmnist_small):
    X, y = fmnist_small[0][:40], fmnist_small[1][:40]
    grid = {
        "logisticregression__C": [0.1, 10.0],
        "cnnfeatureextractor__pooling": ["avg"],
    }
    cv = KFold(2, shuffle=True, random_state=0)

    local = GridSearchCV(_pipe(weights_file), grid, cv=cv).fit(X, y)
    local_cv = cross_validate(_pipe(weights_file), X, y, cv=cv)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(_pipe(weights_file), grid, cv=cv, n_jobs=-1).fit(X, y)
        remote_cv = cross_validate(_pipe(weights_file), X, y, cv=cv, n_jobs=-1)

    # one thread here and there, the same batches: one path, exact
    assert_same_path(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert remote.best_params_ == local.best_params_
    assert_same_path(remote_cv["test_score"], local_cv["test_score"])
    # both refits ran in this process
    assert_same_path(remote.predict_proba(X[:10]), local.predict_proba(X[:10]))
    # the work really ran in the worker processes
    assert len(client.scheduler_info()["workers"]) == 2


def test_extractor_over_dask_array_map_blocks(client, weights_file, fmnist_small):
    X = fmnist_small[0][:40]
    ext = CNNFeatureExtractor(
        model=TINY_MODEL, weights=weights_file, input_size=32, engine="torch"
    )
    ext.fit(X[:2])
    # named backbones pickle without their weights: each block carries a few KB
    assert len(pickle.dumps(ext)) < 20_000
    ref = ext.transform(X)
    dX = da.from_array(X, chunks=(10, -1, -1))
    codes = dX.map_blocks(
        ext.transform,
        dtype=np.float32,
        drop_axis=2,
        chunks=(dX.chunks[0], (ext.n_features_out_,)),
    )
    got = codes.compute()
    assert_close_paths(got, ref)  # blocks of 10, not batches of 32: other kernels


def test_workers_run_torch_with_one_thread(client):
    # dask sets OMP_NUM_THREADS=1 in worker processes (distributed.nanny.
    # pre-spawn-environ), which torch honours: 2 workers never run 2 x all cores.
    def threads():
        import torch

        return torch.get_num_threads()

    got = client.run(threads)
    assert set(got.values()) == {1}
