"""The INT8 calibration study: variant ids, the dry-run plan, real variant builds, sensitivity, int8-auto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.calibration_study.study import Variant, check_num_images, expand_variants, paired_drop, parse_variant, prepare_model, resolve_exclusions, split_correctness, variant_options
from workflow_scripts.stages.engine import calibration_source
from workflow_scripts.core.errors import ConfigError
from workflow_scripts.calibration_study.sensitivity import layer_sensitivity, ranked_groups
from tests.cli import REPO, job_counts


# --- variant ids -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant_id, expected", [
    ("entropy-n256-pc-asym-none", Variant("entropy", 256, True, False, ())),
    ("minmax-n8-pt-sym-none", Variant("minmax", 8, False, True, ())),
    ("percentile99.999-n64-pc-asym-swish+classifier",
     Variant("percentile", 64, True, False, ("swish", "classifier"), 99.999)),
    ("percentile100-n1024-pt-asym-op.Concat", Variant("percentile", 1024, False, False, ("op.Concat",), 100.0)),
    ("entropy-n256-pc-asym-squeeze_excite+first_conv",
     Variant("entropy", 256, True, False, ("squeeze_excite", "first_conv"))),
])
def test_variant_ids_parse_and_format_round_trip(variant_id, expected):
    assert parse_variant(variant_id) == expected
    assert expected.id == variant_id
    labels = expected.labels()
    assert labels["variant"] == variant_id and labels["num_images"] == expected.num_images
    assert labels["per_channel"] is expected.per_channel and labels["symmetric_activations"] is expected.symmetric


@pytest.mark.parametrize("bad", [
    "entropy-256-pc-asym-none",          # no n
    "kl-n256-pc-asym-none",              # unknown method
    "percentile-n256-pc-asym-none",      # percentile without its value
    "percentile80-n256-pc-asym-none",    # percentile below 90
    "entropy-n256-pc-asym-gelu",         # unknown preset
    "entropy-n256-pc-asym-swish+swish",  # repeated preset
    "entropy-n256-pc-asym-none+swish",   # none combined
    "percentile99.990-n64-pc-asym-none",  # not canonical
    "entropy-n0-pc-asym-none",           # no images
])
def test_malformed_variant_ids_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        parse_variant(bad)


def test_axes_expand_to_their_product_plus_extra_variants_without_repeats():
    study = {"methods": ["entropy", "percentile"], "percentiles": [99.9, 99.999], "num_images": [64, 256],
             "per_channel": [True, False], "symmetric_activations": [False], "exclude": ["none", "swish"],
             "variants": ["minmax-n8-pt-asym-none", "entropy-n64-pc-asym-none"],
             "baseline": "entropy-n256-pc-asym-none"}
    ids = expand_variants(study)
    assert len(ids) == 3 * 2 * 2 * 1 * 2 + 1 == len(set(ids))
    assert "percentile99.9-n256-pt-asym-swish" in ids and ids[-1] == "minmax-n8-pt-asym-none"
    assert all(parse_variant(i).id == i for i in ids)


def test_more_calibration_images_than_the_train_split_is_a_clear_error():
    check_num_images(parse_variant("entropy-n1257-pc-asym-none"), 1257)
    with pytest.raises(ConfigError, match=r"calibration_study.num_images.*at most 1257"):
        check_num_images(parse_variant("entropy-n2048-pc-asym-none"), 1257)


def test_paired_drop_is_in_points_with_a_paired_interval():
    fp32 = np.array([1.0] * 90 + [0.0] * 10)
    same = paired_drop(fp32, fp32)
    assert same == (0.0, 0.0, 0.0)
    worse = fp32.copy()
    worse[:5] = 0.0
    drop, low, high = paired_drop(fp32, worse, seed=0)
    assert drop == pytest.approx(5.0) and 0.0 <= low <= drop <= high


# --- the dry-run plan: adding an axis value reruns only the INT8 builds it affects ---------------------

STUDY_CONFIG = {
    "models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32", "fp16", "int8"],
    "backends": ["onnxruntime"], "weights": "none", "input_size": 32,
    "calibration_study": {"enabled": True, "methods": ["entropy"], "num_images": [64]},
}


def _snakemake(workdir: Path, config: dict, *args: str) -> str:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_adding_an_axis_value_plans_only_the_builds_it_affects(tmp_path):
    # Mark a whole finished study as done without running it: create every output, then --touch
    # stamps them in DAG order (and records their metadata).
    summary = _snakemake(tmp_path, STUDY_CONFIG, "--summary")
    for line in summary.splitlines()[1:]:
        name = line.split("\t")[0]
        if name.startswith("results/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).touch()
    _snakemake(tmp_path, STUDY_CONFIG, "--touch")
    assert "Nothing to be done" in _snakemake(tmp_path, STUDY_CONFIG, "-n")

    more_sizes = {**STUDY_CONFIG, "calibration_study": {**STUDY_CONFIG["calibration_study"], "num_images": [64, 128]}}
    plan = job_counts(_snakemake(tmp_path, more_sizes, "-n"))
    # A new image set: its statistics (calibrated once) and the one variant reading them.
    assert plan == {"calibration_statistics": 1, "build_calibration_variant": 1, "evaluate_calibration_variant": 1,
                    "benchmark_calibration_variant": 1, "calibration_study_summary": 1, "all": 1}, plan
    assert "calibration/entropy-n128-pc-asym-none.onnx" in _snakemake(tmp_path, more_sizes, "-n")

    weights = {**STUDY_CONFIG, "calibration_study": {**STUDY_CONFIG["calibration_study"], "per_channel": [True, False]}}
    plan = job_counts(_snakemake(tmp_path, weights, "-n"))
    assert plan["build_calibration_variant"] == 1, plan
    assert not any(rule.startswith(("build_engine", "build_int8_engine")) for rule in plan), plan
    # Same images: the per-tensor variant reuses the n64 statistics and the pre-processed model.
    assert "calibration_statistics" not in plan and "calibration_prepare" not in plan, plan


@pytest.mark.slow  # fresh processes / the real snakemake CLI
def test_disabled_study_adds_nothing_to_the_default_plan(tmp_path):
    config = {**STUDY_CONFIG, "calibration_study": {"enabled": False}}
    plan = job_counts(_snakemake(tmp_path, config, "-n"))
    assert not any("calibration" in rule for rule in plan), plan


# --- real builds on the session's trained MobileNetV3Small -----------------------------------------

def _default_and_poor(out: Path, onnx_path, digits_dir, cpu_policy: str = "auto"):
    """The default variant, a deliberately poor one and FP32 correctness on the test split."""
    fp32 = split_correctness(ort_backend.load_runner(onnx_path), digits_dir, "test", 64)
    built = {}
    for variant_id in ("entropy-n256-pc-asym-none", "minmax-n8-pt-asym-none"):
        variant = parse_variant(variant_id)
        path = out / f"{variant_id}.onnx"
        options = {**variant_options(variant, [], [], 16), "int8_cpu_policy": cpu_policy}
        ort_backend.build_engine(onnx_path, path, "int8", calibration_source(digits_dir, variant.num_images, 16, 0),
                                 options, None)
        built[variant_id] = path
    return out, fp32, built


@pytest.fixture(scope="module")
def study_engines(tmp_path_factory, onnx_path, digits_dir):
    """The default variant, a deliberately poor one and FP32 correctness, with this CPU's INT8 settings."""
    return _default_and_poor(tmp_path_factory.mktemp("study"), onnx_path, digits_dir)


