"""LiteRT's C++ "Created TensorFlow Lite XNNPACK delegate for CPU" line (printed to fd 2 whenever an
interpreter applies its default delegate: every latency round and evaluation) is kept off the console,
while anything else written to fd 2 in the same block still gets through (issue 27)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from workflow_scripts.core.stderr_filter import stderr_filtered

pytest.importorskip("ai_edge_litert")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    model = tf.keras.Sequential([tf.keras.Input((4, 4, 3)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(2)])
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


RUNNER = """
import sys, numpy as np
from workflow_scripts.backends.litert import LiteRTRunner
runner = LiteRTRunner(sys.argv[1], threads=1)
assert runner.run(np.zeros((1, 4, 4, 3), dtype=np.float32)).shape == (1, 2)
"""
BARE = """
import sys
from ai_edge_litert.interpreter import Interpreter, OpResolverType
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1, experimental_op_resolver_type=OpResolverType.BUILTIN)
interpreter.allocate_tensors()
"""


def stderr_of(code: str, path) -> str:
    """Fresh processes: LiteRT prints the notice once per process."""
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_runner_prints_no_xnnpack_notice(tiny_tflite):
    assert "XNNPACK" not in stderr_of(RUNNER, tiny_tflite)


def test_a_bare_interpreter_does_print_it(tiny_tflite):
    """The notice is real (so the test above can fail): the interpreter the runner wraps prints it."""
    assert "Created TensorFlow Lite XNNPACK delegate for CPU" in stderr_of(BARE, tiny_tflite)


def test_other_lines_on_fd2_get_through(capfd):
    with stderr_filtered(("noise line",)):
        os.write(2, b"a noise line\nkeep me\n")
    assert capfd.readouterr().err == "keep me\n"
