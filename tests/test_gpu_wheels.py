"""The GPU check's environment on a machine with a CUDA torch but no package index: the wheelhouse `make gpu-wheels`
fills (`benchmarks/gpu_wheels.py`) and the route of `benchmarks/gpu_check.sh` that installs it.

* The wheelhouse is the closure of the `test` extra at the installed (locked) versions plus `requirements/gpu.txt`,
  less torch and the libraries left to the machine; a package the machine was seen to hold is carried as soon as a
  requirement refuses the version seen.
* `pins.txt` is written only for a complete download; a folder of wheels the command did not fetch is refused.
* The install route puts the wheels first on `PYTHONPATH` for the torch interpreter, installs again only when the
  wheelhouse changed, never deletes a folder it did not make, and refuses in one line an environment that cannot
  import the project.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_wheels
from croc_testing.optional import needs_installed_project

pytestmark = pytest.mark.slow  # minutes of a worker: run first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


# --- what goes into the wheelhouse ----------------------------------------------------------------------------


@needs_installed_project
def test_the_wheelhouse_is_the_test_extras_closure_at_the_installed_versions():
    pins = gpu_wheels.wheelhouse_pins()
    # What the GPU check imports (the project's requirements, the test tools, mistral_common's tiny tokenizers) and
    # what those need in turn, down to packages the machine's image lacks.
    for name in ("transformers", "huggingface-hub", "accelerate", "peft", "datasets", "dill", "multiprocess", "lapx",
                 "mistral-common", "pydantic", "pydantic-core", "pytest", "pytest-xdist", "liger-kernel"):
        assert name in pins, name
    assert not set(pins) & set(gpu_wheels.MACHINE_PROVIDED)
    # Only the `test` extra: no other extra's packages, nothing of torch's own closure.
    for name in ("deepspeed", "lmms-eval", "matplotlib", "ruff", "sympy", "networkx", "triton"):
        assert name not in pins, name
    gpu_pins = gpu_wheels.gpu_requirements()
    for name, version in pins.items():
        assert version == (gpu_pins[name] if name in gpu_pins else metadata.version(name)), name


@needs_installed_project
def test_a_package_seen_on_the_machine_is_carried_once_a_requirement_refuses_its_version(monkeypatch):
    installed = metadata.version("tokenizers")
    accepted = gpu_wheels.project_closure()["tokenizers"][1]  # transformers' range
    assert accepted.contains(installed) and not accepted.contains("0.0.1")
    monkeypatch.setattr(gpu_wheels, "MACHINE_SEEN", {"tokenizers": installed})
    assert "tokenizers" not in gpu_wheels.wheelhouse_pins()
    monkeypatch.setattr(gpu_wheels, "MACHINE_SEEN", {"tokenizers": "0.0.1"})
    assert gpu_wheels.wheelhouse_pins()["tokenizers"] == installed


def test_a_gpu_requirement_that_is_not_one_pin_is_refused(tmp_path):
    path = tmp_path / "gpu.txt"
    path.write_text("# comment\nliger-kernel>=0.5\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="is not one `name==version` pin"):
        gpu_wheels.gpu_requirements(path)


# --- the download -----------------------------------------------------------------------------------------------


def _fake_download(missing: str | None = None):
    """A stand-in for `pip download`: one empty file per pin named like its wheel, less `missing`."""

    def run(command, check):
        out = Path(command[command.index("--dest") + 1])
        assert {"--no-deps", "--only-binary=:all:"} <= set(command)
        for pin in (word for word in command if "==" in word):
            name, version = pin.split("==")
            if name != missing:
                (out / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0)

    return run


@needs_installed_project
def test_pins_are_written_only_for_a_complete_wheelhouse(tmp_path, monkeypatch):
    out = tmp_path / "whl"
    monkeypatch.setattr(gpu_wheels.subprocess, "run", _fake_download(missing="transformers"))
    assert gpu_wheels.main(["--out", str(out)]) == 1
    assert not (out / gpu_wheels.PINS_FILE).exists()
    monkeypatch.setattr(gpu_wheels.subprocess, "run", _fake_download())
    (out / "transformers-0.0.1-py3-none-any.whl").write_bytes(b"")  # an earlier version: replaced
    assert gpu_wheels.main(["--out", str(out)]) == 0
    pins = gpu_wheels.wheelhouse_pins()
    assert (out / gpu_wheels.PINS_FILE).read_text(encoding="utf-8").split() == [f"{n}=={v}" for n, v in pins.items()]
    assert len(list(out.glob("*.whl"))) == len(pins)


@needs_installed_project
def test_a_folder_of_wheels_it_did_not_fetch_is_refused_and_kept(tmp_path, monkeypatch, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "private-1.0-py3-none-any.whl").write_bytes(b"mine")
    monkeypatch.setattr(gpu_wheels.subprocess, "run", _fake_download())
    assert gpu_wheels.main(["--out", str(out)]) == 2
    assert "did not fetch" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["private-1.0-py3-none-any.whl"]


def test_a_wheelhouse_is_complete_only_with_one_wheel_per_pin(tmp_path):
    folder = tmp_path / "whl"
    folder.mkdir()
    assert "has no pins.txt" in gpu_wheels.wheelhouse_problem(folder)
    (folder / gpu_wheels.PINS_FILE).write_text("croc-probe==1.0\n", encoding="utf-8")
    (folder / "croc_probe-1.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_wheels.wheelhouse_problem(folder) is None
    (folder / "croc_probe-0.9-py3-none-any.whl").write_bytes(b"")  # two versions would stop pip there
    assert "missing none, not pinned croc-probe==0.9" in gpu_wheels.wheelhouse_problem(folder)
    (folder / "croc_probe-0.9-py3-none-any.whl").unlink()
    (folder / "croc probe.whl").write_bytes(b"")
    assert gpu_wheels.wheelhouse_problem(folder) == "croc probe.whl is not a wheel's file name"


# --- the install route of gpu_check.sh ----------------------------------------------------------------------------


def _wheel(folder: Path, name: str, files: dict[str, str]) -> None:
    """A minimal valid wheel `name`-1.0 holding `files` (path -> text)."""
    dist_info = f"{name}-1.0.dist-info"
    entries = {**files, f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
               f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        for path, text in entries.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")


def _wheelhouse(folder: Path, wheels: dict[str, dict[str, str]]) -> Path:
    """A complete wheelhouse in `folder`: one wheel per entry (name -> its files) and `pins.txt`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, files in wheels.items():
        _wheel(folder, name, files)
    pins = "".join(f"{name.replace('_', '-')}==1.0\n" for name in wheels)
    (folder / gpu_wheels.PINS_FILE).write_text(pins, encoding="utf-8")
    return folder


