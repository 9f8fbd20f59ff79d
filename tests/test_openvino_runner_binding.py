"""The OpenVINO runner binds its input once per array (no per-call copy), and never answers for stale data."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from workflow_scripts.backends.openvino import OpenVINORunner


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory):
    """An IR computing per-image sums of an NHWC input times 2 over a dynamic batch (no training needed)."""
    from openvino import opset13 as ops

    x = ops.parameter([-1, 4, 4, 3], np.float32, name="images")
    doubled = ops.multiply(x, ops.constant(np.float32(2.0)))
    out = ops.reduce_sum(doubled, ops.constant(np.array([1, 2], dtype=np.int64)), keep_dims=False)
    path = tmp_path_factory.mktemp("ir") / "tiny.xml"
    ov.save_model(ov.Model([out], [x], "tiny"), str(path))
    return path


def expected(batch: np.ndarray) -> np.ndarray:
    return 2.0 * np.asarray(batch, dtype=np.float64).sum(axis=(1, 2))


def test_the_same_array_changed_in_place_is_read_afresh(tiny_ir):
    runner = OpenVINORunner(tiny_ir, threads=1)
    batch = np.ones((2, 4, 4, 3), dtype=np.float32)
    np.testing.assert_allclose(runner.run(batch), expected(batch), rtol=1e-6)
    batch[1] = 3.0
    np.testing.assert_allclose(runner.run(batch), expected(batch), rtol=1e-6)


def test_a_converted_array_is_bound_again_every_call(tiny_ir):
    """A float64 batch is copied to float32 to bind it; changing the caller's array must still count."""
    runner = OpenVINORunner(tiny_ir, threads=1)
    batch = np.ones((1, 4, 4, 3), dtype=np.float64)
    np.testing.assert_allclose(runner.run(batch), expected(batch), rtol=1e-6)
    batch[0, 0, 0, 0] = 100.0
    np.testing.assert_allclose(runner.run(batch), expected(batch), rtol=1e-6)


def test_another_array_and_another_batch_size(tiny_ir):
    runner = OpenVINORunner(tiny_ir, threads=1)
    first = np.full((1, 4, 4, 3), 1.0, dtype=np.float32)
    second = np.full((1, 4, 4, 3), 5.0, dtype=np.float32)
    third = np.arange(3 * 48, dtype=np.float32).reshape(3, 4, 4, 3)
    for batch in (first, second, first, third, second):
        np.testing.assert_allclose(runner.run(batch), expected(batch), rtol=1e-6)
    runner.close()


def test_the_result_is_the_callers_copy(tiny_ir):
    runner = OpenVINORunner(tiny_ir, threads=1)
    batch = np.ones((1, 4, 4, 3), dtype=np.float32)
    first = runner.run(batch)
    batch *= 2
    runner.run(batch)
    np.testing.assert_allclose(first, expected(np.ones((1, 4, 4, 3))), rtol=1e-6)


# --- the runtime's own timer (issue 29: no harness tax against benchmark_app) ---------------------------


def test_latency_is_the_runtimes_own_time_and_the_wall_time_is_kept(tiny_ir):
    """Each task's latency is InferRequest.latency (what benchmark_app reports), never more than the wall
    time around run(); the wall time is reported beside it (latency_clock 'runtime', wall_*)."""
    from types import SimpleNamespace

    from workflow_scripts.stages.latency import measure, measure_round

    runner = OpenVINORunner(tiny_ir, threads=1)
    batch = np.ones((1, 4, 4, 3), dtype=np.float32)
    wall: list = []
    samples = measure(runner.run, batch, warmup=2, iterations=50, min_duration_s=0,
                      runtime_timer=runner.runtime_latency_s, wall=wall)
    runner.close()
    assert len(samples) == len(wall) == 50
    assert np.all(samples > 0) and np.all(samples <= np.asarray(wall))

    module = SimpleNamespace(load_runner=lambda path, threads: OpenVINORunner(path, threads))
    timing: dict = {}
    samples, _, _ = measure_round(module, tiny_ir, 1, batch, warmup=2, iterations=50, min_duration_s=0,
                                  timing=timing)
    assert timing["latency_clock"] == "runtime"
    assert timing["wall_median_ms"] >= float(np.median(samples)) * 1e3


