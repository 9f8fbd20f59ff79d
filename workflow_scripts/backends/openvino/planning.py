"""OpenVINO's planning hooks (listed by its registry entry, :mod:`workflow_scripts.core.registry`). Light."""

from __future__ import annotations


def hardware_support(precision: str) -> tuple[bool, str]:
    """bf16 engines need a CPU with avx512_bf16 or amx_bf16."""
    from workflow_scripts.core.device import cpu_bf16_support

    ok, why = cpu_bf16_support()
    return (True, "") if ok else (False, f"backend 'openvino' cannot run {precision} here: {why}")
