"""tegrastats parsing on real lines from several boards and JetPack releases; sampler selection.

Where each line comes from (published tegrastats output, copied verbatim; line breaks that the
source added for readability are joined with single spaces):

- XAVIER_NX_JP5: docstring of collectors/jetson_xavier.py in github.com/noFlowWater/edge-metrics-exporter
  (commit c6239c3f). 6854 MB RAM is an 8 GB Xavier NX; bracketed GR3D clock and mW rails are the
  JetPack 5 format; two cores "off".
- ORIN_8GB_JP6: github.com/rbonghi/jetson_stats issue #624 (2025-05-16). Timestamp prefix
  (JetPack 6), "GR3D_FREQ 84%@[713]", VDD_IN / VDD_CPU_GPU_CV / VDD_SOC rails, lower-case
  temperatures. 7620 MB and 6 cores is an 8 GB Orin module; its NVENC and NVDLA0 fields point to
  an Orin NX 8GB (the Orin Nano has neither), the rails are the ones Orin Nano and NX share.
- AGX_ORIN_64GB_JP6: github.com/GDWR/jetson_exporter issue #14 (2025-04-11). Two GPC clocks
  "@[0,0]", unpopulated sensors at -256C, "NC" rails.
- AGX_XAVIER_JP42: github.com/martinkersner/gtop pull request #7, comment of 2019-06-17
  (JetPack 4.2). Rails without units ("GPU 463/463").
- NANO_JP4: docstring of collectors/jetson_nano.py in github.com/noFlowWater/edge-metrics-exporter
  (commit 7af5c50c). POM_* rails without units, "GR3D_FREQ 0%@76", IRAM field.
- TX1_L4T28: SCRIPTS.md in github.com/hordiales/jetson-tx1-dev. The old "cpu [..]@freq" and
  "GR3D 3%@76" layout.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

pytestmark = pytest.mark.device

from workflow_scripts.measure import gpu_monitor
from workflow_scripts.measure.gpu_monitor import TegrastatsSampler, make_gpu_sampler, parse_tegrastats_line

XAVIER_NX_JP5 = (
    "RAM 2690/6854MB (lfb 6x1MB) SWAP 479/3427MB (cached 3MB) "
    "CPU [3%@1904,7%@1906,1%@1905,0%@1907,off,off] "
    "EMC_FREQ 0%@1600 GR3D_FREQ 0%@[510] VIC_FREQ 601 APE 150 "
    "AUX@39C CPU@39.5C AO@37.5C GPU@37.5C PMIC@50C "
    "VDD_IN 5079mW/5079mW VDD_CPU_GPU_CV 696mW/696mW VDD_SOC 1104mW/1104mW"
)
ORIN_8GB_JP6 = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) "
    "CPU [97%@1984,95%@1984,95%@1984,91%@1984,88%@1984,93%@247] EMC_FREQ 18%@3199 "
    "GR3D_FREQ 84%@[713] NVENC 1%@115 NVDEC 40%@115 NVJPG off NVJPG1 off VIC 31%@115 OFA off "
    "NVDLA0 off PVA0_FREQ off APE 174 cv0@63.031C cpu@65.562C soc2@64.156C soc0@63.031C "
    "cv1@62.937C gpu@63.5C tj@65.562C soc1@64.718C cv2@60.875C VDD_IN 17946mW/15710mW "
    "VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW"
)
AGX_ORIN_64GB_JP6 = (
    "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) "
    "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C "
    "Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C "
    "SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW "
    "VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
AGX_XAVIER_JP42 = (
    "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) "
    "CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% "
    "GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C "
    "PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"
)
NANO_JP4 = (
    "RAM 1409/3964MB (lfb 28x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [22%@518,67%@518,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 "
    "PLL@28.5C CPU@32C PMIC@50C GPU@30.5C AO@39.5C thermal@31.25C "
    "POM_5V_IN 2003/2003 POM_5V_GPU 0/0 POM_5V_CPU 320/320"
)
TX1_L4T28 = (
    "RAM 3468/3983MB (lfb 48x4MB) SWAP 873/8192MB (cached 295MB) cpu [17%,13%,29%,5%]@408 "
    "EMC 1%@408 APE 25 GR3D 3%@76"
)


def test_xavier_nx_jetpack5():
    m = parse_tegrastats_line(XAVIER_NX_JP5)
    assert (m["ram_used_mb"], m["ram_total_mb"]) == (2690, 6854)
    assert (m["swap_used_mb"], m["swap_total_mb"]) == (479, 3427)
    assert [m[f"cpu{i}_percent"] for i in range(4)] == [3, 7, 1, 0]
    assert m["cpu1_mhz"] == 1906
    assert "cpu4_percent" not in m and "cpu5_percent" not in m and m["cpu_cores_off"] == 2
    assert m["gpu_util_percent"] == 0 and m["gpu_freq_mhz"] == 510
    assert m["emc_util_percent"] == 0 and m["emc_freq_mhz"] == 1600
    assert m["power_vdd_in_mw"] == 5079
    assert m["power_vdd_cpu_gpu_cv_mw"] == 696
    assert m["power_vdd_soc_mw"] == 1104
    assert m["temp_cpu_c"] == 39.5 and m["temp_gpu_c"] == 37.5


def test_orin_jetpack6_timestamp_and_bracketed_gr3d():
    m = parse_tegrastats_line(ORIN_8GB_JP6)
    assert (m["ram_used_mb"], m["ram_total_mb"]) == (6982, 7620)
    assert m["gpu_util_percent"] == 84 and m["gpu_freq_mhz"] == 713
    assert m["cpu5_percent"] == 93 and m["cpu5_mhz"] == 247 and m["cpu_cores_off"] == 0
    assert m["power_vdd_in_mw"] == 17946  # instantaneous value, not the running average
    assert m["power_vdd_cpu_gpu_cv_mw"] == 8896
    assert m["power_vdd_soc_mw"] == 3923
    assert m["temp_tj_c"] == 65.562
    # Engine fields such as "NVENC 1%@115" and "APE 174" are neither rails nor temperatures.
    assert not any(k.startswith(("power_nvenc", "power_ape", "temp_nvenc")) for k in m)
    assert not any("05" in k or "18" in k for k in m)  # the timestamp yields nothing


def test_agx_orin_two_gpcs_unpopulated_sensors_and_nc_rails():
    m = parse_tegrastats_line(AGX_ORIN_64GB_JP6)
    assert m["ram_total_mb"] == 62801
    assert len([k for k in m if k.endswith("_percent") and k.startswith("cpu")]) == 12
    assert m["gpu_util_percent"] == 0 and m["gpu_freq_mhz"] == 0
    assert "temp_cv0_c" not in m and "temp_gpu_c" not in m  # -256C: sensor not populated
    assert m["temp_cpu_c"] == 44.562
    assert m["power_vdd_gpu_soc_mw"] == 2340 and m["power_vin_sys_5v0_mw"] == 4025
    assert "power_nc_mw" not in m


def test_agx_xavier_jetpack42_rails_without_units():
    m = parse_tegrastats_line(AGX_XAVIER_JP42)
    assert m["gpu_util_percent"] == 0 and "gpu_freq_mhz" not in m
    assert m["power_gpu_mw"] == 463 and m["power_cpu_mw"] == 618 and m["power_sys5v_mw"] == 3306
    assert "power_ram_mw" not in m and "power_swap_mw" not in m
    assert m["temp_pmic_c"] == 100


def test_nano_pom_rails_and_plain_gr3d_clock():
    m = parse_tegrastats_line(NANO_JP4)
    assert m["gpu_freq_mhz"] == 76 and m["cpu_cores_off"] == 2
    assert m["power_pom_5v_in_mw"] == 2003 and m["power_pom_5v_cpu_mw"] == 320
    assert "power_iram_mw" not in m


def test_l4t28_shared_cpu_clock_and_gr3d():
    m = parse_tegrastats_line(TX1_L4T28)
    assert [m[f"cpu{i}_percent"] for i in range(4)] == [17, 13, 29, 5]
    assert m["cpu0_mhz"] == 408
    assert m["gpu_util_percent"] == 3 and m["emc_util_percent"] == 1


@pytest.mark.parametrize("line", ["", "garbage", "RAM x/yMB"])
def test_unparseable_lines_give_nothing(line):
    assert parse_tegrastats_line(line) == {}


def test_tegrastats_sampler_keeps_latest_line(tmp_path):
    # A stand-in for tegrastats: prints two real lines, then waits to be terminated.
    fake = tmp_path / "fake_tegrastats.py"
    fake.write_text(textwrap.dedent(f"""
        import sys, time
        print({XAVIER_NX_JP5!r}, flush=True)
        print({ORIN_8GB_JP6!r}, flush=True)
        time.sleep(60)
    """))
    sampler = TegrastatsSampler(0.1, argv=[sys.executable, str(fake)])
    try:
        import time

        deadline = time.monotonic() + 10
        while sampler.lines_read < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        sample = sampler.sample()
        assert sample["ram_total_mb"] == 7620 and sample["gpu_util_percent"] == 84
    finally:
        sampler.close()
    sampler.close()  # idempotent
    assert sampler._proc.poll() is not None


def test_default_tegrastats_argv_uses_interval_ms(monkeypatch):
    started = {}

    class FakePopen:
        def __init__(self, argv, **kwargs):
            started["argv"] = argv
            self.stdout = None

        def poll(self):
            return 0

    monkeypatch.setattr(gpu_monitor.subprocess, "Popen", FakePopen)
    TegrastatsSampler(2.0).close()
    assert started["argv"] == ["tegrastats", "--interval", "2000"]


def test_tegrastats_never_runs_at_the_monitor_10hz(monkeypatch):
    """Issue 13, defect 10: the monitor samples at 0.1 s; tegrastats must not run that fast."""
    started = {}

    class FakePopen:
        def __init__(self, argv, **kwargs):
            started["argv"] = argv
            self.stdout = None

        def poll(self):
            return 0

    monkeypatch.setattr(gpu_monitor.subprocess, "Popen", FakePopen)
    TegrastatsSampler(0.1).close()
    interval_ms = int(started["argv"][2])
    assert interval_ms >= 500 and interval_ms == gpu_monitor.tegrastats_interval_ms(0.1)


def test_tegrastats_lines_arrive_while_it_runs_not_at_exit(tmp_path, monkeypatch):
    """Issue 13, defect 10: a stdio program block-buffers a pipe; the sampler must see lines at once.

    The stand-in prints one line without flushing (as tegrastats does) and keeps running: through a
    pipe the line would sit in its 8 KiB buffer until exit, 60 s later.
    """
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    fake = tmp_path / "buffered_tegrastats.py"
    fake.write_text(textwrap.dedent(f"""
        import time
        print({XAVIER_NX_JP5!r})
        time.sleep(60)
    """))
    sampler = TegrastatsSampler(1.0, argv=[sys.executable, str(fake)])
    try:
        import time

        deadline = time.monotonic() + 20
        while sampler.lines_read < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sampler.line_buffered
        assert sampler.sample().get("ram_total_mb") == 6854
    finally:
        sampler.close()


# --- sampler selection -----------------------------------------------------------------------


def test_make_gpu_sampler_returns_none_on_this_machine():
    from workflow_scripts.core.device import jetson_model, nvidia_gpu_name

    if jetson_model() or nvidia_gpu_name():
        pytest.skip("this machine has an NVIDIA GPU; the None case cannot be observed")
    assert make_gpu_sampler(0.5) is None


def test_absent_nvml_module_is_handled(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    monkeypatch.setattr(gpu_monitor, "jetson_model", lambda: None)
    assert make_gpu_sampler(0.5) is None


def test_nvml_init_failure_is_handled(monkeypatch):
    class FailingNvml:
        @staticmethod
        def nvmlInit():
            raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", FailingNvml)
    monkeypatch.setattr(gpu_monitor, "jetson_model", lambda: None)
    assert make_gpu_sampler(0.5) is None


def test_nvml_sampler_with_fake_nvml(monkeypatch):
    class Mem:
        used, total = 2 * 2**30, 8 * 2**30

    class FakeNvml:
        shutdowns = 0

        @staticmethod
        def nvmlInit():
            pass

        @staticmethod
        def nvmlShutdown():
            FakeNvml.shutdowns += 1

        @staticmethod
        def nvmlDeviceGetHandleByIndex(i):
            return "h0"

        @staticmethod
        def nvmlDeviceGetUtilizationRates(h):
            return type("U", (), {"gpu": 37})()

        @staticmethod
        def nvmlDeviceGetMemoryInfo(h):
            return Mem()

        @staticmethod
        def nvmlDeviceGetPowerUsage(h):
            raise RuntimeError("Not Supported")

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml)
    monkeypatch.setattr(gpu_monitor, "jetson_model", lambda: None)
    sampler = make_gpu_sampler(0.5)
    assert isinstance(sampler, gpu_monitor.NvmlSampler)
    assert sampler.sample() == {
        "gpu_util_percent": 37.0, "gpu_memory_used_mb": 2048.0, "gpu_memory_percent": 25.0
    }
    sampler.close()
    sampler.close()
    assert FakeNvml.shutdowns == 1 and sampler.sample() == {}


def test_jetson_prefers_tegrastats(monkeypatch):
    monkeypatch.setattr(gpu_monitor, "jetson_model", lambda: "NVIDIA Jetson Xavier NX Developer Kit")
    monkeypatch.setattr(gpu_monitor.shutil, "which", lambda name: "/usr/bin/tegrastats")
    made = {}

    class FakeTegrastats:
        def __init__(self, interval_s):
            made["interval"] = interval_s

    monkeypatch.setattr(gpu_monitor, "TegrastatsSampler", FakeTegrastats)
    assert isinstance(make_gpu_sampler(0.2), FakeTegrastats) and made["interval"] == 0.2
