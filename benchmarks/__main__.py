"""Run the benchmarks and write `benchmarks/RESULTS.md`.

    python -m benchmarks all [--quick] [--device cpu|cuda]   # every benchmark module present, then RESULTS.md
                                                              # (no --device: CPU, then the GPU section if CUDA)
    python -m benchmarks NAME [ARGS...]                       # one benchmark (assignment, attention, ...)
    python -m benchmarks render                               # RESULTS.md from the JSON files already there

Each module `benchmarks/bench_<name>.py` has `main(argv) -> int` and writes `benchmarks/results/<name>.json`.
JSON convention (rendered as a table): `{"title": str, "goal": str | None, "rows": [dict, ...], "notes": [str]}`,
optionally `"tables": [<same shape>, ...]` for further tables. JSON files that do not follow it are rendered
generically: their own `markdown` string when they carry one, else each top-level list of dicts as a table and
top-level scalars as a list.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
# Run order: the cheap, independent questions first, the long model runs last-but-data.
BENCHMARKS = ("assignment", "attention", "step", "collator", "recipes")


# --------------------------------------------------------------------------------------------------------------
# Markdown rendering
# --------------------------------------------------------------------------------------------------------------


def format_cell(value: Any) -> str:
    """A table cell: 3 significant digits for floats, '—' for missing, compact JSON for containers."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, separators=(",", ":"), default=str)
        value = text if len(text) <= 80 else text[:77] + "..."
    # A pipe would end the cell; a newline would end the row.
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (dicts) as a Markdown table; columns in first-seen order across all rows."""
    if not rows:
        return "_(no rows)_\n"
    columns: list[str] = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(format_cell(column) for column in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def follows_convention(data: Any) -> bool:
    """True for `{"title": str, "rows": [dict...], ...}` JSON (goal and notes optional)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("title"), str)
        and isinstance(data.get("rows"), list)
        and all(isinstance(row, dict) for row in data["rows"])
    )


def _render_table_section(data: dict[str, Any], level: int) -> str:
    parts = [f"{'#' * level} {data['title']}\n"]
    if data.get("goal"):
        parts.append(f"Goal: {data['goal']}\n")
    parts.append(markdown_table(data["rows"]))
    notes = [note for note in data.get("notes") or [] if note]
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes) + "\n")
    return "\n".join(parts)


def render_generic(data: Any, name: str, level: int = 3) -> str:
    """A JSON that does not follow the convention: its own Markdown if it has one, else its lists and scalars."""
    title = name
    if isinstance(data, dict) and isinstance(data.get("benchmark"), str):
        title = data["benchmark"]
    parts = [f"{'#' * level} {title}\n"]
    if isinstance(data, dict) and isinstance(data.get("markdown"), str):
        parts.append(data["markdown"].strip() + "\n")
        return "\n".join(parts)
    if isinstance(data, list):
        data = {"results": data}
    if not isinstance(data, dict):
        parts.append(f"`{format_cell(data)}`\n")
        return "\n".join(parts)
    scalars = {
        key: value
        for key, value in data.items()
        if not isinstance(value, (dict, list)) and key != "benchmark"
    }
    if scalars:
        parts.append("\n".join(f"- {key}: {format_cell(value)}" for key, value in scalars.items()) + "\n")
    for key, value in data.items():
        if key == "machine":  # RESULTS.md has its own machine section
            continue
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            parts.append(f"{key}:\n\n" + markdown_table(value))
        elif isinstance(value, list):
            parts.append(f"- {key}: {format_cell(value)}\n")
        elif isinstance(value, dict) and value:
            parts.append(f"{key}:\n\n" + markdown_table([{"key": k, "value": v} for k, v in value.items()]))
    return "\n".join(parts)


def render_result(data: Any, name: str = "benchmark", level: int = 3) -> str:
    """Markdown for one benchmark's JSON: the convention's tables, or the generic rendering."""
    if not follows_convention(data):
        return render_generic(data, name, level)
    parts = [_render_table_section(data, level)]
    for table in data.get("tables") or []:
        if follows_convention(table):
            parts.append(_render_table_section(table, level))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Machine info
# --------------------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _git_revision() -> str | None:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return revision + (" (with uncommitted changes)" if dirty else "")


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, library versions, date and CUDA device: what a reader needs to weigh the numbers."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "cores available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "RAM (GiB)": _ram_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch threads": torch.get_num_threads(),
        "CUDA device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git": _git_revision(),
    }
    if hasattr(os, "getloadavg"):
        # The machine is shared: the load average says how noisy the absolute times are.
        info["load average (1/5/15 min)"] = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return info


@dataclass
class Run:
    """One benchmark run of `python -m benchmarks all`: what ran, how it ended, where its JSON is."""

    label: str  # "attention" or "attention (cuda)"
    status: str
    json_path: Path
    fresh_since: float | None = None  # JSON older than this (epoch seconds) is from an earlier run


