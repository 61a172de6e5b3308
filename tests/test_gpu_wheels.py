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

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


# --- what goes into the wheelhouse ----------------------------------------------------------------------------


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


def test_a_folder_of_wheels_it_did_not_fetch_is_refused_and_kept(tmp_path, monkeypatch, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "private-1.0-py3-none-any.whl").write_bytes(b"mine")
    monkeypatch.setattr(gpu_wheels.subprocess, "run", _fake_download())
    assert gpu_wheels.main(["--out", str(out)]) == 2
    assert "did not fetch" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["private-1.0-py3-none-any.whl"]


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


def _wheelhouse(tmp_path: Path, name: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A complete wheelhouse of one wheel (`pins.txt` included) and the site folder to install it into."""
    wheels, site = tmp_path / "whl", tmp_path / "site"
    wheels.mkdir()
    _wheel(wheels, name, files)
    (wheels / gpu_wheels.PINS_FILE).write_text(f"{name.replace('_', '-')}==1.0\n", encoding="utf-8")
    return wheels, site


def _install_only(tmp_path: Path, wheels: Path, site: Path) -> subprocess.CompletedProcess:
    # No CROC_PYTHON and no .venv-gpu: on this CPU machine the wheelhouse route is taken for this interpreter.
    env = {key: value for key, value in os.environ.items() if not key.startswith("CROC_")}
    env.update(CROC_TORCH_PYTHON=sys.executable, CROC_WHEELS=str(wheels), CROC_GPU_SITE=str(site),
               CROC_GPU_VENV=str(tmp_path / "no-venv"), PIP_NO_INDEX="1")
    return subprocess.run(["bash", str(SCRIPT), "--install-only"], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_wheelhouse_route_installs_once_and_puts_the_wheels_first(tmp_path):
    wheels, site = _wheelhouse(tmp_path, "croc_probe", {"croc_probe/__init__.py": "SOURCE = 'wheelhouse'\n"})
    result = _install_only(tmp_path, wheels, site)
    assert result.returncode == 0, result.stderr
    assert f"(wheelhouse {wheels}: 1 wheels into {site})" in result.stderr
    assert f"environment ready: {sys.executable} with PYTHONPATH={site}:{REPO}" in result.stderr
    assert (site / "croc_probe" / "__init__.py").is_file()
    # The same wheelhouse again: nothing is installed (the wheel could not be read now), the folder is reused.
    (wheels / "croc_probe-1.0-py3-none-any.whl").unlink()
    again = _install_only(tmp_path, wheels, site)
    assert again.returncode == 0, again.stderr
    assert (site / "croc_probe" / "__init__.py").is_file()


def test_a_wheelhouse_that_breaks_the_project_is_refused_in_one_line(tmp_path):
    # A package of the project's imports shadowed by a broken copy: it comes first on PYTHONPATH.
    wheels, site = _wheelhouse(tmp_path, "lap", {"lap/__init__.py": "raise ImportError('this lap is broken')\n"})
    result = _install_only(tmp_path, wheels, site)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"gpu_check: {sys.executable} with {wheels} cannot import the project: ImportError: this lap is broken")


def test_a_site_folder_it_did_not_make_is_refused_and_kept(tmp_path):
    wheels, site = _wheelhouse(tmp_path, "croc_probe", {"croc_probe/__init__.py": ""})
    site.mkdir()
    (site / "notes.txt").write_text("mine", encoding="utf-8")
    result = _install_only(tmp_path, wheels, site)
    assert result.returncode == 2
    assert "was not made by this script" in result.stderr
    assert [path.name for path in site.iterdir()] == ["notes.txt"]