PROBE = {"croc_probe": {"croc_probe/__init__.py": "SOURCE = 'wheelhouse'\n"}}


def _gpu_check(tmp_path: Path, wheels: Path, site: Path, *flags: str) -> subprocess.CompletedProcess:
    # No CROC_PYTHON and no .venv-gpu: on this CPU machine the wheelhouse route is taken for this interpreter.
    env = {key: value for key, value in os.environ.items() if not key.startswith("CROC_")}
    env.update(CROC_TORCH_PYTHON=sys.executable, CROC_WHEELS=str(wheels), CROC_GPU_SITE=str(site),
               CROC_GPU_VENV=str(tmp_path / "no-venv"), PIP_NO_INDEX="1")
    return subprocess.run(["bash", str(SCRIPT), *(flags or ("--install-only",))], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=300)


def _refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_the_wheelhouse_route_installs_once_and_puts_the_wheels_first(tmp_path):
    wheels, site = _wheelhouse(tmp_path / "whl", PROBE), tmp_path / "site"
    result = _gpu_check(tmp_path, wheels, site)
    assert result.returncode == 0, result.stderr
    assert f"(wheelhouse {wheels}: 1 wheels into {site})" in result.stderr
    assert f"environment ready: {sys.executable} with PYTHONPATH={site}:{REPO}" in result.stderr
    assert (site / "croc_probe" / "__init__.py").is_file()
    # The same wheelhouse and interpreter again: nothing is reinstalled (a reinstall would drop the file added).
    (site / "croc_probe" / "added.txt").write_text("kept", encoding="utf-8")
    assert _gpu_check(tmp_path, wheels, site).returncode == 0
    assert (site / "croc_probe" / "added.txt").is_file()
    # A changed wheelhouse: installed afresh, the earlier install cleared.
    _wheelhouse(wheels, {**PROBE, "croc_other": {"croc_other/__init__.py": ""}})
    assert _gpu_check(tmp_path, wheels, site).returncode == 0
    assert (site / "croc_other" / "__init__.py").is_file() and not (site / "croc_probe" / "added.txt").exists()
    # A dry run uses the installed wheelhouse (no `.venv` needed) and installs nothing.
    dry = _gpu_check(tmp_path, wheels, site, "--dry-run")
    assert dry.returncode == 0 and "dry run: plan consistent" in dry.stdout, dry.stderr


