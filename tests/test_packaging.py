"""The install is honest: the runtime packages import only declared dependencies and no test fixture, the lock pins
every requirement inside its range, and nothing refers to files outside the repository."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools.config.setupcfg import read_configuration

from croc_testing.optional import needs_installed_project

REPO = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("modeling_croc", "trainer", "data_recipes")
CONFIG = read_configuration(str(REPO / "setup.cfg"))
INSTALL_REQUIRES = [Requirement(line) for line in CONFIG["options"]["install_requires"]]
EXTRAS = {name: [Requirement(line) for line in lines]
          for name, lines in CONFIG["options"]["extras_require"].items()}
# Installed with `pip install --no-deps` (their declared requirements cannot live beside the CPU torch wheel).
NO_DEPS = [Requirement(line) for line in (REPO / "requirements" / "no-deps.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
# Modules that exist only inside another tool, which imports them (never the package itself): the tool is imported
# at their module level. Host tool -> its distribution, or None for one installed from its repository.
TOOL_MODULES = {"modeling_croc/evaluation/lmms_eval_model.py": ("lmms_eval", "lmms-eval"),
                "modeling_croc/evaluation/vlmevalkit.py": ("vlmeval", None)}


def _names(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(requirement.name) for requirement in requirements}


def _third_party_imports(package: str) -> dict[str, set[str]]:
    """Top-level modules imported by `package`'s files -> {"module", "function"}: where the import statement sits
    (module level, or inside a function, i.e. only when that code runs)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / package).rglob("*.py"):
        host = TOOL_MODULES.get(path.relative_to(REPO).as_posix(), (None, None))[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        function_level = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                          for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in RUNTIME_PACKAGES or top in ("__future__", host):
                    continue
                found.setdefault(top, set()).add("function" if id(node) in function_level else "module")
    return found


def test_runtime_packages_import_no_fixture_test_tool_or_extra():
    """`import modeling_croc, trainer, data_recipes` (and the training entry) pulls in no test fixture, no
    test-only tokenizer source and nothing of the `demo` extra."""
    probe = ("import sys, modeling_croc, modeling_croc.evaluation, trainer, trainer.train, data_recipes; "
             "print(sorted(m for m in ('croc_testing', 'mistral_common', 'matplotlib', 'evaluate', 'pytest', "
             "'lmms_eval', 'vlmeval', 'decord', 'loguru') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_package_imports_a_module_it_runs_as_a_command():
    """`python -m trainer.model_card` warned (`RuntimeWarning: 'trainer.model_card' found in sys.modules after
    import of package 'trainer'`) on every call: the package imported it before runpy ran it as `__main__`, so it
    existed twice. No package's import may load one of its own command modules (`if __name__ == "__main__"`)."""
    packages = ("modeling_croc", "trainer", "data_recipes", "croc_testing", "demo", "benchmarks")
    probe = (f"import importlib, json, sys\nfor name in {packages!r}:\n    importlib.import_module(name)\n"
             "print(json.dumps({name: getattr(module, '__file__', None) for name, module in sys.modules.items()}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    commands = sorted(name for name, file in loaded.items()
                      if name.split(".")[0] in packages and file and Path(file).name != "__main__.py"
                      and '__name__ == "__main__"' in Path(file).read_text(encoding="utf-8"))
    assert commands == []


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_every_runtime_import_is_a_declared_dependency(package):
    """A module-level import must come from `install_requires` (a tool-only module may import its host tool); one
    inside a function (an optional feature) from `install_requires`, an extra or requirements/no-deps.txt."""
    distributions = importlib.metadata.packages_distributions()
    required = _names(INSTALL_REQUIRES)
    optional = set().union(*(_names(reqs) for reqs in EXTRAS.values()), _names(NO_DEPS))
    undeclared = []
    for module, where in sorted(_third_party_imports(package).items()):
        names = {canonicalize_name(name) for name in distributions.get(module, [module])}
        allowed = required | (optional if where == {"function"} else set())
        if not names & allowed:
            undeclared.append(f"{module} ({', '.join(sorted(where))}-level, distribution {sorted(names)})")
    assert not undeclared, f"{package} imports undeclared dependencies: {undeclared}"


def test_no_declared_dependency_goes_unused():
    """Every `install_requires` entry is imported by a runtime package, or is one of the few needed without an
    import statement (listed here with the reason)."""
    needed_without_import = {
        "accelerate",  # transformers' Trainer requires it
        "sentencepiece", "protobuf",  # loading Llama tokenizers that ship only tokenizer.model
    }
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for package in RUNTIME_PACKAGES:
        for module in _third_party_imports(package):
            imported |= {canonicalize_name(name) for name in distributions.get(module, [module])}
    unused = _names(INSTALL_REQUIRES) - imported - needed_without_import
    assert not unused, f"declared but never imported: {sorted(unused)}"


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_tool_modules_name_their_host_and_it_is_declared():
    """Each tool-only module imports its host tool, and a host that comes from PyPI is in requirements/no-deps.txt."""
    for module, (host, distribution) in TOOL_MODULES.items():
        assert host in (REPO / module).read_text(encoding="utf-8"), module
        if distribution is not None:
            assert canonicalize_name(distribution) in _names(NO_DEPS), distribution


def test_lock_pins_every_requirement_inside_its_range():
    pins = _lock()
    for requirement in INSTALL_REQUIRES + NO_DEPS + [req for reqs in EXTRAS.values() for req in reqs]:
        name = canonicalize_name(requirement.name)
        if name in ("flash-attn", "liger-kernel"):  # GPU-only extras: not in the CPU environment the lock describes
            continue
        assert name in pins, f"{requirement} is not pinned in requirements/lock.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} vs {requirement}"


@needs_installed_project
def test_installed_environment_matches_the_lock():
    """The environment running the suite is the locked one, except in the canary (`make test-latest`)."""
    pins = _lock()
    if os.environ.get("CROC_CANARY") == "1":
        # Unlocked on purpose, all but torch: the newest torch release is a multi-GB CUDA build.
        assert importlib.metadata.version("torch").split("+")[0] == pins["torch"], "the canary must keep torch pinned"
        pytest.skip("the canary environment is unlocked on purpose (torch checked: pinned)")
    mismatched = []
    for name, pinned in pins.items():
        # `version()` reads the first copy on sys.path: the environment's own, not a vendored one (setuptools
        # appends its `_vendor` folder, with older copies of packaging and wheel, to sys.path).
        installed = importlib.metadata.version(name).split("+")[0]
        if installed != pinned:
            mismatched.append(f"{name} {installed} (lock {pinned})")
    assert not mismatched, f"installed versions differ from requirements/lock.txt: {mismatched}"


def test_nothing_refers_outside_the_repository():
    outside = "../" + "shared"  # spelled in two parts so that this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    offenders = []
    for name in tracked.splitlines():
        path = REPO / name
        if path.suffix in {".py", ".md", ".yaml", ".cfg", ".toml", ".txt"} or path.name == "Makefile":
            if outside in path.read_text(encoding="utf-8", errors="ignore"):
                offenders.append(name)
    assert not offenders


def test_the_conversion_imports_go_one_way():
    """conversion -> loading -> convert, never back: no module of `modeling_croc.convert` imports the loader or the
    writers (the CLI entry, `__main__`, is the one that runs them)."""
    import ast

    for path in sorted((REPO / "modeling_croc" / "convert").glob("*.py")):
        if path.name == "__main__.py":
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                imported.add(("." * node.level) + (node.module or ""))
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        assert not {name for name in imported if name.endswith(("loading", "conversion"))}, (path.name, imported)