def test_a_runner_without_a_runtime_timer_is_timed_by_the_wall_clock():
    from types import SimpleNamespace

    from workflow_scripts.stages.latency import measure_round

    class Plain:
        def run(self, batch):
            return batch

        def close(self):
            pass

    timing: dict = {}
    samples, _, _ = measure_round(SimpleNamespace(load_runner=lambda path, threads: Plain()), "x", 1,
                                  np.zeros((1, 2)), warmup=0, iterations=20, min_duration_s=0, timing=timing)
    assert timing["latency_clock"] == "wall"
    assert timing["wall_median_ms"] == pytest.approx(float(np.median(samples)) * 1e3)


def test_the_runoff_ranks_every_backend_on_the_wall_clock(tiny_ir):
    """The runoff compares backends with each other, and only OpenVINO has a per-call timer of its own:
    asked for the wall clock, measure_round returns the wall time around run() for OpenVINO too, so an
    OpenVINO candidate is not spared the Python call that ONNX Runtime's and LiteRT's candidates pay."""
    from types import SimpleNamespace

    from workflow_scripts.stages.latency import WALL_CLOCK, measure_round

    module = SimpleNamespace(load_runner=lambda path, threads: OpenVINORunner(path, threads))
    batch = np.ones((1, 4, 4, 3), dtype=np.float32)
    timing: dict = {}
    samples, _, _ = measure_round(module, tiny_ir, 1, batch, warmup=2, iterations=50, min_duration_s=0,
                                  timing=timing, clock=WALL_CLOCK)
    assert timing["latency_clock"] == "wall"
    assert timing["wall_median_ms"] == pytest.approx(float(np.median(samples)) * 1e3)


def test_the_runoffs_openvino_rows_are_wall_timed(tiny_ir, tmp_path):
    """run_runoff itself, on a real OpenVINO IR: its rows say latency_clock 'wall', and their latency is the
    wall time around run() (the same as wall_median_ms), not InferRequest.latency."""
    import json

    from workflow_scripts.stages.runoff import run_runoff

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.save(data / "test_images.npy", rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8))
    np.save(data / "test_labels.npy", np.zeros(4, dtype=np.int64))
    (data / "meta.json").write_text(json.dumps({"dataset": "digits", "num_classes": 3, "input_size": 4}))
    rows = run_runoff([{"backend": "openvino", "precision": "fp32", "path": str(tiny_ir)}], data, batch_size=1,
                      threads=1, rounds=2, warmup=2, min_duration_s=0.0, max_duration_s=10.0,
                      out_path=tmp_path / "runoff.parquet",
                      labels={"dataset": "digits", "model": "tiny", "input_size": 4},
                      provenance={"device": "test", "backend": "runoff"})
    assert list(rows["latency_clock"]) == ["wall", "wall"]
    assert np.allclose(rows["latency_median_ms"], rows["wall_median_ms"])


def test_compile_cache_keeps_compiled_models_between_loads_and_only_inside(tiny_ir, tmp_path):
    """Inside compile_cache a runner's first run writes the compiled model to the folder and a fresh runner of the
    same IR answers the same; outside, nothing is cached. The runoff sets it up per job (and removes it)."""
    from workflow_scripts.backends import openvino as backend

    batch = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    with backend.compile_cache(tmp_path / "cache"):
        first = OpenVINORunner(tiny_ir, 1)
        out1 = first.run(batch)
        first.close()
        cached = list((tmp_path / "cache").iterdir())
        assert cached, "no compiled model was cached"
        second = OpenVINORunner(tiny_ir, 1)
        assert np.allclose(second.run(batch), out1) and np.allclose(out1, expected(batch))
        second.close()
    assert backend._CACHE_DIR is None
    runner = OpenVINORunner(tiny_ir, 1)
    runner.run(batch)
    runner.close()
    # Outside: the runner's core has no cache folder, and the job's folder gained nothing.
    assert runner.core.get_property("CACHE_DIR") == "" and sorted((tmp_path / "cache").iterdir()) == sorted(cached)
