"""The int8-auto search (bisection over the sensitivity ranking, then pruning) on synthetic judges.

The real-model guard that the search never reads the test split is
tests/test_calibration_study.py::test_int8_auto_on_a_real_model (the test split is deleted first).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from workflow_scripts.calibration_study.rescue_search import prefix_limit, search_float_groups


def required(needed: set[str], calls: list):
    """A monotone judge: the target is met exactly when every node of ``needed`` is in float."""

    def judge(kept):
        calls.append(list(kept))
        return {"meets": needed <= set(kept), "val_drop_points": 0.0 if needed <= set(kept) else 5.0}

    return judge


def brute_force_minimum(groups, meets) -> int:
    for size in range(len(groups) + 1):
        if any(meets([n for i in combo for n in groups[i]]) for combo in itertools.combinations(range(len(groups)), size)):
            return size
    return -1


@pytest.mark.parametrize("needed", [{"g3"}, {"g1", "g4"}, {"g0", "g7", "g40"}, {"g63"}, {"g10", "g11", "g12"}])
def test_bisection_and_pruning_find_the_minimal_set(needed):
    groups = [f"g{i}" for i in range(64)]
    calls = []
    result = search_float_groups(groups, required(needed, calls), budget=None)
    assert result["reached_target"] and result["stop_reason"] == "target"
    assert set(result["kept_nodes"]) == needed  # exactly the needed nodes: nothing extra survives pruning
    assert result["evaluations"] == len(calls) == len({frozenset(c) for c in calls})  # no set judged twice
    deepest = max(int(n[1:]) for n in needed) + 1  # the smallest meeting prefix
    # Bracket + bisection: about 2 log2(prefix) builds, then at most prefix - 1 pruning builds.
    searched = sum(1 for s in result["steps"] if s["phase"] in ("bracket", "bisect"))
    assert searched <= 2 * math.ceil(math.log2(deepest)) + 2
    assert sum(1 for s in result["steps"] if s["phase"] == "prune") <= 2 * deepest
    assert [s["step"] for s in result["steps"]] == list(range(len(calls)))


def test_additive_drop_search_matches_brute_force_minimum():
    """A monotone, additive drop: each group in float recovers its share; the target needs the big shares."""
    recover = [4.0, 0.1, 3.0, 0.2, 0.1, 2.5, 0.0, 0.3, 0.1, 0.2]
    groups = [[f"n{i}a", f"n{i}b"] if i % 3 == 0 else [f"n{i}"] for i in range(len(recover))]
    index = {n: i for i, g in enumerate(groups) for n in g}

    def meets(kept):
        return 12.0 - sum(recover[i] for i in {index[n] for n in kept}) <= 3.0

    result = search_float_groups(groups, lambda kept: meets(kept), budget=None)
    assert result["reached_target"] and meets(result["kept_nodes"])
    assert len(result["kept_groups"]) == brute_force_minimum(groups, meets) == 3
    # 1-minimal: no kept group can go back to INT8.
    for g in result["kept_groups"]:
        assert not meets([n for n in result["kept_nodes"] if index[n] != g])


def test_plain_model_meeting_the_target_keeps_nothing_in_float():
    calls = []
    result = search_float_groups(["a", "b"], required(set(), calls))
    assert result["kept_nodes"] == [] and calls == [[]] and result["reached_target"]


def test_budget_and_exhausted_ranking_stop_without_reaching_the_target():
    calls = []
    result = search_float_groups([f"n{i}" for i in range(20)], required({"n9"}, calls), budget=5)
    assert not result["reached_target"] and result["stop_reason"] == "budget"
    assert result["kept_nodes"] == ["n0", "n1", "n2", "n3", "n4"]
    assert [len(c) for c in calls] == [0, 1, 2, 4, 5]
    result = search_float_groups(["a", ["b", "c"]], required({"z"}, []), budget=None)
    assert result["stop_reason"] == "ranking exhausted" and result["kept_nodes"] == ["a", "b", "c"]
    assert search_float_groups(["x"], lambda kept: False, budget=0)["kept_nodes"] == []


def test_prefix_limit_counts_nodes_not_groups():
    groups = [["a"], ["b", "c"], ["d"]]
    assert prefix_limit(groups, None) == 3 and prefix_limit(groups, 3) == 2 and prefix_limit(groups, 2) == 1


def test_the_search_only_ever_calls_the_validation_judge():
    """The search function has no access to test data: it can only judge through the callable it is given,
    and every build it asks for is recorded as a step (what the record shows is every evaluation made)."""
    import inspect

    params = inspect.signature(search_float_groups).parameters
    assert list(params) == ["ranking", "judge", "budget", "prune"]
    calls = []
    result = search_float_groups([f"g{i}" for i in range(16)], required({"g5"}, calls))
    assert len(result["steps"]) == len(calls)


# --- the real search on a tiny hand-made ONNX model: validation only, the test split is never read ------

def _tiny_model(path, rng):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def init(name, shape, scale=0.5):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Div", ["t", "k255"], ["s"], name="scale")]
    inits = [numpy_helper.from_array(np.array(255.0, np.float32), "k255")]
    previous, channels = "s", 3
    for i in range(4):
        nodes += [helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        inits += [init(f"w{i}", (6, channels, 3, 3)), init(f"b{i}", (6,), 0.1)]
        previous, channels = f"r{i}", 6
    nodes += [helper.make_node("GlobalAveragePool", [previous], ["g"], name="pool"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="classifier")]
    inits += [init("wf", (3, 6)), init("bf", (3,), 0.1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A tiny model, and train/val splits labelled by the FP32 model itself; no test split exists."""
    import onnxruntime as ort

    root = tmp_path_factory.mktemp("rescue")
    rng = np.random.default_rng(0)
    model = _tiny_model(root / "model.onnx", rng)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    data = root / "data"
    data.mkdir()
    for split, count in (("train", 64), ("val", 200)):
        images = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
        labels = session.run(None, {"x": images.astype(np.float32)})[0].argmax(axis=1).astype(np.int64)
        np.save(data / f"{split}_images.npy", images)
        np.save(data / f"{split}_labels.npy", labels)
    return root, model, data


