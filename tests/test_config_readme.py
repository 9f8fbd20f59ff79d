"""config/README.md names every top-level config key and every config file it lists exists."""

from __future__ import annotations

import re

import yaml

from tests.cli import REPO


def test_every_top_level_key_is_named_in_config_readme():
    keys = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]
    text = (REPO / "config" / "README.md").read_text()
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"config/README.md does not name {missing}"


def test_the_config_files_it_lists_exist():
    text = (REPO / "config" / "README.md").read_text()
    for name in re.findall(r"^\| `([\w*]+\.yaml)` \|", text, flags=re.M):
        assert list((REPO / "config").glob(name)), name
