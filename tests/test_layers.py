"""The package's folders are layers: a module imports only from its own folder or from a folder below it
(issue 22: "a folder name says what lives there and imports only point down").

Every ``from workflow_scripts... import`` in every module counts, at module level or inside a function:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workflow_scripts"

# Lowest first. Folders on one line are side by side: neither may import the other.
LAYERS = [
    ("core",),                 # registry, config, paths, errors, artifacts, provenance, discovery
    ("data", "measure"),       # images in; timing, monitors, statistics
    ("models",),               # the zoo, EfficientNet-Lite, user models, the ONNX canonical form
    ("backends",),             # one folder per runtime, the engine check
    ("stages",),               # train, export, build, evaluate, latency, runoff
    ("summary",),              # the summary tables and the claims
    ("decision",),             # budgets, ranking, ties, the answer in words
    ("figures",),              # figures, the report pages, the end-of-run summary
    ("calibration_study",),    # the INT8 calibration study and its rescue
    ("fleet",),                # placement, the on-device runner, GPU validation
    ("shims", "examples", "cli"),  # entry points: Snakemake scripts, the example maker, the command line
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def folder_of(module: str) -> str | None:
    """The top folder (or top-level module) of a dotted name under workflow_scripts."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "workflow_scripts" else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import of workflow_scripts in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "workflow_scripts":
                found += [(node.lineno, f"workflow_scripts.{a.name}") for a in node.names]
            elif node.module.startswith("workflow_scripts."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("workflow_scripts.")]
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts or relative.name == "__init__.py" and len(relative.parts) == 1:
            continue
        here = relative.parts[0].removesuffix(".py")
        for line, module in imports(path):
            there = folder_of(module)
            if there is None or there == here or there == "__version__":
                continue
            if here not in RANK or there not in RANK:
                out.append(f"{relative}:{line} imports {module}: folder {here if here not in RANK else there} "
                           "has no layer in tests/test_layers.py")
            elif RANK[there] >= RANK[here]:
                out.append(f"{relative}:{line} imports {module}: {there} is not below {here}")
    return out


def test_every_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    folders |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert folders == set(RANK), f"folders without a layer: {folders - set(RANK)}; layers without a folder: " \
                                 f"{set(RANK) - folders}"


def test_imports_point_down():
    found = violations()
    assert not found, "\n".join(found)


def test_the_check_finds_an_upward_import(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "config.py").write_text("from workflow_scripts.fleet.placement import check_placement\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "train.py").write_text("def f():\n    from workflow_scripts.decision import ties\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fetch.py").write_text("from workflow_scripts.measure import statistics\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "zoo.py").write_text("from workflow_scripts.core import registry\n")
    found = violations(tmp_path)
    assert len(found) == 3, found
    assert any("fleet is not below core" in f for f in found)
    assert any("decision is not below stages" in f for f in found)  # a lazy import counts
    assert any("measure is not below data" in f for f in found)     # side by side is not below
