"""energy.py: counters, wrap-around, power-trace integration, and the reason recorded where nothing can be read."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.measure import energy


def powercap(root, zones):
    """A powercap tree like /sys/class/powercap: package zones with a sub-zone each."""
    for index, (uj, max_range) in enumerate(zones):
        zone = root / f"intel-rapl:{index}"
        (zone / f"intel-rapl:{index}:0").mkdir(parents=True)
        (zone / "name").write_text(f"package-{index}\n")
        (zone / "energy_uj").write_text(f"{uj}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
        (zone / f"intel-rapl:{index}:0" / "energy_uj").write_text("5\n")
    return root


def test_counter_delta_handles_wrap_around():
    assert energy.counter_delta(100, 250) == 150
    assert energy.counter_delta(990, 40, max_range=1000) == 50
    assert math.isnan(energy.counter_delta(990, 40))


def test_trapezoid_integration_inside_the_window():
    t = np.arange(0, 11, 1.0)
    assert energy.integrate_power_mw(t, np.full(11, 2000.0)) == pytest.approx(20.0)  # 2 W x 10 s
    assert energy.integrate_power_mw(t, np.full(11, 2000.0), start_s=2, end_s=5) == pytest.approx(6.0)
    ramp = energy.integrate_power_mw([0, 1, np.nan, 2], [0, 1000, 5, 2000])
    assert ramp == pytest.approx(2.0)
    assert math.isnan(energy.integrate_power_mw([0], [1000]))


def test_rapl_meter_reads_packages_only_and_sums_them(tmp_path):
    root = powercap(tmp_path / "powercap", [(1_000_000, 2**32), (3_000_000, 2**32)])
    meter = energy.open_meter(root, use_nvml=False)
    assert meter.source == "rapl" and "package-0, package-1" in meter.note and "whole socket" in meter.note
    meter.start()
    (root / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (root / "intel-rapl:1" / "energy_uj").write_text("3500000\n")  # +0.5 J
    joules, start, end = meter.stop()
    assert joules == pytest.approx(2.5) and end >= start
    columns = energy.measured_energy(meter, (joules, start, start + 5.0), pd.DataFrame(), tasks=50, batch_size=2)
    assert columns["energy_per_inference_mj"] == pytest.approx(50.0)
    assert columns["energy_per_image_mj"] == pytest.approx(25.0)
    assert columns["average_power_w"] == pytest.approx(0.5) and columns["energy_source"] == "rapl"


def test_rapl_wrap_between_reads(tmp_path):
    root = powercap(tmp_path / "powercap", [(999_000_000, 1_000_000_000)])
    meter = energy.open_meter(root, use_nvml=False)
    meter.start()
    (root / "intel-rapl:0" / "energy_uj").write_text("1000000\n")
    assert meter.stop()[0] == pytest.approx(2.0)


def test_no_counter_leaves_the_columns_empty_with_the_reason(tmp_path):
    meter = energy.open_meter(tmp_path / "absent", use_nvml=False)
    assert meter.source == "" and "no RAPL zones" in meter.note
    meter.start()
    columns = energy.measured_energy(meter, meter.stop(), pd.DataFrame({"cpu_percent": [1.0, 2.0]}), 30, 1)
    assert set(columns) == set(energy.COLUMNS)
    assert math.isnan(columns["energy_j"]) and math.isnan(columns["energy_per_inference_mj"])
    assert columns["energy_source"] == "" and "no RAPL zones" in columns["energy_note"]
    assert "no power samples" in columns["energy_note"]


def test_unreadable_rapl_is_named(tmp_path):
    root = tmp_path / "powercap"
    zone = root / "intel-rapl:0"
    (zone / "energy_uj").mkdir(parents=True)  # unreadable as a file (root ignores file modes)
    meter = energy.open_meter(root, use_nvml=False)
    assert meter.source == "" and "not readable" in meter.note


def test_jetson_rail_trace_is_integrated_over_the_measured_window(tmp_path):
    trace = pd.DataFrame({"unix_time_s": 100 + np.arange(0, 6, 0.5), "power_vdd_in_mw": 5000.0,
                          "power_vdd_cpu_gpu_cv_mw": 1500.0})
    meter = energy.open_meter(tmp_path / "absent", use_nvml=False)
    columns = energy.measured_energy(meter, (math.nan, 101.0, 105.0), trace, tasks=40, batch_size=1)
    assert columns["energy_j"] == pytest.approx(20.0)  # 5 W x 4 s, total rail only
    assert columns["energy_source"] == "trace:power_vdd_in_mw" and "tegrastats" in columns["energy_note"]
    assert columns["energy_per_inference_mj"] == pytest.approx(500.0)
    gpu = trace.drop(columns=["power_vdd_in_mw", "power_vdd_cpu_gpu_cv_mw"]).assign(power_gpu_mw=100_000.0)
    assert energy.trace_power_column(gpu) == "power_gpu_mw"