@pytest.fixture(scope="module", params=["vnni", "no_vnni"])
def policy_engines(request, tmp_path_factory, onnx_path, digits_dir):
    """The same two variants built with the INT8 settings of a CPU with VNNI, then of one without (reduce_range)."""
    return _default_and_poor(tmp_path_factory.mktemp(f"study-{request.param}"), onnx_path, digits_dir, request.param)


def _scores(path, data_dir) -> np.ndarray:
    from workflow_scripts.data.data_io import iter_batches

    runner = ort_backend.load_runner(path)
    return np.concatenate([runner.run(images) for images, _ in iter_batches(data_dir, "test", 128)])


def test_poor_calibration_is_further_from_fp32_than_the_default(policy_engines, onnx_path, digits_dir):
    """Per-tensor weights, min-max, 8 images versus the default (entropy, 256, per-channel).

    On these small digits models the top-1 drop of both is within an image or two of each other
    (270 test images: one image is 0.37 point), so top-1 alone cannot separate them: the issue's
    "larger top-1 drop" is not shown here (docs/calibration.md measures six models); on pretrained
    EfficientNet-Lite0 it is, and tests/test_calibration_pretrained.py asserts it on top-1. What is
    asserted is that the class scores' SQNR against FP32 is lower for the poor setting, and that its
    top-1 is not better than the default's by more than one image. It must hold with either CPU
    policy: full 8-bit weights (VNNI) and 7-bit ``reduce_range`` weights (x86 without VNNI).
    """
    _, fp32, built = policy_engines
    reference = _scores(onnx_path, digits_dir)
    drops, sqnr = {}, {}
    for variant_id, path in built.items():
        correct = split_correctness(ort_backend.load_runner(path), digits_dir, "test", 64)
        drops[variant_id] = paired_drop(fp32, correct)[0]
        noise = ((reference - _scores(path, digits_dir)) ** 2).sum()
        sqnr[variant_id] = 10 * np.log10((reference ** 2).sum() / noise)
    poor, default = "minmax-n8-pt-asym-none", "entropy-n256-pc-asym-none"
    assert sqnr[poor] < sqnr[default], (sqnr, drops)
    assert drops[poor] >= drops[default] - 100.0 / len(fp32) - 1e-9, (sqnr, drops)


