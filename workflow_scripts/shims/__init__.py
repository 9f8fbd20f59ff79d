"""Thin Snakemake entry points: open the job's log, call one function with plain arguments."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Callable

from workflow_scripts.core.stderr_filter import stderr_filtered

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Library messages that say nothing about this run: kept in the job's log file, left off the console
# (issue 27). Each: (logger name, text it contains, the one line the console gets instead, or '' for none).
CONSOLE_ONCE = (
    # onnxconverter-common's float16 conversion warns once per float32 weight below float16's smallest
    # normal number (about 6e-5) that it clamps to +-1e-7; weights that small do not move the outputs
    # (the FP16 engines' accuracy is measured).
    ("py.warnings", "will be truncated to",
     "FP16 conversion (onnxconverter-common): float32 values too small for float16 are clamped to +-1e-07, "
     "one warning per value; harmless at these magnitudes, every value is listed in this job's log file"),
    # The NVML probe of the resource monitor: on a machine without an NVIDIA GPU it fails in every job; the
    # Snakefile's onstart says so once per run (gpu_notice below).
    ("workflow_scripts.measure.gpu_monitor", "NVML unavailable", ""),
    ("workflow_scripts.measure.gpu_monitor", "pynvml) is not installed", ""),
)


class ConsoleFilter(logging.Filter):
    """The console's filter: records logged with ``extra={"console": False}`` (per-round detail) and the
    library messages of :data:`CONSOLE_ONCE` stay in the job's log file only; the first of each kind puts its
    one explanatory line on the console instead."""

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.handler = handler
        self.said: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        for index, (name, text, once) in enumerate(CONSOLE_ONCE):
            if record.name == name and text in str(record.msg) + str(record.args):
                if once and index not in self.said:
                    self.said.add(index)
                    note = logging.LogRecord(record.name, logging.INFO, record.pathname, record.lineno, once, None,
                                             None)
                    note.created, note.msecs = record.created, record.msecs
                    self.handler.emit(note)
                return False
        return True


# TensorFlow's C++ start-up lines that no setting turns off (TF 2.21 prints them during `import tensorflow`
# whatever TF_CPP_MIN_LOG_LEVEL says; TF_ENABLE_ONEDNN_OPTS=0 would silence the second by changing the
# numerics): absl's notice that it logs to stderr before its initialization, and oneDNN's notice that
# its custom operations are on (they are, as in every TensorFlow run on x86). Left out of the console;
# every other line TensorFlow writes while importing is passed on.
C_STDERR_NOISE = ("All log messages before absl::InitializeLog() is called are written to STDERR",
                  "oneDNN custom operations are on")


class _QuietImport:
    """A meta-path finder that imports ``tensorflow`` with file descriptor 2 sent to a temporary file, then
    writes what it caught back to stderr less the :data:`C_STDERR_NOISE` lines."""

    names = ("tensorflow",)

    def __init__(self):
        self.busy = False

    def find_spec(self, name, path=None, target=None):
        if name not in self.names or self.busy:
            return None
        import importlib.util

        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader

        class Quiet:
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                with stderr_filtered(C_STDERR_NOISE):
                    loader.exec_module(module)

        spec.loader = Quiet()
        return spec


def quiet_tensorflow_import() -> None:
    """Install :class:`_QuietImport` once (before anything imports TensorFlow)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


quiet_tensorflow_import()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A captured Python warning as one line (the default adds the warning's source line and a blank one)."""
    return f"{category.__name__}: {message} ({filename}:{lineno})"


def setup_logging(log_path: str | None) -> logging.Logger:
    """Log to the job's log file and to stderr (so progress shows in the terminal); the console leaves out
    what :class:`ConsoleFilter` keeps for the file."""
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(ConsoleFilter(console))
    handlers: list[logging.Handler] = [console]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.formatwarning = _one_line_warning
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # TensorFlow's TFLite converter asks for the legacy quantization-aware input statistics
    # (quantized_input_stats) whenever the inference type is INT8; our full-integer post-training
    # quantization takes every range, inputs included, from the representative dataset (the
    # calibration images), so the warning never applies here.
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)
    return logging.getLogger("edgeptq")