def test_int8_auto_judges_on_validation_and_never_reads_the_test_split(tiny_study, tmp_path):
    """run_int8_auto on a data folder with no test split at all: every step is a validation verdict."""
    from workflow_scripts.backends import onnxruntime as ort_backend
    from workflow_scripts.calibration_study.presets import prepare_model
    from workflow_scripts.stages.engine import calibration_source
    from workflow_scripts.calibration_study.int8_auto import run_int8_auto
    from workflow_scripts.calibration_study.sensitivity import layer_sensitivity

    root, model, data = tiny_study
    assert not list(data.glob("test_*"))
    start = "minmax-n8-pt-asym-none"
    qdq = tmp_path / "start.onnx"
    from workflow_scripts.calibration_study.variants import parse_variant, variant_options

    ort_backend.build_engine(model, qdq, "int8", calibration_source(data, 8, 8, 0),
                             variant_options(parse_variant(start), [], [], 8), None)
    prepared = prepare_model(model, tmp_path / "prepared.onnx")
    table = layer_sensitivity(prepared, qdq, calibration_source(data, 16, 8, 0), tmp_path)
    table.to_parquet(tmp_path / "sensitivity.parquet")
    # A target of -100 points cannot be met: the search runs its whole bracket over the ranking.
    record = run_int8_auto(model, model, start, tmp_path / "sensitivity.parquet", data, 8, 50, target_points=-100.0,
                           budget=None, seed=0, engine_path=tmp_path / "int8-auto.onnx",
                           record_json=tmp_path / "int8-auto.json", steps_table=tmp_path / "steps.parquet",
                           labels={"model": "tiny"}, provenance={"device": "test", "backend": "onnxruntime",
                                                                 "config_hash": "x"}, val_images=150)
    assert record["val_split"] == "val" and record["val_images"] == 150 and record["fp32_val_top1"] == 1.0
    assert not record["reached_target"] and record["stop_reason"] == "ranking exhausted"
    assert record["evaluations"] == len(record["steps"]) >= 3
    assert all(np.isfinite(s["val_drop_points"]) for s in record["steps"])
    assert (tmp_path / "int8-auto.onnx").stat().st_size > 0
    # A reachable target: the plain start variant is judged, and the final step is what was kept.
    record = run_int8_auto(model, model, start, tmp_path / "sensitivity.parquet", data, 8, 50, target_points=100.0,
                           budget=None, seed=0, engine_path=tmp_path / "int8-auto.onnx",
                           record_json=tmp_path / "int8-auto.json", steps_table=tmp_path / "steps.parquet",
                           labels={"model": "tiny"}, provenance={"device": "test", "backend": "onnxruntime",
                                                                 "config_hash": "x"}, criterion="point")
    assert record["reached_target"] and record["kept_nodes"] == [] and record["val_images"] == 200


# --- the comparison: NNCF's accuracy control on the same tiny model and validation images ---------------