def test_presets_keep_their_nodes_in_float(tmp_path, onnx_path, digits_dir):
    prepared = onnx.load(str(prepare_model(onnx_path, tmp_path / "prepared.onnx")))
    ops, nodes = resolve_exclusions(prepared, ["swish", "squeeze_excite", "first_conv", "classifier", "op.Gemm"])
    kinds = {n.name: n.op_type for n in prepared.graph.node}
    assert ops == ["Gemm"] and len(nodes) > 20
    assert {kinds[n] for n in nodes} >= {"Conv", "Mul", "Gemm", "GlobalAveragePool"}
    variant = parse_variant("entropy-n64-pc-asym-first_conv+classifier")
    _, float_nodes = resolve_exclusions(prepared, variant.exclude)
    out = tmp_path / "mixed.onnx"
    ort_backend.build_engine(onnx_path, out, "int8", calibration_source(digits_dir, 64, 16, 0),
                             variant_options(variant, [], float_nodes, 16), None)
    model = onnx.load(str(out))
    by_name = {n.name: n for n in model.graph.node}
    weights = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for name in float_nodes:  # the float node reads its weight directly, not through DequantizeLinear
        assert by_name[name].input[1] in weights, name


def test_sensitivity_ranks_layers(tmp_path, study_engines, onnx_path, digits_dir):
    _, _, built = study_engines
    prepared = prepare_model(onnx_path, tmp_path / "prepared.onnx")
    table = layer_sensitivity(prepared, built["minmax-n8-pt-asym-none"], calibration_source(digits_dir, 32, 16, 0),
                              tmp_path)
    assert len(table) > 50 and list(table["rank"]) == list(range(1, len(table) + 1))
    assert table["degradation_db"].is_monotonic_decreasing and (table["score_db"] >= table["degradation_db"]).all()
    assert table["xmodel_sqnr_db"].notna().all() and table["degradation_db"].iloc[0] > 0
    graph_nodes = {n.name for n in onnx.load(str(prepared)).graph.node}
    assert all(set(group) <= graph_nodes for group in table["nodes"])
    groups = ranked_groups(table)
    assert len({n for g in groups for n in g}) == sum(len(g) for g in groups)


# The int8-auto search (bisection + pruning, validation only) is tested in tests/test_int8_rescue.py.
