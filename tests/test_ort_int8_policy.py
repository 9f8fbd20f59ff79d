"""ONNX Runtime INT8 settings that fit the CPU: VNNI/AMX/ARM dot-product detection and reduce_range."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.core.errors import ConfigError

# Flags lines of real CPUs (trimmed): an AMD EPYC Zen 2 (AVX2, no VNNI), an Intel Xeon Cascade Lake
# (AVX512-VNNI), an Alder Lake core (AVX-VNNI only), a Sapphire Rapids (AMX), a Graviton 2
# (Neoverse N1: asimddp) and a Cortex-A53 (no dot product).
EPYC_ZEN2 = "fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand avx2 bmi2 sha_ni"
CASCADE_LAKE = "fpu sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
ALDER_LAKE = "fpu sse2 avx avx2 fma avx_vnni sha_ni"
SAPPHIRE_RAPIDS = "fpu avx2 avx512f amx_bf16 amx_tile amx_int8 avx512_bf16"
GRAVITON2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
CORTEX_A53 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"


@pytest.mark.parametrize("flags, machine, reduce_range, dot", [
    (EPYC_ZEN2, "x86_64", True, "none"),
    (CASCADE_LAKE, "x86_64", False, "avx512_vnni"),
    (ALDER_LAKE, "AMD64", False, "avx_vnni"),
    (SAPPHIRE_RAPIDS, "x86_64", False, "amx_int8"),
    (GRAVITON2, "aarch64", False, "asimddp"),
    (CORTEX_A53, "aarch64", False, "none"),
    ("", "riscv64", False, "none"),
])
def test_policy_reduces_the_weight_range_only_on_x86_without_vnni(flags, machine, reduce_range, dot):
    policy = ort_backend.int8_cpu_policy(flags, machine)
    assert policy["reduce_range"] is reduce_range and policy["cpu_dot_product"] == dot
    assert (policy["activation_type"], policy["weight_type"]) == ("uint8", "int8")
    assert policy["policy"] == "auto" and policy["reason"]


def test_forced_policies_override_the_flags():
    assert ort_backend.int8_cpu_policy(CASCADE_LAKE, "x86_64", "no_vnni")["reduce_range"] is True
    assert ort_backend.int8_cpu_policy(EPYC_ZEN2, "x86_64", "vnni")["reduce_range"] is False
    with pytest.raises(ConfigError, match="int8_cpu_policy"):
        ort_backend.int8_cpu_policy(EPYC_ZEN2, "x86_64", "fast")


def test_reader_takes_the_flags_or_features_line(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {EPYC_ZEN2}\n\nprocessor\t: 1\nflags\t\t: x\n")
    arm = tmp_path / "arm"
    arm.write_text(f"processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: {GRAVITON2}\nCPU implementer\t: 0x41\n")
    assert ort_backend.read_cpu_flags(x86) == EPYC_ZEN2
    assert ort_backend.read_cpu_flags(arm) == GRAVITON2
    assert ort_backend.read_cpu_flags(tmp_path / "missing") == ""


def test_explicit_options_win_over_the_policy_and_bad_types_are_refused():
    resolve = ort_backend.resolve_int8_settings
    assert resolve({}, EPYC_ZEN2, "x86_64")["reduce_range"] is True
    assert resolve({"reduce_range": False}, EPYC_ZEN2, "x86_64")["reduce_range"] is False
    assert resolve({"int8_cpu_policy": "no_vnni"}, CASCADE_LAKE, "x86_64")["reduce_range"] is True
    assert resolve({"symmetric_activations": True}, CASCADE_LAKE, "x86_64")["activation_type"] == "int8"
    u8u8 = resolve({"weight_type": "uint8"}, EPYC_ZEN2, "x86_64")
    assert (u8u8["activation_type"], u8u8["weight_type"]) == ("uint8", "uint8")
    with pytest.raises(ConfigError, match="S8U8"):
        resolve({"activation_type": "int8", "weight_type": "uint8"}, EPYC_ZEN2, "x86_64")
    with pytest.raises(ConfigError, match="weight_type"):
        resolve({"weight_type": "int4"}, EPYC_ZEN2, "x86_64")


def _weight_ranges(path) -> tuple[int, int]:
    """Smallest and largest quantized value over the int8 weight initializers of a QDQ model."""
    model = onnx.load(str(path))
    values = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8
              and len(t.dims) >= 2]
    assert values, "no int8 weights"
    return min(int(v.min()) for v in values), max(int(v.max()) for v in values)


@pytest.mark.slow
def test_no_vnni_policy_builds_7_bit_weights_and_vnni_full_8_bit(tmp_path, onnx_path, digits_dir):
    from workflow_scripts.stages.engine import calibration_source

    ranges = {}
    for policy in ("vnni", "no_vnni"):
        out = tmp_path / f"{policy}.onnx"
        facts = ort_backend.build_engine(onnx_path, out, "int8", calibration_source(digits_dir, 32, 16, 0),
                                         {"method": "minmax", "int8_cpu_policy": policy}, None)
        assert facts["int8_reduce_range"] is (policy == "no_vnni") and facts["int8_cpu_policy"] == policy
        ranges[policy] = _weight_ranges(out)
    # Symmetric int8 weights: 7 bits is [-64, 63], 8 bits reaches -127/127 in every per-channel scale.
    assert -64 <= ranges["no_vnni"][0] and ranges["no_vnni"][1] <= 64
    assert ranges["vnni"][0] <= -100 or ranges["vnni"][1] >= 100
