"""Config mistakes refused at planning, quoting what the user wrote (issue 25, item 7): a key given twice in a
YAML file, benchmark.threads above the cores, a missing weights file, train.max_images below the classes, a
weights mapping naming a model outside models."""

from __future__ import annotations

import pytest

from tests.cli import output_of, snakemake, tiny
from workflow_scripts.core.errors import ConfigError


def _dry(tmp_path, **config):
    result = snakemake(tmp_path, "-n", config=tiny(**config), check=False, timeout=300)
    return result.returncode, output_of(result)


@pytest.mark.slow  # the real snakemake CLI (a dry run)
def test_a_key_given_twice_in_a_config_file_is_refused_naming_key_and_file(tmp_path):
    from tests.cli import snakemake_command
    import subprocess

    command = snakemake_command(tmp_path, "-n", config=tiny())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_file.read_text() + "input_size: 64\n")  # input_size is already there
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "key 'input_size' is given twice" in output_of(result) and str(config_file) in output_of(result)


@pytest.mark.slow  # the real snakemake CLI (a dry run)
def test_benchmark_threads_above_the_cores_are_refused_at_planning(tmp_path):
    code, out = _dry(tmp_path, benchmark={"threads": 1024, "warmup": 2, "iterations": 5, "min_duration_s": 0.0})
    assert code != 0 and "config key 'benchmark.threads' is 1024, but this machine has" in out, out


def test_benchmark_threads_above_the_cores_are_refused():
    from workflow_scripts.core.config_checks import check_threads

    with pytest.raises(ConfigError, match="'benchmark.threads' is 64, but this machine has 2 CPU cores"):
        check_threads({"benchmark": {"threads": 64}}, cores=2)
    check_threads({"benchmark": {"threads": 2}}, cores=2)
    check_threads({"benchmark": {"threads": 0}}, cores=2)


WEIGHTS_CASES = [
    ({"weights": "~/no/such/backbone.weights.h5"},
     "config key 'weights' is '~/no/such/backbone.weights.h5', which is neither imagenet, none, nor an existing file"),
    ({"train": {"epochs": 1, "max_images": 7, "batch_size": {"digits": 32}}},
     "config key 'train.max_images' is 7 for model MobileNetV3Small, below the 10 classes of dataset 'digits'"),
    ({"weights": {"MobileNetV3Large": "imagenet", "default": "none"}},
     "config key 'weights' maps ['MobileNetV3Large'], which are not in config key 'models'"),
]


@pytest.mark.parametrize("override,needle", WEIGHTS_CASES)
def test_weights_and_training_subsets_are_checked_with_the_config(override, needle):
    from workflow_scripts.core.config import validate_config

    with pytest.raises(ConfigError) as info:
        validate_config({"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"], **override})
    assert needle in str(info.value)


@pytest.mark.slow  # the real snakemake CLI (dry runs)
@pytest.mark.parametrize("override,needle", WEIGHTS_CASES)
def test_weights_and_training_subsets_are_refused_at_planning_before_any_job(tmp_path, override, needle):
    code, out = _dry(tmp_path, **override)
    assert code != 0 and needle in out and "prepare_dataset" not in out, out
