"""Every rule's conda environment (envs/*.yaml) installs what the rule's script imports, and the project.

With ``snakemake --sdm conda`` each job runs its ``script:`` in the environment of its ``conda:``
directive, so a package missing there fails the job at import time. No conda is needed here: the
check is static.

The rule, for each rule of rules/*.smk (``use rule`` inherits script and environment; a rule whose
environment is its backend's, ``backend_env`` or the registry entry's ``env``, is checked once per
backend of ``workflow_scripts/core/registry.py``):

1. The code a job runs is found from its shim by an AST walk over ``workflow_scripts``: the shim's
   module-level code is reached; importing a module reaches its module-level code and its parent
   packages; a function or class is reached when reached code names it (``f``, ``module.f``, an
   imported name, a name in a dict of functions). Lazy imports inside a reached function count;
   those inside functions that no reached code names do not (a backend's TensorFlow import does
   not burden the plotting environment).
2. Imports in ``try: ... except ImportError`` are optional (the code says what to install) and do
   not count; ``__future__`` and the standard library never do.
3. Imports by computed name are listed in :data:`DYNAMIC`: the backend module (``registry.load``,
   for a backend-specific rule that backend's, for the runoff every CPU backend's, else the
   backends whose registry environment is the rule's), the dataset sources, the model builders.
   Such a module is used through attributes of a value, so all its functions and classes count.
4. Each third-party import is mapped to the distributions that provide it (:data:`PROVIDERS`;
   otherwise the import name with ``_`` as ``-``), and the environment must name one of them among
   its conda or pip dependencies. ``snakemake`` is exempt: Snakemake puts its own location on the
   script's ``sys.path``. pandas reads and writes Parquet through pyarrow, which it imports by
   itself, so an environment needing pandas needs pyarrow.

Each environment also installs the project itself (its ``.post-deploy.sh``, run by Snakemake in the
new environment from the working directory), and the versions it names agree with pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from workflow_scripts.core import registry

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "workflow_scripts"

# Import name -> the distributions (conda or PyPI names, normalized) any of which provides it.
PROVIDERS = {
    "yaml": {"pyyaml"},
    "sklearn": {"scikit-learn"},
    "PIL": {"pillow"},
    "markdown_it": {"markdown-it-py"},
    "pynvml": {"nvidia-ml-py", "pynvml"},
    "tensorflow": {"tensorflow", "tensorflow-cpu"},
    # Keras 3 comes with TensorFlow (tf.keras is keras).
    "keras": {"keras", "tensorflow", "tensorflow-cpu"},
    "tensorrt": {"tensorrt", "tensorrt-cu12", "tensorrt-cu13"},
    "google": {"protobuf"},
    # requests needs urllib3 (its retry classes are imported directly).
    "urllib3": {"urllib3", "requests"},
    "cuda": {"cuda-python"},
}
EXEMPT = {"snakemake"}
# A distribution another one needs at run time without being imported by our code.
IMPLIED = {"pandas": {"pyarrow"}}


def _backend_modules(names) -> set[str]:
    return {f"{PACKAGE}.backends.{registry.BACKENDS[n].module}" for n in names}


# (module, function) whose call imports a module by computed name -> what it may import; "BACKEND" is
# resolved per rule (point 3 of the module docstring).
DYNAMIC = {
    (f"{PACKAGE}.core.registry", "load"): "BACKEND",
    (f"{PACKAGE}.core.registry", "dataset_loader"): {f"{PACKAGE}.data.sources.{d.loader.partition(':')[0]}"
                                                for d in registry.DATASETS.values()},
    (f"{PACKAGE}.core.registry", "model_builder"): {f"{PACKAGE}.{m.builder.partition(':')[0]}"
                                               for m in registry.MODELS.values() if ":" in m.builder},
}
RUNOFF_ENV = "envs/latency_runoff.yaml"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- the code a job runs


def module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def module_name(path: Path) -> str:
    parts = list(path.resolve().relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _guarded_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``try`` blocks that catch ImportError/ModuleNotFoundError."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                caught |= {k.id for k in kinds if isinstance(k, ast.Name)}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


@dataclass
class Unit:
    """A module's top-level code, or one of its top-level functions or classes."""

    imports: list[tuple[str, str | None, str, int]] = field(default_factory=list)  # (module, attr, bound as, line)
    names: set[str] = field(default_factory=set)  # names read
    attributes: set[tuple[str, str]] = field(default_factory=set)  # name.attr read