def test_nncf_report_lines_are_parsed():
    from workflow_scripts.calibration_study.nncf_rescue import parse_report

    report = parse_report([
        "Metric of initial model: 0.9",
        "Metric of quantized model: 0.3",
        "Accuracy drop: 0.6 (absolute)",
        "Total number of quantized operations in the model: 77",
        "Accuracy drop with the new quantization scope is 0.2 (absolute)",
        "3 out of 77 were reverted back to the floating-point precision:\n\tconv_a\n\tconv_b\n\tadd_c",
    ])
    assert report["reverted_operations"] == 3 and report["quantized_operations"] == 77
    assert report["reverted_names"] == ["conv_a", "conv_b", "add_c"]
    assert report["logged_drops"] == [0.6, 0.2] and report["quantized_val_drop_points"] == pytest.approx(60.0)


def test_nncf_rescue_runs_on_validation_only_and_saves_a_loadable_engine(tiny_study, tmp_path):
    from workflow_scripts.backends import openvino as ovb
    from workflow_scripts.calibration_study.nncf_rescue import run_nncf_rescue

    root, model, data = tiny_study
    assert not list(data.glob("test_*"))  # NNCF's validation dataset is the validation split
    record = run_nncf_rescue(model, data, "minmax-n8-pt-asym-none", 8, 1.0, "mixed", 50, 150, 0,
                             tmp_path / "nncf-ac.xml", tmp_path / "nncf-ac.json")
    assert record["val_split"] == "val" and record["val_images"] == 150 and record["calibration_images"] == 8
    assert record["per_channel_weights"] is False and record["fake_quantize_nodes"] > 0
    assert record["val_top1_fp32"] == 1.0 and record["float_nodes"] >= 0
    runner = ovb.load_runner(tmp_path / "nncf-ac.xml")
    assert runner.run(np.zeros((2, 8, 8, 3), np.float32)).shape == (2, 3)


def test_pruning_a_long_prefix_with_few_needed_groups_costs_far_fewer_builds_than_its_length():
    """The rescue measured on Lite0 needed a 49-group prefix: one-by-one pruning would cost 48 builds."""
    calls = []
    result = search_float_groups([f"g{i}" for i in range(64)], required({"g3", "g48"}, calls))
    assert set(result["kept_nodes"]) == {"g3", "g48"}
    prune_steps = sum(1 for s in result["steps"] if s["phase"] == "prune")
    assert prune_steps <= 16, prune_steps


def test_weight_sqnr_sees_per_tensor_scales_that_the_accumulated_error_hides(tiny_study, tmp_path):
    """Per node, the INT8 weight's SQNR: per-channel scales are never worse than per-tensor ones, and
    the ranking's score is at least the SQNR lost across each group."""
    import onnx

    from workflow_scripts.backends import onnxruntime as ort_backend
    from workflow_scripts.calibration_study.presets import prepare_model
    from workflow_scripts.calibration_study.variants import parse_variant, variant_options
    from workflow_scripts.stages.engine import calibration_source
    from workflow_scripts.calibration_study.sensitivity import SQNR_CAP_DB, layer_sensitivity, weight_sqnr

    _, model, data = tiny_study
    prepared = prepare_model(model, tmp_path / "prepared.onnx")
    sqnr = {}
    for variant_id in ("entropy-n16-pt-asym-none", "entropy-n16-pc-asym-none"):
        path = tmp_path / f"{variant_id}.onnx"
        ort_backend.build_engine(model, path, "int8", calibration_source(data, 16, 8, 0),
                                 variant_options(parse_variant(variant_id), [], [], 8), None)
        sqnr[variant_id] = weight_sqnr(onnx.load(str(prepared)), onnx.load(str(path)))
    per_tensor, per_channel = sqnr["entropy-n16-pt-asym-none"], sqnr["entropy-n16-pc-asym-none"]
    assert set(per_tensor) == set(per_channel) >= {"conv0", "conv1", "conv2", "conv3"}
    assert all(per_channel[n] >= per_tensor[n] - 1e-9 for n in per_tensor), (per_tensor, per_channel)
    assert all(0 < v <= SQNR_CAP_DB for v in per_tensor.values())
    table = layer_sensitivity(prepared, tmp_path / "entropy-n16-pt-asym-none.onnx", calibration_source(data, 16, 8, 0),
                              tmp_path, rank_by="score_db")
    assert table["score_db"].is_monotonic_decreasing and (table["score_db"] >= table["degradation_db"]).all()
    assert table["weight_sqnr_db"].notna().sum() >= 4
