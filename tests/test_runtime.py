"""Device and precision policy, on every outcome of the CPU kind detection.

Every machine runs every path: ``force_cpu_kind`` / ``force_cpu_bf16`` make this
CPU look like one of each kind, so a test never depends on the machine it
happens to run on.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY, assert_close_paths, assert_far_apart, bands, untrained

from sktransfer import CNNFeatureExtractor, FineTunedClassifier, _runtime
from sktransfer._runtime import (
    CPU_KINDS,
    MALLOC_SETTINGS,
    clear_caches,
    cpu_has_fast_bf16,
    cpu_kind,
    force_cpu_bf16,
    force_cpu_kind,
    named_lock,
    process_cache,
    resolve_device,
    resolve_policy,
    resolve_precision,
    seeded_global_rng,
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


@pytest.mark.parametrize("value", ["amx", "avx2"])
def test_cpu_kind_environment_variable_in_a_new_process(value):
    code = "from sktransfer._runtime import cpu_kind; print(cpu_kind())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"SKTRANSFER_CPU_KIND": value, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == value


def test_bad_cpu_kind_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="kind must be one of"):
        with force_cpu_kind("sse2"):
            pass
    monkeypatch.setenv("SKTRANSFER_CPU_KIND", "zen")
    with pytest.raises(ValueError, match="SKTRANSFER_CPU_KIND='zen'"):
        cpu_kind()


def test_force_cpu_bf16_maps_to_kinds():
    with force_cpu_bf16(True):
        assert cpu_kind() == "avx512_bf16"
    with force_cpu_kind("amx"), force_cpu_bf16(False):
        # the detected kind without bf16, whatever an outer forcing said
        assert cpu_kind() not in ("amx", "avx512_bf16")
        assert not cpu_has_fast_bf16()


@pytest.mark.parametrize("kind", CPU_KINDS)
def test_auto_rules_per_cpu_kind(kind):
    """ "auto" on each kind: codes and predictions fp32 everywhere; bf16 steps and
    channels_last only where they were measured faster and accuracy-neutral
    (avx512_bf16); AMX and every unmeasured kind train in fp32, NCHW."""
    with force_cpu_kind(kind):
        auto = resolve_policy("cpu", "auto")
        fp32 = resolve_policy("cpu", "fp32")
    measured = kind == "avx512_bf16"
    assert auto.cpu_kind == kind
    assert auto.autocast is None and auto.train_autocast is None
    assert auto.step_autocast == (torch.bfloat16 if measured else None)
    assert auto.channels_last is measured
    assert fp32.step_autocast is None  # "fp32" means fp32, whatever the CPU
    assert auto.engine == fp32.engine
    assert auto.report()["cpu_kind"] == kind


@BOTH
def test_auto_precision_is_fp32_on_every_cpu(fast_bf16):
    with force_cpu_bf16(fast_bf16):
        assert resolve_precision("auto", CPU) is None
        assert resolve_policy(CPU, "auto").train_autocast is None
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
def test_finetuned_classifier_bf16_and_auto_paths(fast_bf16):
    """ "auto" is fp32 except for a cached fit's training steps on a CPU kind with
    measured bf16 steps.

    Every fit runs under the same forcing, so the fp32 reference takes the same
    memory format as "auto" (channels_last follows the CPU kind). bf16-trained
    models drift from the fp32 one with every step, beyond the rounding
    tolerance (conftest.BF16), so they are held to a contrast instead: much
    closer to the fp32 model than the same fit that trained nothing.
    """
    X, y = bands(16)
    kw = {"model": TINY["model"], "weights": None, "input_size": 32}
    kw.update(max_epochs=1, batch_size=4, random_state=0)
    with force_cpu_bf16(fast_bf16), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "emulated" on the False side
        fits = {
            p: FineTunedClassifier(**kw, precision=p).fit(X, y)
            for p in ("auto", "fp32", "bf16")
        }
        logits = {p: clf.decision_function(X) for p, clf in fits.items()}
        still = untrained(fits["fp32"], X, y).decision_function(X)
    fp32 = logits["fp32"]
    assert ("bf16 training steps" in fits["auto"].policy_["precision"]) is fast_bf16
    assert_far_apart(still, fp32)
    untrained_gap = np.abs(still - fp32).max()
    if fast_bf16:  # on this machine (EPYC, forced): 0.06 vs an untrained gap of 0.94
        assert np.abs(logits["auto"] - fp32).max() < untrained_gap / 5
    else:
        assert_close_paths(logits["auto"], fp32)  # the fp32 path itself
    assert np.isfinite(logits["bf16"]).all()
    # bf16 everywhere: the same model up to bf16 drift (0.17), not an untrained one
    assert np.abs(logits["bf16"] - fp32).max() < untrained_gap / 3


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


def test_process_state_lives_in_the_registry_and_locks_survive_clearing():
    from sktransfer import _activations

    _activations.FORWARDS["probe"] += 3
    detected = _runtime.detected_cpu_kind()
    lock = named_lock(("test", 1))
    clear_caches()
    assert _activations.FORWARDS["probe"] == 0  # the counter is cleared too
    assert "kind" not in process_cache("cpu")  # detection read again next time
    assert _runtime.detected_cpu_kind() == detected
    assert named_lock(("test", 1)) is lock  # a lock is never dropped


@pytest.fixture
def fresh_malloc_state(monkeypatch):
    """keep_freed_memory as if never called, with a recording mallopt."""
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    _fresh_malloc(monkeypatch)
    monkeypatch.setattr(_runtime, "_glibc_mallopt", lambda: mallopt)
    return calls


def _fresh_malloc(monkeypatch):
    """keep_freed_memory's state as if never called (restored after the test)."""
    monkeypatch.delitem(process_cache("malloc"), "tuned", raising=False)


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
    _fresh_malloc(monkeypatch)
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