class Module:
    """One parsed module of the package: its units and what its top-level names are bound to."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        tree = ast.parse(path.read_text(), filename=str(path))
        self.guarded = _guarded_nodes(tree)
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.units: dict[str | None, Unit] = {None: Unit()}
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.units[stmt.name] = self._unit(stmt)
            else:
                self._collect(stmt, self.units[None])
        # Names bound by the module's top-level imports.
        self.bindings = {bound: (mod, attr) for mod, attr, bound, _ in self.units[None].imports}

    def _resolve(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.package.split(".")
        base = base[:len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def _collect(self, root: ast.AST, unit: Unit) -> None:
        for node in ast.walk(root):
            if id(node) in self.guarded:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    target = alias.name if alias.asname else alias.name
                    unit.imports.append((target, None, bound, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(node)
                for alias in node.names:
                    unit.imports.append((base, alias.name, alias.asname or alias.name, node.lineno))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                unit.names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                unit.attributes.add((node.value.id, node.attr))

    def _unit(self, stmt: ast.AST) -> Unit:
        unit = Unit()
        self._collect(stmt, unit)
        return unit


_MODULES: dict[str, Module] = {}


def parsed(name: str) -> Module | None:
    if name not in _MODULES:
        path = module_file(name)
        if path is None:
            return None
        _MODULES[name] = Module(name, path)
    return _MODULES[name]


def reached_imports(roots: set[str], backend_modules: set[str]) -> dict[str, set[str]]:
    """Third-party top-level import names of the code reachable from modules ``roots`` -> where imported."""
    third: dict[str, set[str]] = {}
    seen: set[tuple[str, str | None]] = set()
    stack: list[tuple[str, str | None]] = [(r, None) for r in roots]

    def reach_module(name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            stack.append((".".join(parts[:i]), None))

    def reach_binding(module: str, attr: str | None, use: bool = True) -> None:
        """Reach what an import binds: the module (or submodule), and with ``use`` the named function."""
        if module.split(".")[0] != PACKAGE:
            return
        if attr is None:
            reach_module(module)
        elif parsed(f"{module}.{attr}") is not None:
            reach_module(f"{module}.{attr}")
        else:
            reach_module(module)
            if use:
                stack.append((module, attr))

    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        module = parsed(key[0])
        if module is None:
            continue
        if key[1] not in module.units:
            if key[1] in module.bindings:  # a re-exported name: follow it to where it is defined
                reach_binding(*module.bindings[key[1]])
            continue
        unit = module.units[key[1]]
        extra = DYNAMIC.get(key)
        for target in (backend_modules if extra == "BACKEND" else extra or ()):
            # Code reaches a module imported by computed name through attributes of a value
            # (module.build_engine): every function and class of it counts.
            reach_module(target)
            stack.extend((target, name) for name in (parsed(target).units if parsed(target) else ()))
        local = {bound: (mod, attr) for mod, attr, bound, _ in unit.imports}
        for mod, attr, _bound, line in unit.imports:
            top = mod.split(".")[0]
            if top == PACKAGE:
                # Importing runs the module's top level; a function it binds counts once code names it.
                reach_binding(mod, attr, use=False)
            elif top and top != "__future__" and top not in sys.stdlib_module_names and top not in EXEMPT:
                third.setdefault(top, set()).add(f"{module.path.relative_to(REPO)}:{line}")
        scope = {**module.bindings, **local}
        for name in unit.names:
            if name in scope:
                reach_binding(*scope[name])
            elif name in module.units:
                stack.append((module.name, name))
        for name, attr in unit.attributes:
            if name in scope and scope[name][1] is None:
                target = scope[name][0]
            elif name in scope and parsed(f"{scope[name][0]}.{scope[name][1]}") is not None:
                target = f"{scope[name][0]}.{scope[name][1]}"
            else:
                continue
            if target.split(".")[0] == PACKAGE:
                reach_binding(target, attr)
    return third


# --------------------------------------------------------------------------- rules and environments


# Environments named after a backend's role in the registry (rules/calibration_study.smk).
ROLE_ENVS = {"STUDY_ENV": registry.backend(registry.STUDY_BACKEND).env,
             "RESCUE_ENV": registry.backend(registry.RESCUE_BACKEND).env}


@dataclass
class Rule:
    name: str
    script: str | None = None
    conda: str | None = None  # a path relative to the repository, or "BACKEND"
    base: str | None = None


def _value(lines: list[str], i: int) -> str:
    """The value of the directive on line ``i``: the rest of the line, or the next line."""
    rest = lines[i].split(":", 1)[1].strip()
    return rest if rest else lines[i + 1].strip()


def parse_rules() -> dict[str, Rule]:
    """Every rule of rules/*.smk with its script and environment (``use rule`` resolved)."""
    rules: dict[str, Rule] = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        current: Rule | None = None
        indent = 0
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            depth = len(line) - len(line.lstrip())
            use = re.match(r"use rule (\w+) as (\w+) with:", stripped)
            plain = re.match(r"rule\s*(\w*)\s*:", stripped)
            if use or plain:
                current = Rule(use.group(2), base=use.group(1)) if use else Rule(plain.group(1))
                indent = depth
                if current.name:
                    rules[current.name] = current
                continue
            if current is not None and depth <= indent:
                current = None
            if current is None:
                continue
            if re.match(r"name\s*:", stripped) and not current.name:
                current.name = _value(lines, i).strip("f\"'")
                rules[current.name] = current
            elif re.match(r"conda\s*:", stripped):
                value = _value(lines, i)
                if value.startswith(("\"", "'")) and "{" not in value:
                    current.conda = str((smk.parent / value.strip("\"'")).resolve().relative_to(REPO))
                elif value == "backend_env" or "_entry.env" in value:
                    current.conda = "BACKEND"
                elif value in ROLE_ENVS:  # rules/calibration_study.smk: the env of a backend with a role
                    current.conda = ROLE_ENVS[value]
                else:
                    raise AssertionError(f"{smk.name}:{i + 1}: conda directive {value!r} is not understood by "
                                         "this test; teach parse_rules what it means")
            elif re.match(r"script\s*:", stripped):
                current.script = str((smk.parent / _value(lines, i).strip("\"'")).resolve().relative_to(REPO))
    for rule in rules.values():
        base = rules.get(rule.base) if rule.base else None
        while base is not None:
            rule.script = rule.script or base.script
            rule.conda = rule.conda or base.conda
            base = rules.get(base.base) if base.base else None
    return rules


def jobs() -> list[tuple[str, str, str, set[str]]]:
    """(rule, environment file, script, backend modules) for every rule and, where the environment is the
    backend's, every backend."""
    out = []
    for rule in parse_rules().values():
        assert rule.script, f"rule {rule.name} has no script: this test knows only script rules"
        assert rule.conda, f"rule {rule.name} has no conda directive"
        if "{_name}" in rule.name or rule.conda == "BACKEND":
            for name, entry in registry.BACKENDS.items():
                out.append((rule.name.replace("{_name}", name), rule.conda if rule.conda != "BACKEND" else entry.env,
                            rule.script, _backend_modules([name])))
        else:
            if rule.conda == RUNOFF_ENV:
                backends = [n for n, b in registry.BACKENDS.items() if not b.needs_gpu]
            else:
                backends = [n for n, b in registry.BACKENDS.items() if b.env == rule.conda]
            out.append((rule.name, rule.conda, rule.script, _backend_modules(backends)))
    return out


def env_requirements(env_file: str) -> dict[str, str]:
    """Normalized distribution name -> version specifier (pip syntax) of every dependency of ``env_file``."""
    spec = yaml.safe_load((REPO / env_file).read_text())
    out: dict[str, str] = {}
    for dep in spec.get("dependencies", []):
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if line.startswith("-"):
                    continue
                req = Requirement(line)
                out[normalize(req.name)] = str(req.specifier)
        else:
            name, version = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep).groups()
            # conda's "=3.11" means 3.11.*; ">=", "<" and "==" are as in pip.
            version = version.strip()
            out[normalize(name)] = f"=={version[1:]}.*" if re.match(r"=[^=]", version) else version
    return out


def missing_for(env_file: str, third: dict[str, set[str]]) -> list[str]:
    declared = set(env_requirements(env_file))
    missing = []
    needed = dict(third)
    for imported, implied in IMPLIED.items():
        if imported in third:
            for dist in implied:
                needed.setdefault(f"({dist})", {f"pandas reads and writes Parquet through {dist}"})
    for imported, where in sorted(needed.items()):
        if imported.startswith("("):
            providers = {imported.strip("()")}
        else:
            providers = PROVIDERS.get(imported, {normalize(imported)})
        if not providers & declared:
            missing.append(f"{imported} (install {' or '.join(sorted(providers))}; imported at "
                           f"{', '.join(sorted(where)[:3])})")
    return missing


JOBS = jobs()


def test_the_rule_parser_finds_every_rule_with_its_script_and_environment():
    names = {j[0] for j in JOBS}
    # A sample that would be missed if the parser lost dynamic names, use-rule inheritance or backend environments.
    assert {"build_engine_onnxruntime", "build_int8_engine_openvino", "benchmark_calibration_variant",
            "evaluate_nncf_rescue", "plot_figures", "prepare_dataset", "benchmark_latency_runoff"} <= names
    by_name = {j[0]: j for j in JOBS}
    assert by_name["build_engine_litert"][1] == "envs/litert.yaml"
    assert by_name["benchmark_calibration_variant"][2] == "workflow_scripts/shims/benchmark_latency.py"
    for _, env, script, _ in JOBS:
        assert (REPO / env).is_file(), env
        assert (REPO / script).is_file(), script


def test_the_walk_follows_lazy_imports_only_where_reached():
    plots = reached_imports({module_name(REPO / "workflow_scripts/shims/plot_figures.py")}, set())
    assert "matplotlib" in plots  # imported inside plots_base._pyplot, which every figure calls
    assert "tensorflow" not in plots and "onnxruntime" not in plots
    litert = reached_imports({module_name(REPO / "workflow_scripts/shims/build_engine.py")},
                             _backend_modules(["litert"]))
    assert {"ai_edge_litert", "tensorflow"} <= set(litert)


# Known gaps, each failing its case until fixed (strict: a fixed one passes and must leave this list).
KNOWN_GAPS: dict = {}  # (rule, env file) -> why the env lacks an import the rule reaches: none today


def _case(job):
    reason = KNOWN_GAPS.get(job[:2])
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(*job, marks=marks, id=f"{job[0]}-{Path(job[1]).stem}")


@pytest.mark.parametrize("rule, env, script, backends", [_case(j) for j in JOBS])
def test_each_rule_environment_installs_what_its_script_imports(rule, env, script, backends):
    third = reached_imports({module_name(REPO / script)}, backends)
    missing = missing_for(env, third)
    assert not missing, f"rule {rule}: {env} lacks {'; '.join(missing)}"


ENVS = sorted(str(p.relative_to(REPO)) for p in (REPO / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env", ENVS)
def test_each_environment_installs_the_project(env):
    """Snakemake runs ``<env>.post-deploy.sh`` inside the new environment from the working directory;
    it must install this checkout's package (without dependencies: the environment file lists them)."""
    script = REPO / env.replace(".yaml", ".post-deploy.sh")
    assert script.is_file(), f"{env} has no post-deploy script installing the project (workflow_scripts)"
    text = script.read_text()
    assert text.startswith("#!"), "Snakemake picks the interpreter from the shebang"
    assert re.search(r"pip install .*--no-deps", text) and "--editable" in text, text
    assert "workflow_scripts" in text  # it checks it is installing this checkout
    assert "pip" in env_requirements(env), f"{env} must install pip (the post-deploy script runs it)"


def test_environment_versions_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    pinned: dict[str, set[str]] = {}
    for line in lines:
        req = Requirement(line)
        if str(req.specifier):
            pinned.setdefault(normalize(req.name), set()).add(str(SpecifierSet(str(req.specifier))))
    disagreements = []
    for env in ENVS:
        for name, spec in env_requirements(env).items():
            if name in pinned and str(SpecifierSet(spec)) not in pinned[name]:
                disagreements.append(f"{env}: {name}{spec or ' (unpinned)'} vs pyproject {sorted(pinned[name])}")
    assert not disagreements, "\n".join(disagreements)


def test_the_environment_proposed_for_a_known_gap_covers_it():
    third = reached_imports({module_name(REPO / "workflow_scripts/shims/import_user_onnx.py")}, set())
    assert "tensorflow" in third and not missing_for("envs/tensorflow.yaml", third)