def gpu_notice() -> str:
    """One line for the start of a run on a machine where NVML cannot be used (no NVIDIA driver or GPU,
    or nvidia-ml-py not installed); '' where it can. The jobs' monitors then record no GPU metrics and
    say so only in their log files (:data:`CONSOLE_ONCE`)."""
    try:
        import pynvml
    except ImportError:
        return "GPU metrics: nvidia-ml-py is not installed, so no GPU utilization or NVML energy is recorded."
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 (NVMLError: no driver, no GPU)
        return f"GPU metrics: NVML unavailable here ({exc}); GPU columns stay empty (CPU-only machine)."
    return ""


def run(snakemake, job: Callable[[], object]) -> None:
    """Run ``job`` with logging set up; a known error is logged as one clear line and exits 1."""
    from workflow_scripts.core.errors import EdgePTQError

    log = setup_logging(snakemake.log[0] if snakemake.log else None)
    remove_stale_scratch(list(snakemake.output))
    try:
        check_device_of(snakemake)
        job()
    except (EdgePTQError, PermissionError) as exc:
        log.error("%s", exc)
        sys.exit(1)
    except Exception:
        log.exception("unexpected failure; the traceback follows")
        raise


def check_device_of(snakemake) -> dict:
    """A measuring job refuses to run on another device than its outputs are filed under (config key
    placement.verify_device), and a device job whose backend cannot run here says so, naming the node;
    returns the scheduler's facts of this job."""
    from workflow_scripts.core.device import detect_device_tag
    from workflow_scripts.fleet.placement import check_backend_here, check_job_device, rule_stage
    from workflow_scripts.core.registry import backend as backend_entry

    verify = (snakemake.config.get("placement") or {}).get("verify_device", "auto")
    facts = check_job_device(snakemake.rule, getattr(snakemake.wildcards, "device", None), verify, os.environ,
                             lambda: detect_device_tag("auto"))
    # The backend is checked here, on the job's node, when planning could not (a login node).
    name = getattr(snakemake.wildcards, "backend", None)
    if name and name != "onnx" and rule_stage(snakemake.rule) == "device":
        check_backend_here(name, backend_entry(name).available(), facts)
    return facts


def remove_stale_scratch(outputs: list[str]) -> None:
    """Delete ``.tmp-*`` scratch files of this job's outputs left by a killed earlier attempt.

    ``workflow_scripts.core.artifacts.scratch_path`` names them ``.tmp-<random>-<output name>`` beside
    the output; only this job writes those outputs, so no running job can own them.
    """
    from pathlib import Path

    for output in outputs:
        path = Path(output)
        if path.parent.is_dir():
            for stale in path.parent.glob(f".tmp-*-{path.name}"):
                # The random middle part never holds '-': '.tmp-x-a-b' is not a scratch file of 'b'.
                if stale.is_file() and "-" not in stale.name[len(".tmp-"):-len(path.name) - 1]:
                    stale.unlink(missing_ok=True)


def row_settings(snakemake) -> dict:
    """The settings this job's rows record (:func:`workflow_scripts.core.provenance.row_settings`)."""
    from workflow_scripts.core.provenance import row_settings as settings_of

    return settings_of(getattr(snakemake.params, "settings", {}), getattr(snakemake, "rule", ""),
                       getattr(snakemake, "threads", None))


def provenance_of(snakemake, **extra) -> dict:
    """Provenance columns for this job (:func:`workflow_scripts.core.provenance.job_provenance`, which the
    on-device runner calls too): params' device/backend, the hash of the whole config, and the settings
    that determine what this job's rows measure (``settings``, ``settings_hash``)."""
    from workflow_scripts.core.provenance import job_provenance

    return job_provenance(snakemake.config, getattr(snakemake, "rule", ""), getattr(snakemake, "threads", None),
                          getattr(snakemake.params, "provenance", {}), getattr(snakemake.params, "settings", {}),
                          **extra)
