"""Device tag detection, CUDA-core lookup, power mode and clocks."""

from __future__ import annotations

import pytest

from workflow_scripts.core import device


def test_override_wins_exactly_as_written():
    # One name, one folder: 'box-cpu' and 'box' (or 'cpu') never collapse into one tag.
    assert device.detect_device_tag("box-cpu") == "box-cpu" and device.detect_device_tag("box") == "box"
    assert device.detect_device_tag("cpu") == "cpu"
    assert device.detect_device_tag("auto") == device.detect_device_tag(None)


@pytest.mark.parametrize("name", ["Box", "box_1", "jetson xavier", "-x", "a/b", "~"])
def test_device_names_outside_the_tag_alphabet_are_refused_naming_the_key(name):
    from workflow_scripts.core.config import validate_config
    from workflow_scripts.core.errors import ConfigError

    with pytest.raises(ConfigError, match="device"):
        validate_config({"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"], "device": name})


@pytest.mark.parametrize("name", ["summary", "data", "models", "logs", "benchmarks"])
def test_device_names_of_the_workflows_own_folders_are_refused(name):
    from workflow_scripts.core.config import validate_config
    from workflow_scripts.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"'device' is '{name}'.*own folders"):
        validate_config({"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"], "device": name})


@pytest.mark.parametrize(
    "text, slug",
    [
        ("NVIDIA Jetson Xavier NX Developer Kit", "nvidia-jetson-xavier-nx-developer-kit"),
        ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "intel-core-i7-8700"),
        ("NVIDIA GeForce RTX 3090", "nvidia-geforce-rtx-3090"),
        ("  ", "unknown"),
    ],
)
def test_slugify(text, slug):
    assert device.slugify(text) == slug


def test_jetson_model_from_device_tree_file(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert device.jetson_model(model) == "NVIDIA Jetson Orin Nano Developer Kit"
    other = tmp_path / "other"
    other.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert device.jetson_model(other) is None
    assert device.jetson_model(tmp_path / "missing") is None


def test_tag_prefers_jetson_then_gpu_then_cpu(monkeypatch):
    monkeypatch.setattr(device, "jetson_model", lambda: "NVIDIA Jetson AGX Orin Developer Kit")
    monkeypatch.setattr(device, "nvidia_gpu_name", lambda: "Orin (nvgpu)")
    assert device.detect_device_tag() == "nvidia-jetson-agx-orin-developer-kit"
    monkeypatch.setattr(device, "jetson_model", lambda: None)
    monkeypatch.setattr(device, "nvidia_gpu_name", lambda: "NVIDIA GeForce RTX 4090")
    assert device.detect_device_tag() == "nvidia-geforce-rtx-4090"
    monkeypatch.setattr(device, "nvidia_gpu_name", lambda: None)
    monkeypatch.setattr(device, "cpu_model", lambda: "AMD EPYC 7B13")
    assert device.detect_device_tag() == "amd-epyc-7b13"


def test_cpu_fallback_on_this_machine():
    if device.jetson_model() or device.nvidia_gpu_name():
        pytest.skip("this machine has an NVIDIA device")
    assert device.detect_device_tag() == device.slugify(device.cpu_model())
    info = device.device_info()
    assert info["gpu_name"] == "" and info["cuda_cores"] == "" and info["power_mode"] == ""
    assert {"device", "cpu_model", "os", "jetson_model", "cpu_clock_mhz", "gpu_clock_mhz"} <= set(info)


@pytest.mark.parametrize(
    "name, cores",
    [
        ("NVIDIA Jetson Xavier NX Developer Kit", 384),
        ("Jetson-AGX", None),  # the AGX Xavier's old device-tree name says too little
        ("NVIDIA Jetson AGX Xavier Developer Kit", 512),
        ("NVIDIA Jetson Orin Nano Developer Kit", 1024),
        ("NVIDIA Jetson Orin Nano 4GB", 512),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 1024),
        ("NVIDIA Jetson AGX Orin Developer Kit", 2048),
        ("NVIDIA Jetson AGX Orin 32GB", 1792),
        ("NVIDIA Jetson Nano Developer Kit", 128),
        ("NVIDIA Jetson TX2", 256),
        ("NVIDIA GeForce RTX 3090", 10496),
        ("NVIDIA GeForce RTX 3090 Ti", 10752),
        ("NVIDIA GeForce RTX 4090", 16384),
        ("NVIDIA A100-SXM4-80GB", 6912),
        ("NVIDIA H100 80GB HBM3", 16896),
        ("NVIDIA H100 PCIe", 14592),
        ("Tesla T4", 2560),
        ("NVIDIA L4", 7424),
        ("NVIDIA L40S", 18176),
        ("Orin (nvgpu)", None),  # NVML's name on Jetson does not say which Orin
        ("Intel(R) Xeon(R) Processor", None),
        (None, None),
    ],
)
def test_cuda_cores(name, cores):
    assert device.cuda_cores(name) == cores


def test_orin_nano_4gb_told_apart_by_memory():
    name = "NVIDIA Jetson Orin Nano Developer Kit"
    assert device.cuda_cores(name, mem_total_mb=3450) == 512
    assert device.cuda_cores(name, mem_total_mb=7620) == 1024


def test_parse_nvpmodel_output():
    # ``nvpmodel -q`` prints the mode name, then its number.
    assert device.parse_nvpmodel_output("NV Power Mode: MODE_15W_6CORE\n2\n") == "MODE_15W_6CORE (mode 2)"
    assert device.parse_nvpmodel_output("NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n") == (
        "MAXN (mode 0)"
    )
    assert device.parse_nvpmodel_output("NV Power Mode: 15W") == "15W"
    assert device.parse_nvpmodel_output("nvpmodel: command failed") is None


def test_power_mode_absent_without_nvpmodel(monkeypatch):
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    assert device.power_mode() is None


def test_clocks_from_sysfs(tmp_path):
    cpufreq = tmp_path / "devices/system/cpu/cpu0/cpufreq"
    cpufreq.mkdir(parents=True)
    (cpufreq / "scaling_cur_freq").write_text("1190400\n")
    (cpufreq / "scaling_max_freq").write_text("1907200\n")
    gpu = tmp_path / "class/devfreq/17000000.gv11b"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("510000000\n")
    (gpu / "max_freq").write_text("1100000000\n")
    (tmp_path / "class/devfreq/other.emc").mkdir()
    assert device.clocks(tmp_path) == {
        "cpu_mhz": 1190.4, "cpu_max_mhz": 1907.2, "gpu_mhz": 510.0, "gpu_max_mhz": 1100.0
    }
    assert device.clocks(tmp_path / "nowhere") == {}
