"""What docs/*.md quote as code exists: repository files and folders, tests by name, rule helpers, modules'
functions, and config keys.

Only code spans (`...`) are read. A span is checked when it is unambiguous:

- a path of the repository (it starts with one of its top-level folders, e.g. `rules/common.smk`,
  `workflow_scripts/backends/tensorrt/`), optionally with ``::name`` (a test function, or a function
  of a rules file); spans with placeholders (``<device>``, ``*``, ``...``, ``{a,b}``) are left out;
- a dotted name whose first part is a top-level key of config/schema.yaml (`calibration.method`,
  `summary.allow_mixed_configs`): it must be a key of the schema, or a module or name of the
  package of that name (`export.export_onnx`, `backends.get_backend`); a backend's options block
  (`onnxruntime.*`, `tensorrt.*`) shares its name with the runtime's own package, whose API is not checked;
  file names (`decision.md`, `export.parquet`) are not dotted names;
- a dotted name under `workflow_scripts.` must be a module, or a name defined in one.

Spans in fenced code blocks of past experiments (paths on the machine that ran them) are not spans.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from workflow_scripts.core import registry

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
# Top-level folders and files of the checkout, less what runs create.
TOP = {p.name for p in REPO.iterdir() if not p.name.startswith(".git")} - {".venv", "results", "resources", ".snakemake",
                                                                             ".pytest_cache"}
FILE_SUFFIXES = {"md", "py", "parquet", "yaml", "yml", "json", "smk", "sh", "txt", "onnx", "keras", "xml", "bin",
                 "tflite", "engine", "html", "png", "svg", "csv", "tsv", "log", "cache", "npy", "npz"}
PLACEHOLDER = re.compile(r"[<>*{}]|\.\.\.|…")
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def spans(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out += [(number, s) for s in re.findall(r"`([^`\n]+)`", line)]
    return out


def defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assigned names of a Python file (methods of its classes too)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def python_target(dotted: list[str]) -> tuple[Path, list[str]] | None:
    """The module file a dotted name under workflow_scripts starts with, and the rest of the name."""
    for cut in range(len(dotted), 0, -1):
        base = REPO.joinpath(*dotted[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, dotted[cut:]
    return None


def module_by_name(dotted: list[str]) -> tuple[Path, list[str]] | None:
    """The module named ``dotted[0]`` in any package of workflow_scripts (docs name modules by their short
    name: ``device.CUDA_CORES`` is workflow_scripts/core/device.py), and the rest of the name."""
    matches = sorted(REPO.joinpath("workflow_scripts").rglob(f"{dotted[0]}.py"))
    return (matches[0], dotted[1:]) if len(matches) == 1 else None


def schema_has(keys: list[str]) -> bool:
    node = SCHEMA
    for key in keys:
        props = (node or {}).get("properties") or {}
        if key not in props:
            # Free-form maps (per-dataset batch sizes, per-rule resources) take any key.
            return bool((node or {}).get("additionalProperties")) or "patternProperties" in (node or {})
        node = props[key]
    return True


def problem(text: str) -> str | None:
    """Why the span ``text`` names nothing that exists, or None."""
    token = text.strip().split()[0] if text.strip() else ""
    if PLACEHOLDER.search(token) or token.startswith(("-", "$", "~")):
        return None
    if "/" in token and token.split("/")[0] in TOP and not token.startswith("http"):
        path, _, member = token.partition("::")
        target = REPO / path.rstrip("/")
        if not target.exists():
            return f"{path} does not exist"
        if member:
            name = member.split("::")[0].split("[")[0]
            if target.suffix == ".py" and name not in defined_names(target):
                return f"{path} defines no {name}"
            if target.suffix == ".smk" and not re.search(rf"\b(def|rule) {re.escape(name)}\b|\b{re.escape(name)} =",
                                                          target.read_text()):
                return f"{path} defines no {name}"
        return None
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+(\(\))?", token):
        return None
    dotted = token.removesuffix("()").split(".")
    if dotted[-1] in FILE_SUFFIXES:  # a file name (decision.md, export.parquet), not a dotted name
        return None
    if dotted[0] == "workflow_scripts":
        found = python_target(dotted)
        if found is None:
            return f"no module {token}"
        file, rest = found
        if rest and rest[0] not in defined_names(file):
            return f"{file.relative_to(REPO)} defines no {rest[0]}"
        return None
    if dotted[0] in SCHEMA["properties"]:
        if schema_has(dotted):
            return None
        found = module_by_name(dotted) or python_target(["workflow_scripts", *dotted])
        if found is not None and len(found[1]) < len(dotted) and (not found[1] or found[1][0] in defined_names(found[0])):
            return None
        if dotted[0] in registry.BACKENDS:  # a backend's options block shares its name with the runtime's package
            return None
        return f"{token} is neither a key of config/schema.yaml nor a name in workflow_scripts"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_file_module_and_config_key_a_doc_quotes_exists(doc):
    wrong = [f"{doc.name}:{line}: `{text}`: {why}" for line, text in spans(doc) if (why := problem(text))]
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_what_it_is_for():
    assert problem("rules/common.smk") is None and problem("rules/nothing.smk")
    assert problem("tests/test_config.py::test_no_such_test")
    assert problem("calibration.method") is None and problem("calibration.no_such_key")
    assert problem("export.export_onnx") is None and problem("export.no_such_function")
    assert problem("workflow_scripts.shims.provenance_of") is None and problem("workflow_scripts.shims.nope")
    assert problem("results/<device>/onnx/") is None  # placeholders are not checked


def test_no_documented_command_puts_a_target_right_after_configfile():
    """--configfile takes several files: a target written right after its files is read as one more config file."""
    wrong = []
    for doc in [*DOCS, REPO / "README.md", REPO / "config" / "README.md"]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in re.finditer(r"--configfile((?:\s+[^\s`-][^\s`]*)+)", line):
                files = match.group(1).split()
                if any("/" in f and not f.endswith((".yaml", ".yml")) and not f.startswith("#") for f in files):
                    wrong.append(f"{doc.name}:{number}: {line.strip()}")
    assert not wrong, "\n".join(wrong)


def test_every_rule_a_doc_names_exists():
    """"rule `x`" and "rules `x` / `y`" name rules of rules/*.smk (``<backend>`` stands for each backend)."""
    from tests.test_envs import parse_rules

    rules = {name.replace("{_name}", "<backend>") for name in parse_rules()}
    wrong = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in re.finditer(r"\brules? ((?:`[^`]+`(?:,? (?:/|and|or)? ?)?)+)", line):
                for name in re.findall(r"`([^`]+)`", match.group(1)):
                    if re.fullmatch(r"[\w<>]+", name) and name not in rules:
                        wrong.append(f"{doc.name}:{number}: rule `{name}`")
    assert not wrong, "\n".join(wrong)
