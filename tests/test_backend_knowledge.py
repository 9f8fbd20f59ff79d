"""Backends own their knowledge (issue 22): no backend's name is typed outside core/registry.py and
workflow_scripts/backends/, the rules type the engine path pattern at most twice (core/paths.py has it), and
every hook a registry entry lists resolves to a function in the backend's own folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from workflow_scripts.core import registry

REPO = Path(__file__).resolve().parent.parent
OLD = "51e311c"  # the re-layout, before the backends took their knowledge back
LITERAL = re.compile(r"[\"'](onnxruntime|litert|openvino|tensorrt)[\"']")
ENGINE_PATTERN = re.compile(r"\{+device\}+/\{+backend\}+/\{+dataset\}+_\{+size\}+px")
HOOKS = ("check_config", "plan_options", "check_installed", "int8_calibrates", "settings_filter", "job_options",
         "hardware_support")


def checked(path: str) -> bool:
    """Whether ``path`` (relative to the repository) must name no backend."""
    if path.startswith("workflow_scripts/"):
        return (path.endswith(".py") and not path.startswith("workflow_scripts/backends/")
                and path != "workflow_scripts/core/registry.py")
    return path == "Snakefile" or (path.startswith("rules/") and path.endswith(".smk"))


def backend_literals(files: dict[str, str]) -> list[str]:
    """``path:line: text`` of every quoted backend name in the checked ``files`` (path -> text)."""
    return [f"{path}:{number}: {line.strip()}"
            for path, text in sorted(files.items()) if checked(path)
            for number, line in enumerate(text.splitlines(), 1) if LITERAL.search(line)]


def engine_patterns(files: dict[str, str]) -> int:
    """How often the rules type the engine folder pattern ({device}/{backend}/{dataset}_{size}px)."""
    return sum(len(ENGINE_PATTERN.findall(text)) for path, text in files.items()
               if path.startswith("rules/") and path.endswith(".smk"))


def tree_now() -> dict[str, str]:
    paths = [*REPO.glob("workflow_scripts/**/*.py"), *REPO.glob("rules/*.smk"), REPO / "Snakefile"]
    return {p.relative_to(REPO).as_posix(): p.read_text() for p in paths}


def tree_at(commit: str) -> dict[str, str]:
    """The checked files at ``commit`` (git show; the working tree is left alone)."""
    try:
        names = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit, "workflow_scripts", "rules", "Snakefile"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no git history with commit {commit} here")
    return {name: subprocess.run(["git", "show", f"{commit}:{name}"], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout
            for name in names if checked(name) or name.startswith("rules/")}


def test_no_backend_is_named_outside_the_registry_and_its_folder():
    assert backend_literals(tree_now()) == []


def test_the_check_finds_the_names_the_relayout_still_typed():
    found = backend_literals(tree_at(OLD))
    files = {hit.split(":", 1)[0] for hit in found}
    assert {"workflow_scripts/core/config.py", "workflow_scripts/fleet/device_run.py", "rules/common.smk",
            "rules/calibration_study.smk", "workflow_scripts/summary/claims.py",
            "workflow_scripts/core/provenance.py"} <= files, found


def test_rules_type_the_engine_path_pattern_at_most_twice():
    assert engine_patterns(tree_now()) <= 2


def test_the_relayout_typed_it_more_often():
    assert engine_patterns(tree_at(OLD)) > 2


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_every_hook_is_a_function_in_the_backends_own_folder(name):
    entry = registry.BACKENDS[name]
    for hook, target in entry.hooks:
        assert hook in HOOKS, (name, hook)
        assert target.split(".", 1)[0] == entry.module, (name, target)  # in workflow_scripts/backends/<module>/
        assert callable(entry.hook(hook)), (name, hook)
    assert entry.hook("no_such_hook") is None


def test_registry_constants_name_registered_backends():
    for name in (registry.STUDY_BACKEND, registry.RESCUE_BACKEND, registry.CLAIMS_RUNTIME, *registry.GPU_BACKENDS):
        assert name in registry.BACKENDS
    assert registry.GPU_BACKENDS and all(registry.BACKENDS[b].needs_gpu for b in registry.GPU_BACKENDS)
