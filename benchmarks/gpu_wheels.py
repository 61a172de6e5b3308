"""The wheelhouse for a GPU machine that has a CUDA PyTorch but no package index: `make gpu-wheels` here (where pip
reaches an index), carry the folder with the checkout, and `benchmarks/gpu_check.sh` installs from it there.

    python -m benchmarks.gpu_wheels [--out .whl] [--python-version 3.12]    # needs the package index
    python -m benchmarks.gpu_wheels --list                                   # what it would fetch; no download
    python -m benchmarks.gpu_wheels --verify .whl     # one wheel per pin, nothing else (gpu_check.sh runs it)

What goes in: the closure of the project's `test` extra at the versions of this environment (`make venv` installs
the lock's: the wheels are the tested versions), read from the installed packages' own metadata with the GPU
machine's Python in the markers, plus `requirements/gpu.txt` (liger-kernel, CUDA-only, so not in the CPU lock).
What stays out: torch, whose CUDA build the machine has and nothing may replace, and the large compiled libraries
every CUDA image holds (`MACHINE_PROVIDED`: numpy, scipy, pyarrow, pandas, pillow, 120 MiB of wheels the project
needs only at their floors); and the compiled packages a CUDA image of the GPU check was seen to hold at a version
every requirement on them accepts (`MACHINE_SEEN`, checked against the closure's specifiers each time). Everything
else is carried even where the machine has a copy, because an image's copy can be older than the pins need (the
image seen held transformers 5.17 and huggingface_hub 1.33). The GPU check installs the wheels with `--no-deps` into a folder put first on `PYTHONPATH`,
so the machine's torch and libraries stay as they are, and refuses, in one line, an environment that cannot import
the project.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
PROJECT = "croc-transformers"
GPU_REQUIREMENTS = REPO / "requirements" / "gpu.txt"
DEFAULT_OUT = REPO / ".whl"
# Written into the wheelhouse once it is complete: the pins, one per line (`benchmarks/gpu_check.sh` looks for it).
PINS_FILE = "pins.txt"
# Marks a folder this command fills: only there does it delete wheels (an earlier or unfinished wheelhouse's).
OWNED_FILE = ".gpu_wheels"
# The Python of the CUDA image the GPU check has run on (python 3.12.3 in RESULTS-gpu.md's machine table).
DEFAULT_PYTHON_VERSION = "3.12"
# Wheels pip may take for an x86-64 Linux machine; pip matches each glibc tag exactly, so the common ones are named.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
MACHINE_PROVIDED = {
    "torch": "the machine's CUDA build, never replaced",
    "numpy": "large compiled library every CUDA image holds",
    "scipy": "large compiled library every CUDA image holds",
    "pyarrow": "large compiled library every CUDA image holds",
    "pandas": "large compiled library every CUDA image holds",
    "pillow": "large compiled library every CUDA image holds",
}
# Compiled packages at the versions a CUDA image of the GPU check held (its pip list, 2026-11): left to the machine
# while every requirement on them in the closure accepts that version (about 6 MiB of wheels).
MACHINE_SEEN = {"tokenizers": "0.23.2", "safetensors": "0.8.0", "tiktoken": "0.14.0", "sentencepiece": "0.2.2"}
# The device tool sends at most 64 MiB with a checkout (about 5 MiB of its own): the wheelhouse stays below this.
DEFAULT_MAX_MIB = 56.0


def marker_environment(python_version: str) -> dict[str, str]:
    """The environment markers are evaluated in: the GPU machine's (Linux, x86-64, CPython `python_version`)."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def _applies(requirement: Requirement, environment: dict[str, str], extras: Iterable[str]) -> bool:
    """Whether a requirement holds in `environment` for a package installed with `extras`."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))


def project_closure(extras: Sequence[str] = ("test",), python_version: str = DEFAULT_PYTHON_VERSION,
                    project: str = PROJECT) -> dict[str, tuple[str, SpecifierSet]]:
    """Every package the installed `project` with `extras` needs on the GPU machine, by canonical name: the version
    installed here and every specifier the closure puts on it. torch and its own dependencies are not followed (the
    machine's torch is used)."""
    environment = marker_environment(python_version)
    versions: dict[str, str] = {}
    specifiers: dict[str, SpecifierSet] = {}
    followed: set[tuple[str, frozenset[str]]] = set()
    try:
        requirements = metadata.requires(project) or []
    except metadata.PackageNotFoundError:
        raise SystemExit(f"gpu_wheels: {project} is not installed in this environment (the wheelhouse is its "
                         "installed closure): run `make venv` first") from None
    pending = [requirement for requirement in map(Requirement, requirements)
               if _applies(requirement, environment, extras)]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        specifiers[name] = specifiers.get(name, SpecifierSet()) & requirement.specifier
        key = (name, frozenset(requirement.extras))
        if name == "torch" or key in followed:
            continue
        followed.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            here = f"{sys.version_info.major}.{sys.version_info.minor}"
            fix = ("run `make venv` first" if python_version == here else
                   f"it is needed on Python {python_version} only; build the wheelhouse from a Python "
                   f"{python_version} environment of the project")
            raise SystemExit(f"gpu_wheels: {name} (needed by the `{','.join(extras)}` extra) is not installed here; "
                             f"{fix}") from None
        versions[name] = distribution.version
        pending += [needed for needed in map(Requirement, distribution.requires or [])
                    if _applies(needed, environment, requirement.extras)]
    return {name: (version, specifiers[name]) for name, version in versions.items()}


def gpu_requirements(path: Path = GPU_REQUIREMENTS) -> dict[str, str]:
    """The pins of `requirements/gpu.txt` (`name==version` lines), by canonical name."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(versions) != 1:
            raise SystemExit(f"gpu_wheels: {path}: {line!r} is not one `name==version` pin")
        pins[canonicalize_name(requirement.name)] = versions[0]
    return pins


def wheelhouse_pins(python_version: str = DEFAULT_PYTHON_VERSION) -> dict[str, str]:
    """What `make gpu-wheels` fetches: the `test` closure and the GPU pins, less `MACHINE_PROVIDED` and the
    `MACHINE_SEEN` packages whose seen version every requirement on them accepts."""
    closure = project_closure(("test",), python_version)
    pins = {name: version for name, (version, _) in closure.items()} | gpu_requirements()
    left_out = set(MACHINE_PROVIDED) | {name for name, seen in MACHINE_SEEN.items()
                                        if name in closure and closure[name][1].contains(seen, prereleases=True)}
    return {name: version for name, version in sorted(pins.items()) if name not in left_out}


def download_command(pins: dict[str, str], out: Path, python_version: str) -> list[str]:
    """`pip download` of exactly these pins as binary wheels for the GPU machine, each without its requirements
    (the closure already lists every one that is carried)."""
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    return [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp", *platforms, "--dest", str(out),
            *(f"{name}=={version}" for name, version in pins.items())]


def wheelhouse_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete wheelhouse (`pins.txt` and exactly one wheel per pin, of that version, and no
    other wheel), or None."""
    pins_file = folder / PINS_FILE
    if not pins_file.is_file():
        return f"{folder} has no {PINS_FILE}: an unfinished wheelhouse (run `make gpu-wheels` again)"
    pins = {}
    for line in pins_file.read_text(encoding="utf-8").split():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    wheels: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.whl")):
        try:
            name, version, *_ = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            return f"{path.name} is not a wheel's file name"
        wheels.setdefault(name, []).append(str(version))
    missing = sorted(f"{name}=={version}" for name, version in pins.items() if version not in wheels.get(name, []))
    extra = sorted(f"{name}=={version}" for name, versions in wheels.items() for version in versions
                   if pins.get(name) != version)
    if missing or extra:
        return (f"{folder} does not hold one wheel per pin of its {PINS_FILE}: missing {_few(missing)}, not pinned "
                f"{_few(extra)} (run `make gpu-wheels` again)")
    return None


def _few(items: list[str], shown: int = 4) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def folder_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.glob("*.whl")) / 2**20


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the wheelhouse folder (default: .whl)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON_VERSION,
                        help="the GPU machine's Python, major.minor (default: %(default)s)")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB,
                        help="refuse a wheelhouse larger than this (default: %(default)s MiB)")
    parser.add_argument("--list", action="store_true", help="print the pins it would fetch, download nothing")
    parser.add_argument("--verify", type=Path, metavar="DIR",
                        help="check that DIR holds one wheel per pin of its pins.txt and nothing else; fetch nothing")
    args = parser.parse_args(argv)
    if args.verify is not None:
        problem = wheelhouse_problem(args.verify)
        if problem:
            print(f"gpu_wheels: {problem}", file=sys.stderr)
            return 2
        return 0
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version {args.python_version!r}: give the machine's CPython as 3.N")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    pins = wheelhouse_pins(args.python_version)
    if args.list:
        print("\n".join(f"{name}=={version}" for name, version in pins.items()))
        return 0
    pins_file, owned = args.out / PINS_FILE, args.out / OWNED_FILE
    if any(args.out.glob("*.whl")) and not owned.is_file():
        print(f"gpu_wheels: {args.out} holds wheels this command did not fetch (no {OWNED_FILE}); choose another "
              "--out", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    owned.touch()
    pins_file.unlink(missing_ok=True)
    for path in args.out.glob("*.whl"):  # an earlier wheelhouse's: two versions of a package stop the install
        path.unlink()
    subprocess.run(download_command(pins, args.out, args.python_version), check=True)
    size = folder_mib(args.out)
    wheels = sorted(path.name for path in args.out.glob("*.whl"))
    if len(wheels) != len(pins):
        print(f"gpu_wheels: {len(wheels)} wheels for {len(pins)} pins in {args.out}", file=sys.stderr)
        return 1
    if size > args.max_mib:
        print(f"gpu_wheels: {args.out} holds {size:.1f} MiB, more than --max-mib {args.max_mib:g}", file=sys.stderr)
        return 1
    # Written last: its presence says the wheelhouse is complete (the GPU check looks for it).
    pins_file.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()), encoding="utf-8")
    print(f"{args.out}: {len(wheels)} wheels, {size:.1f} MiB, for CPython {args.python_version} on x86-64 Linux; "
          f"left to the machine: {', '.join([*MACHINE_PROVIDED, *sorted(set(MACHINE_SEEN) - set(pins))])}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
