"""ONNX Runtime's planning hooks (listed by its registry entry, :mod:`workflow_scripts.core.registry`). Light:
the backend package is imported only when something is left to resolve."""

from __future__ import annotations

NAME = "onnxruntime"


def plan_options(config: dict) -> None:
    """``onnxruntime.reduce_range: null`` resolved for the CPU that runs the jobs, in place, so it is part of
    every ONNX Runtime INT8 row's settings. (Planning for a device placed on other nodes, the job resolves
    it on its node and records the choice in its build row: int8_reduce_range.)"""
    if config[NAME]["reduce_range"] is None:
        from workflow_scripts.backends.onnxruntime import resolve_int8_settings

        config[NAME]["reduce_range"] = resolve_int8_settings(config[NAME])["reduce_range"]