def render_results_md(runs: Sequence[Run], machine: dict[str, Any]) -> str:
    """RESULTS.md: machine info, the status of each run, then each benchmark's tables from its JSON."""
    parts = [
        "# Benchmark results\n",
        "Generated by `python -m benchmarks`; methods in [README.md](README.md).\n",
        "## Machine\n",
        markdown_table([{"": key, "value": value} for key, value in machine.items()]),
        "## Runs\n",
        markdown_table([{"benchmark": run.label, "status": run.status} for run in runs]),
    ]
    for run in runs:
        path = run.json_path
        if not path.exists():
            continue
        parts.append(f"## {run.label}\n")
        where = path.relative_to(HERE) if path.is_relative_to(HERE) else path
        stale = run.fresh_since is not None and path.stat().st_mtime < run.fresh_since
        parts.append(f"From `{where}`" + (" (**stale**: written by an earlier run)" if stale else "") + ".\n")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            parts.append(f"_unreadable: {error}_\n")
            continue
        parts.append(render_result(data, run.label))
    if not any(run.label.endswith("(cuda)") for run in runs):
        parts.append("## GPU section\n")
        parts.append(
            "Not run (no CUDA device, or `--device cpu`): `python -m benchmarks all` adds it when CUDA is present.\n"
        )
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------


def _module(name: str) -> Any | None:
    """The benchmark module, or None when its file does not exist (yet)."""
    if not (HERE / f"bench_{name}.py").exists():
        return None
    return importlib.import_module(f"benchmarks.bench_{name}")


def supported_flags(module: Any) -> set[str]:
    """Which of --quick/--device the module's parser takes, read from its `--help` (no benchmark runs)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            module.main(["--help"])
        except SystemExit:
            pass
    return {flag for flag in ("--quick", "--device") if flag in out.getvalue()}


def run_one(name: str, argv: Sequence[str]) -> str:
    """Run `bench_<name>.main(argv)`; return a one-line status. Failures are caught and reported, not raised."""
    started = time.perf_counter()
    try:
        module = _module(name)
    except Exception as error:
        traceback.print_exc()
        return f"failed to import: {type(error).__name__}: {error}"
    if module is None:
        return "not present"
    print(f"== {name} {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
        code = module.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as error:
        traceback.print_exc()
        return f"failed after {time.perf_counter() - started:.0f} s: {type(error).__name__}: {error}"
    elapsed = time.perf_counter() - started
    if code not in (0, None):
        return f"exited with status {code} after {elapsed:.0f} s (its JSON may flag a failed check)"
    return f"ok ({elapsed:.0f} s, args: {' '.join(argv) or 'none'})"


def _plan(name: str, quick: bool, device: str) -> tuple[list[str] | None, Path, str]:
    """argv for one module on one device (None: skip, with the reason), its JSON path, and a status suffix."""
    default_json = RESULTS_DIR / f"{name}.json"
    module = _module(name)
    if module is None:
        return None, default_json, "not present"
    flags = supported_flags(module)
    argv: list[str] = []
    suffix = ""
    if quick:
        if "--quick" in flags:
            argv.append("--quick")
        else:
            suffix = " (no --quick option: full run)"
    if device == "cpu":
        if "--device" in flags:
            argv += ["--device", "cpu"]
        return argv, default_json, suffix
    if "--device" not in flags:
        return None, default_json, f"skipped: no --device option for {device}"
    argv += ["--device", device]
    json_path = default_json
    if "--out" in flags:  # keep the CPU results: the GPU run writes next to them
        json_path = RESULTS_DIR / f"{name}_cuda.json"
        argv += ["--out", str(json_path)]
    return argv, json_path, suffix


def run_all(quick: bool, devices: Sequence[str]) -> list[Run]:
    """Every benchmark present on each device, with the flags it takes; a failing one does not stop the others."""
    runs: list[Run] = []
    for device in devices:
        for name in BENCHMARKS:
            label = name if device == "cpu" else f"{name} ({device.split(':')[0]})"
            started = time.time()
            try:
                argv, json_path, suffix = _plan(name, quick, device)
            except Exception as error:
                runs.append(
                    Run(label, f"failed to import: {type(error).__name__}: {error}", RESULTS_DIR / "-")
                )
                continue
            if argv is None:
                runs.append(Run(label, suffix, json_path, fresh_since=started))
                continue
            runs.append(Run(label, run_one(name, argv) + suffix, json_path, fresh_since=started))
    return runs


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ("all", "render"):
        parser = argparse.ArgumentParser(prog=f"python -m benchmarks {command}")
        parser.add_argument(
            "--quick", action="store_true", help="pass --quick to the benchmarks that take it"
        )
        parser.add_argument(
            "--device", default=None, help="cpu or cuda only (default: cpu, then cuda when CUDA is present)"
        )
        parser.add_argument("--out", type=Path, default=RESULTS_MD, help="Markdown output path")
        args = parser.parse_args(rest)
        if command == "all":
            devices = [args.device] if args.device else ["cpu"] + (["cuda"] if _cuda_available() else [])
            runs = run_all(args.quick, devices)
        else:
            runs = [
                Run(path.stem.replace("_cuda", " (cuda)"), "from an earlier run", path)
                for name in BENCHMARKS
                for path in (RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}_cuda.json")
                if path.exists()
            ]
        args.out.write_text(render_results_md(runs, machine_info()))
        print(f"wrote {args.out}", file=sys.stderr)
        for run in runs:
            print(f"  {run.label}: {run.status}", file=sys.stderr)
        ok = ("ok", "not present", "from an earlier run", "skipped")
        return 0 if all(run.status.startswith(ok) for run in runs) else 1
    if command in BENCHMARKS:
        status = run_one(command, rest)
        print(f"{command}: {status}", file=sys.stderr)
        return 0 if status.startswith("ok") else 1
    print(
        f"unknown command {command!r}; expected all, render or one of {', '.join(BENCHMARKS)}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
