"""Device and precision policy, on both outcomes of the CPU bf16 detection.

Every machine runs both paths: ``force_cpu_bf16`` makes this CPU look like one
with AVX-512 bf16 / AMX and like one without, so a test never depends on the
machine it happens to run on.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY

from sktransfer import CNNFeatureExtractor, FineTunedClassifier
from sktransfer import _runtime
from sktransfer._runtime import (
    MALLOC_SETTINGS,
    clear_caches,
    cpu_has_fast_bf16,
    force_cpu_bf16,
    process_cache,
    resolve_device,
    resolve_precision,
    seeded_global_rng,
    training_autocast,
)

CPU = torch.device("cpu")
BOTH = pytest.mark.parametrize("fast_bf16", [True, False], ids=["bf16-cpu", "no-bf16"])


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 24, 24, 3), dtype=np.uint8)


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_force_switch_overrides_detection_and_restores_it():
    detected = cpu_has_fast_bf16()
    with force_cpu_bf16(True):
        assert cpu_has_fast_bf16() is True
        with force_cpu_bf16(False):
            assert cpu_has_fast_bf16() is False
        assert cpu_has_fast_bf16() is True
    assert cpu_has_fast_bf16() == detected


@pytest.mark.parametrize("value", ["1", "0"])
def test_environment_variable_forces_detection_in_a_new_process(value):
    code = (
        "from sktransfer._runtime import cpu_has_fast_bf16; print(cpu_has_fast_bf16())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"SKTRANSFER_CPU_BF16": value, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == str(value == "1")


@BOTH
def test_auto_precision_is_fp32_on_every_cpu(fast_bf16):
    with force_cpu_bf16(fast_bf16):
        assert resolve_precision("auto", CPU) is None
        assert training_autocast("auto", CPU) is None
        assert resolve_precision("fp32", CPU) is None


@BOTH
def test_explicit_bf16_is_honoured_and_warns_where_emulated(fast_bf16):
    with force_cpu_bf16(fast_bf16), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert resolve_precision("bf16", CPU) is torch.bfloat16
    emulated = [w for w in seen if "emulated" in str(w.message)]
    assert bool(emulated) is (not fast_bf16)


def test_bad_precision_and_device_are_clear_errors():
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", CPU)
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@BOTH
def test_extractor_auto_codes_equal_fp32_codes(fast_bf16, images):
    """precision='auto' never changes the codes, whatever the CPU."""
    with force_cpu_bf16(fast_bf16):
        auto = CNNFeatureExtractor(**TINY).fit_transform(images)
    fp32 = CNNFeatureExtractor(**TINY, precision="fp32").fit_transform(images)
    np.testing.assert_allclose(auto, fp32, rtol=1e-5, atol=1e-6)


@BOTH
def test_extractor_bf16_codes_are_close_to_fp32(fast_bf16, images):
    """The explicit bf16 path runs on any CPU; its codes carry bf16 rounding (a few
    percent relative L2 on a real net), so the tolerance is the bf16 one."""
    fp32 = CNNFeatureExtractor(**TINY, precision="fp32").fit_transform(images)
    with force_cpu_bf16(fast_bf16), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "emulated" on the False side
        bf16 = CNNFeatureExtractor(**TINY, precision="bf16").fit_transform(images)
    assert bf16.dtype == np.float32
    assert not np.array_equal(bf16, fp32)  # the bf16 path really ran
    assert _rel_l2(bf16, fp32) < 0.1


@BOTH
def test_finetuned_classifier_bf16_and_auto_paths(fast_bf16, images):
    y = np.arange(len(images)) % 2
    kw = {"model": TINY["model"], "weights": None, "input_size": 16}
    kw.update(max_epochs=1, batch_size=4, random_state=0)
    with force_cpu_bf16(fast_bf16):
        auto = FineTunedClassifier(**kw).fit(images, y).predict_proba(images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            clf = FineTunedClassifier(**kw, precision="bf16").fit(images, y)
            bf16 = clf.predict_proba(images)
    fp32 = FineTunedClassifier(**kw, precision="fp32").fit(images, y)
    # "auto" is fp32, except for the training steps of a cached fit on a CPU
    # with native bf16 (bf16 steps, depthwise convolutions fp32)
    tol = {"atol": 0.05} if fast_bf16 else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(auto, fp32.predict_proba(images), **tol)
    assert np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16.sum(1), 1, rtol=1e-5)
    assert np.abs(bf16 - auto).max() < 0.2  # same model up to bf16 rounding


def test_clear_caches_empties_every_registered_cache(images):
    from sktransfer import _engine

    cache = process_cache("test-runtime-probe")
    cache["x"] = 1
    ext = CNNFeatureExtractor(**TINY).fit(images)
    ext.transform(images[:2])  # shares its engine (and ONNX session) process-wide
    assert _engine._SHARED and _engine._SESSIONS
    clear_caches()
    assert cache == {} and not _engine._SHARED and not _engine._SESSIONS
    assert process_cache("test-runtime-probe") is cache  # same object, emptied


@pytest.fixture
def fresh_malloc_state(monkeypatch):
    """keep_freed_memory as if never called, with a recording mallopt."""
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    monkeypatch.setattr(_runtime, "_MALLOC_STATE", {"done": False, "tuned": False})
    monkeypatch.setattr(_runtime, "_glibc_mallopt", lambda: mallopt)
    return calls


def test_keep_freed_memory_sets_mallopt_once(fresh_malloc_state, monkeypatch):
    monkeypatch.delenv("SKTRANSFER_MALLOC", raising=False)
    assert _runtime.keep_freed_memory() is True
    assert fresh_malloc_state == list(MALLOC_SETTINGS)
    assert _runtime.keep_freed_memory() is True  # once per process
    assert len(fresh_malloc_state) == len(MALLOC_SETTINGS)


def test_keep_freed_memory_respects_the_opt_out(fresh_malloc_state, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_MALLOC", "system")
    assert _runtime.keep_freed_memory() is False
    assert fresh_malloc_state == []


def test_keep_freed_memory_without_glibc_does_nothing(monkeypatch):
    monkeypatch.setattr(_runtime, "_MALLOC_STATE", {"done": False, "tuned": False})
    monkeypatch.setattr(_runtime, "_glibc_mallopt", lambda: None)
    monkeypatch.delenv("SKTRANSFER_MALLOC", raising=False)
    assert _runtime.keep_freed_memory() is False


def test_real_mallopt_accepts_the_settings_where_glibc_is():
    mallopt = _runtime._glibc_mallopt()
    if mallopt is None:
        pytest.skip("not glibc")
    assert all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


def test_seeded_global_rng_draws_as_manual_seed_and_restores_the_stream():
    torch.manual_seed(123)
    expected_after = torch.rand(3)
    torch.manual_seed(7)
    reference = torch.rand(4)

    torch.manual_seed(123)
    with seeded_global_rng(7):
        drawn = torch.rand(4)
    assert torch.equal(drawn, reference)
    assert torch.equal(torch.rand(3), expected_after)  # caller's stream untouched
