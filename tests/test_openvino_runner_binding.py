"""The OpenVINO runner binds its input once per array (no per-call copy), and never answers for stale data."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from workflow_scripts.backends.openvino_backend import OpenVINORunner  # noqa: E402


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