@pytest.mark.parametrize("flag", ["--help", "--bogus", "--budget=soon"])
def test_help_and_a_wrong_option_answer_before_anything_is_installed(tmp_path, flag):
    """`--help` used to go to the environment build like any other word (minutes and gigabytes, then a failure on a
    machine without a GPU); it prints the script's usage and the check's options, and a wrong option is refused by
    the check's own parser, both before anything is installed."""
    wheels, site = _wheelhouse(tmp_path / "whl", PROBE), tmp_path / "site"
    result = _gpu_check(tmp_path, wheels, site, flag)
    assert not site.exists() and not (tmp_path / "no-venv").exists()
    if flag == "--help":
        assert result.returncode == 0, result.stderr
        assert "bash benchmarks/gpu_check.sh --dry-run" in result.stdout and "--budget BUDGET" in result.stdout
        assert "set -euo" not in result.stdout
    else:
        assert _refusal(result).startswith("bash benchmarks/gpu_check.sh: error: ")


def test_a_wheelhouse_missing_a_pinned_wheel_is_refused_before_installing(tmp_path):
    wheels, site = _wheelhouse(tmp_path / "whl", PROBE), tmp_path / "site"
    (wheels / gpu_wheels.PINS_FILE).write_text("croc-probe==1.0\ntransformers==99.0\n", encoding="utf-8")
    assert _refusal(_gpu_check(tmp_path, wheels, site)) == (
        f"gpu_wheels: {wheels} does not hold one wheel per pin of its pins.txt: missing transformers==99.0, not "
        "pinned none (run `make gpu-wheels` again)")
    assert not any(site.iterdir())


def test_a_wheelhouse_that_breaks_the_project_is_refused_in_one_line(tmp_path):
    # A package of the project's imports shadowed by a broken copy: it comes first on PYTHONPATH.
    wheels = _wheelhouse(tmp_path / "whl", {"lap": {"lap/__init__.py": "raise ImportError('this lap is broken')\n"}})
    assert _refusal(_gpu_check(tmp_path, wheels, tmp_path / "site")) == (
        f"gpu_check: {sys.executable} with {wheels} cannot import the project: ImportError: this lap is broken")


@pytest.mark.parametrize("content", ["a file of the user's", "an older wheelhouse"])
def test_a_site_folder_it_did_not_make_is_refused_and_kept(tmp_path, content):
    wheels, site = _wheelhouse(tmp_path / "whl", PROBE), tmp_path / "site"
    if content == "an older wheelhouse":  # its pins.txt is not this script's mark
        _wheelhouse(site, PROBE)
    (site / "notes.txt").parent.mkdir(exist_ok=True)
    (site / "notes.txt").write_text("mine", encoding="utf-8")
    before = sorted(path.name for path in site.iterdir())
    assert "did not put there" in _refusal(_gpu_check(tmp_path, wheels, site))
    assert sorted(path.name for path in site.iterdir()) == before


@pytest.mark.parametrize("case", ["site is the wheelhouse", "no pins.txt", "dry run and install only"])
def test_contradictory_folders_and_flags_are_refused_in_one_line(tmp_path, case):
    wheels = _wheelhouse(tmp_path / "whl", PROBE)
    site, flags = tmp_path / "site", ("--install-only",)
    if case == "site is the wheelhouse":
        site = wheels
    elif case == "no pins.txt":
        (wheels / gpu_wheels.PINS_FILE).unlink()
    else:
        flags = ("--dry-run", "--install-only")
    message = _refusal(_gpu_check(tmp_path, wheels, site, *flags))
    assert message.startswith("gpu_check: ") and {
        "site is the wheelhouse": "is the wheelhouse itself", "no pins.txt": "holds no pins.txt",
        "dry run and install only": "give one of them"}[case] in message
    assert sorted(path.name for path in wheels.iterdir()) == sorted(
        ["croc_probe-1.0-py3-none-any.whl", *([gpu_wheels.PINS_FILE] if case != "no pins.txt" else [])])
