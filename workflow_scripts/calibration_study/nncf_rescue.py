"""The comparison for ``int8-auto``: NNCF's ``quantize_with_accuracy_control`` on OpenVINO (CPU).

NNCF quantizes the model, measures the drop on a validation dataset, ranks its groups of quantizers
by how much reverting each one recovers (on ``ranking_subset_size`` validation items), then reverts
the most harmful groups to float one at a time, re-validating each time, until the drop is at most
``max_drop`` (nncf/quantization/algorithms/accuracy_control/algorithm.py).

Same inputs as ``int8-auto``: the same ONNX model (read by OpenVINO's ONNX frontend), the same
calibration images (the start variant's seeded train sample and count), the same validation images
(:class:`workflow_scripts.calibration_study.int8_auto.ValidationSet`), and the nearest collapsing configuration: the
start variant's per-tensor or per-channel weight scales
(``AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=...))``)
with the ``mixed`` preset (asymmetric activations, as the ``asym`` variants) or ``performance``
(symmetric). NNCF calibrates with its own min/max range estimators (it has no entropy calibrator) and
applies its default fast bias correction. The final engine is scored once on the test split.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from workflow_scripts.calibration_study.variants import NNCF_VARIANT

log = logging.getLogger(__name__)


class _Capture(logging.Handler):
    """Keeps NNCF's log messages (the reverted operations and drops are only reported there)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def parse_report(messages: list[str]) -> dict:
    """Reverted operations, quantized operations and drops from NNCF's accuracy-control log lines."""
    reverted, total, names = 0, None, []
    drops, metrics = [], {}
    for message in messages:
        match = re.match(r"(\d+) out of (\d+) were reverted back to the floating-point precision:(.*)", message, re.S)
        if match:
            reverted, total = int(match[1]), int(match[2])
            names = [line.strip().lstrip("-").strip() for line in match[3].splitlines() if line.strip()]
        match = re.match(r"Metric of (initial|quantized) model: (-?[0-9.eE+-]+)", message)
        if match:
            metrics[match[1]] = float(match[2])
        match = re.match(r"Total number of quantized operations in the model: (\d+)", message)
        if match:
            total = int(match[1])
        match = re.match(r"Accuracy drop(?: with the new quantization scope is)?:? ?(-?[0-9.eE+-]+)", message)
        if match:
            try:
                drops.append(float(match[1]))
            except ValueError:
                pass
    failed = any("could not achieve the required accuracy drop" in m for m in messages)
    return {"reached_target": (not failed) and bool(drops), "reverted_operations": reverted,
            "reverted_names": names, "quantized_operations": total,
            "logged_drops": drops, "val_top1_fp32": metrics.get("initial"),
            "val_top1_quantized": metrics.get("quantized"),
            "quantized_val_drop_points": (100.0 * (metrics["initial"] - metrics["quantized"])
                                          if {"initial", "quantized"} <= set(metrics) else None)}


def run_nncf_rescue(onnx_path: str | Path, data_dir: str | Path, start_variant: str, calibration_batch_size: int,
                    max_drop_points: float, preset: str, ranking_subset_size: int, val_images: int, seed: int,
                    engine_path: str | Path, record_json: str | Path, bias_correction: bool = True) -> dict:
    """Run NNCF's accuracy control with the start variant's weight granularity; save the IR and a record.

    ``bias_correction`` false disables NNCF's (fast) bias correction, which ONNX Runtime's quantizer
    does not have, for the closest like-for-like collapse."""
    import openvino as ov

    from workflow_scripts.core.artifacts import write_text
    from workflow_scripts.backends import openvino as ovb
    from workflow_scripts.calibration_study.variants import parse_variant
    from workflow_scripts.stages.engine import calibration_source
    from workflow_scripts.calibration_study.int8_auto import ValidationSet

    variant = parse_variant(start_variant)
    engine_path = Path(engine_path)
    if engine_path.suffix != ".xml":
        raise ValueError(f"the NNCF engine is an OpenVINO IR .xml; got {engine_path}")
    validation = ValidationSet(data_dir, val_images, seed)
    calibration = calibration_source(data_dir, variant.num_images, calibration_batch_size, seed)
    calibration_items = [image[None] for batch in calibration() for image in batch]
    validation_items = [(image[None], int(label)) for images, labels in validation.batches(256)
                        for image, label in zip(images, labels)]

    def validate(compiled_model, items) -> tuple[float, list[float]]:
        # Per-item top-1 (NNCF selects its ranking subset by item); one infer request reused.
        request = compiled_model.create_infer_request()
        values = []
        for image, label in items:
            request.infer({0: image})
            scores = request.get_output_tensor(0).data
            values.append(float(np.argmax(scores[0]) == label and np.isfinite(scores).all()))
        return float(np.mean(values)) if values else 0.0, values

    capture = _Capture()
    nncf_logger = logging.getLogger("nncf")
    with ovb._telemetry_off():
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedAccuracyRestorerParameters,
            AdvancedQuantizationParameters,
            QuantizationParameters,
        )

        model = ov.Core().read_model(str(onnx_path))
        presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
        advanced = AdvancedQuantizationParameters(
            weights_quantization_params=QuantizationParameters(per_channel=variant.per_channel),
            disable_bias_correction=not bias_correction)
        nncf_logger.addHandler(capture)
        level = nncf_logger.level
        nncf_logger.setLevel(logging.INFO)
        started = time.perf_counter()
        try:
            quantized = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(calibration_items), nncf.Dataset(validation_items), validate,
                max_drop=max_drop_points / 100.0, drop_type=nncf.DropType.ABSOLUTE, preset=presets[preset],
                target_device=nncf.TargetDevice.CPU, subset_size=len(calibration_items),
                advanced_quantization_parameters=advanced,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    ranking_subset_size=min(ranking_subset_size, len(validation_items))))
        finally:
            nncf_logger.removeHandler(capture)
            nncf_logger.setLevel(level)
        search_s = time.perf_counter() - started
    quantized.set_rt_info("int8", ovb.PRECISION_KEY)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".tmp-ir-", dir=engine_path.parent) as tmp:
        tmp_xml = Path(tmp) / "model.xml"
        ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
        ovb.publish_engine(tmp_xml, engine_path)
    report = parse_report(capture.messages)
    kinds = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    report["reverted_types"] = [kinds.get(name, kinds.get(name.split("/")[0], "")) for name in report["reverted_names"]]
    fq = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    record = {"variant": NNCF_VARIANT, "start_variant": variant.id, "per_channel_weights": variant.per_channel,
              "preset": preset, "bias_correction": bias_correction, "max_drop_points": max_drop_points,
              "ranking_subset_size": ranking_subset_size,
              "calibration_images": len(calibration_items), "val_images": len(validation_items), "val_split": "val",
              "search_s": search_s, "float_nodes": report["reverted_operations"], "fake_quantize_nodes": fq,
              "nncf_version": ovb.nncf_version(), "openvino_version": ovb.version(), **report}
    write_text(json.dumps(record, indent=2), record_json)
    log.info("NNCF accuracy control: %d of %s operations reverted to float in %.1f s", report["reverted_operations"],
             report["quantized_operations"], search_s)
    return record
