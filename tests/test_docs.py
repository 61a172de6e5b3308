"""Docs that cannot go stale: README.md and docs/*.md read as a newcomer reads them, against the repository.

* Every command of a fenced shell block exists: `python -m MODULE` (also under `torchrun` / `accelerate
  launch`) answers `MODULE --help` with status 0, offline, and a subcommand its argparse help lists is one of
  its choices; `make TARGET` is a Makefile target; a script run with `bash` exists; a repository path an
  argument names exists; any other program is one of `EXTERNAL_PROGRAMS`.
* What a documented training run reads (its config's model folder and data) is written by a documented
  command.
* Every relative link and image resolves to a file.
* The numbers quoted from the committed demo reports are the reports' (read from their `metrics.json` and
  `timings.json`), and the GPU-check status is `benchmarks/RESULTS-gpu.md`'s.
* Every docs page opens with a paragraph saying what it is for, and the README's map links every page.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmarks.gpu_check import plan as gpu_check_plan

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOC_PAGES = sorted((REPO / "docs").glob("*.md"))
DOCS = [README, *DOC_PAGES]
DEFAULT_REPORT = REPO / "docs" / "demo_report"
SEEDS_REPORT = REPO / "docs" / "demo_report_3seeds"
RESULTS_GPU = REPO / "benchmarks" / "RESULTS-gpu.md"
MAP_HEADING = "## Documentation"
GPU_STATUS_MARKER = "GPU check status"

SHELL_FENCES = ("bash", "sh", "shell", "console")
# Programs the docs may call that are not this repository's: installers, launchers, the Hub CLI, Slurm, shell
# builtins. Anything else is a typo or a command that no longer exists.
EXTERNAL_PROGRAMS = frozenset({
    "pip", "pip3", "git", "hf", "huggingface-cli", "lmms-eval", "sbatch", "srun", "scontrol", "squeue",
    "torchrun", "accelerate", "deepspeed", "unzip", "tar", "wget", "curl", "nvidia-smi", "tensorboard",
    "cd", ".", "source", "export", "set", "trap", "wait", "kill", "true", "echo", "head", "tail", "cat",
    "ls", "mkdir", "rm", "cp", "mv", "tee", "env", "bash", "sh",
})
PYTHON = re.compile(r"python(3(\.\d+)*)?")
# Top-level folders of this repository: an argument starting with one of them names a file that must exist.
REPO_FOLDERS = ("benchmarks", "croc_testing", "data_recipes", "demo", "docs", "modeling_croc", "requirements",
                "tests", "trainer")
SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")"})
REPO_PATH = re.compile(rf"(?:{'|'.join(REPO_FOLDERS)})/[\w./-]+")
REDIRECTIONS = frozenset({">", ">>", "<", ">&", "&>", "2>"})
NOT_RUN = re.compile(r"\b(?:has|have|was|were) not (?:yet )?(?:been )?run\b|\bno GPU was available\b", re.I)


def _normalised(text: str) -> str:
    """The docs write minus signs as U+2212; the reports and Python write '-'."""
    return text.replace("\u2212", "-")


# ---- reading the docs ----

@dataclass(frozen=True)
class Command:
    """One simple command of a fenced shell block: its words, without prompt, comments and `VAR=` prefixes."""

    doc: Path
    line: int
    words: tuple[str, ...]

    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}: {shlex.join(self.words)}"

    @property
    def program(self) -> str:
        return self.words[0]

    def module(self) -> tuple[str, list[str]] | None:
        """The module a `python -m` / launcher `-m` command runs, and the arguments after it."""
        if "-m" not in self.words:
            return None
        at = self.words.index("-m")
        return (self.words[at + 1], list(self.words[at + 2:])) if at + 1 < len(self.words) else None

    def values(self) -> Iterator[str]:
        """Every argument, and the value of every `--key=value`."""
        for word in self.words[1:]:
            yield word
            if word.startswith("-") and "=" in word:
                yield word.split("=", 1)[1]


def shell_blocks(doc: Path) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first content line, lines) of every fenced block."""
    language, start, lines = None, 0, []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and language is None:
            language, start, lines = fence.group(1) or "text", number + 1, []
        elif fence:
            yield language, start, lines
            language = None
        elif language is not None:
            lines.append(line)


def _logical_lines(language: str, start: int, lines: list[str]) -> Iterator[tuple[int, str]]:
    """Backslash continuations joined, comment lines dropped; in `console` blocks only the `$ ` lines."""
    pending, first = "", start
    for number, line in enumerate(lines, start=start):
        text = line.strip()
        if not pending:
            first = number
            if language == "console":
                if not text.startswith("$ "):
                    continue
            text = text.removeprefix("$ ")
            if not text or text.startswith("#"):
                continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        yield first, pending + text
        pending = ""
    if pending:
        yield first, pending


def _split_commands(doc: Path, line: int, text: str) -> Iterator[Command]:
    """The simple commands of one logical line, and recursively those of `$(...)`, `bash -c '...'` and
    `trap '...'` bodies."""
    for inner in re.findall(r"\$\(([^()]*)\)", text):
        yield from _split_commands(doc, line, inner)
    text = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    tokens = iter(list(lexer) + [";"])
    for token in tokens:
        if token in REDIRECTIONS:
            next(tokens, None)
        elif token not in SEPARATORS:
            words.append(token)
            continue
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words.pop(0)
        if not words:
            continue
        for at, word in enumerate(words[:-1]):
            if word == "-c" and at and Path(words[at - 1]).name in ("bash", "sh"):
                yield from _split_commands(doc, line, words[at + 1])
        if words[0] == "trap" and len(words) > 1:
            yield from _split_commands(doc, line, words[1])
        yield Command(doc, line, tuple(words))
        words = []


def documented_commands(docs: list[Path] = DOCS) -> list[Command]:
    commands = []
    for doc in docs:
        for language, start, lines in shell_blocks(doc):
            if language in SHELL_FENCES:
                for line, text in _logical_lines(language, start, lines):
                    commands.extend(_split_commands(doc, line, text))
    return commands


def _launched_module(command: Command) -> tuple[str, list[str]] | None | bool:
    """The module a command runs (`python -m`, `torchrun -m`, `accelerate launch -m`) and its arguments; None
    when a Python launcher runs no module; False for any other program."""
    name = Path(command.program).name
    if PYTHON.fullmatch(name) or name == "torchrun" or command.words[:2] == ("accelerate", "launch"):
        return command.module()
    return False


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {match.group(1) for match in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


# Runs `python -m MODULE --help` for every module named on its command line, each in its own forked process
# (so no module of this repository is imported before the module under test imports it), after importing once
# the third-party libraries they all import (torch, transformers' model and processor bases, datasets: ~4 s of
# each module's start). Prints one JSON line: {module: {"status": ..., "output": ...}}.
HELP_RUNNER = r"""
import json, os, runpy, sys, traceback
import datasets, torch, transformers.modeling_utils, transformers.processing_utils  # noqa: F401

results = {}
for module in sys.argv[1:]:
    sys.stdout.flush(); sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read); os.dup2(write, 1); os.dup2(write, 2)
        sys.argv, code = [module, "--help"], 0
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:  # as the interpreter does: None is 0, a message is printed with status 1
            if not isinstance(stop.code, (int, type(None))):
                print(stop.code, file=sys.stderr)
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    os.close(write)
    with os.fdopen(read, errors="replace") as pipe:
        output = pipe.read()
    results[module] = {"status": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "output": output}
print("\n" + json.dumps(results))
"""


def help_of(modules: list[str]) -> dict[str, dict]:
    """{module: {"status": exit status of `python -m module --help`, "output": its stdout and stderr}}."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    result = subprocess.run([sys.executable, "-c", HELP_RUNNER, *modules], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    found = documented_commands()
    assert len(found) > 50  # the README and the pages do show their commands
    return found


# ---- commands ----

def test_every_documented_program_exists(commands):
    targets = makefile_targets()
    problems = []
    for command in commands:
        launched = _launched_module(command)
        name = Path(command.program).name
        if launched is None:
            problems.append(f"{command.where()}: runs no module (`-m MODULE`)")
        elif launched is False and name == "make":
            problems += [f"{command.where()}: no Makefile target {word!r}" for word in command.words[1:]
                         if not word.startswith("-") and "=" not in word and word not in targets]
        elif launched is False and name in ("bash", "sh") and "-c" not in command.words[1:2]:
            if len(command.words) > 1 and not (REPO / command.words[1]).is_file():
                problems.append(f"{command.where()}: no script {command.words[1]}")
            continue
        elif launched is False and command.program not in EXTERNAL_PROGRAMS:
            problems.append(f"{command.where()}: unknown program {command.program!r} (neither this "
                            "repository's nor in EXTERNAL_PROGRAMS)")
        problems += [f"{command.where()}: {value} does not exist" for value in command.values()
                     if re.fullmatch(REPO_PATH, value) and not (REPO / value).exists()]
    assert not problems, "\n".join(problems)


# Documented modules of optional installs (requirements/no-deps.txt, the `deepspeed` extra).
OPTIONAL_MODULES = {"lmms_eval", "deepspeed"}


def test_every_documented_module_answers_help(commands):
    """`python -m MODULE --help` exits 0 for each distinct module, and a subcommand the docs pass is one of
    the choices the module's argparse help lists."""
    modules: dict[str, list[Command]] = {}
    for command in commands:
        launched = _launched_module(command)
        if launched:
            modules.setdefault(launched[0], []).append(command)
    helps = help_of(sorted(modules))
    problems = []
    for module, uses in modules.items():
        if module.split(".")[0] in OPTIONAL_MODULES and importlib.util.find_spec(module.split(".")[0]) is None:
            continue  # an extra this environment does not hold (the `test` extra alone: the GPU check's)
        status, output = helps[module]["status"], helps[module]["output"]
        if status != 0:
            tail = (output.strip().splitlines() or ["no output"])[-1]
            problems.append(f"{uses[0].where()}: `python -m {module} --help` exited {status}: {tail}")
            continue
        choices = re.search(r"^positional arguments:\n\s+\{([^}]+)\}", output, re.M)
        for command in uses if choices else []:
            arguments = command.module()[1]
            if arguments and arguments[0][0] != "-" and arguments[0] not in choices.group(1).split(","):
                problems.append(f"{command.where()}: {module} has no command {arguments[0]!r} "
                                f"(it has {choices.group(1)})")
    assert not problems, "\n".join(problems)


def _config_run(command: Command) -> tuple[Path, dict] | None:
    """A `trainer.train` run: its config file and the config with the command's overrides applied."""
    launched = _launched_module(command)
    if not launched or launched[0] != "trainer.train" or not launched[1][:1]:
        return None
    if not launched[1][0].endswith(".yaml"):
        return None
    path = REPO / launched[1][0]
    if not path.is_file():  # reported by test_every_documented_program_exists
        return None
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for word in launched[1][1:]:
        if word.startswith("--") and "=" in word:
            key, value = word[2:].split("=", 1)
            section, _, field = key.rpartition(".")
            target = config.setdefault(section, {}) if section else config
            target[field] = yaml.safe_load(value)
    return path, config


def test_documented_training_runs_read_what_documented_commands_write(commands):
    """A config's model folder and data are written by a command the docs show (or are the output of a
    documented run): the docs that run `cpu_tiny/stage1.yaml` also show how its `tiny_out/stage0` is made."""
    runs = [(command, run) for command in commands if (run := _config_run(command))]
    assert runs
    written = {value for command in commands if not _config_run(command) for value in command.values()}
    written |= {run[1].get("output_dir") for _, run in runs}
    problems = []
    for command, (path, config) in runs:
        inputs = [(config.get("model") or {}).get("name_or_path"), (config.get("data") or {}).get("path")]
        for needed in filter(None, inputs):
            if not any(needed == made or needed.startswith(f"{made}/") for made in written if made):
                problems.append(f"{command.where()}: {path.relative_to(REPO)} reads {needed}, which no "
                                "documented command writes")
    assert not problems, "\n".join(problems)


# ---- links, openings, the map ----

def _prose(doc: Path) -> str:
    """The doc without fenced blocks and inline code (a link inside code is not a link)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(encoding="utf-8"), flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "``", text)


def _links(text: str) -> Iterator[str]:
    for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)", text):
        target = match.group(1)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
            yield target.split("#", 1)[0]


def test_relative_links_and_images_resolve():
    problems = [f"{doc.relative_to(REPO)}: link to {target} does not exist"
                for doc in DOCS for target in _links(_prose(doc)) if not (doc.parent / target).exists()]
    assert not problems, "\n".join(problems)


# Constant-style names the docs use that are not this repository's: VLMEvalKit's, the OS's, another library's
# environment variable, a loss term written as a name.
EXTERNAL_CONSTANTS = frozenset({"DATASET_TYPE", "O_EXCL", "WANDB_API_KEY", "L_DCG"})
CONSTANT = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")


def test_every_documented_constant_is_defined():
    """A constant the docs send the reader to (`CROC_PRESETS`, `REJECT_REASONS`, ...) is assigned somewhere in the
    repository's code: METHOD.md once named a `PRESET_OPTIMIZER_DEFAULTS` that no code had."""
    code = "\n".join(path.read_text(encoding="utf-8") for folder in REPO_FOLDERS if folder not in ("docs", "tests")
                     for path in (REPO / folder).rglob("*.py"))
    problems = [f"{doc.relative_to(REPO)}: `{name}` is assigned nowhere in the code"
                for doc in DOCS for name in sorted(set(CONSTANT.findall(doc.read_text(encoding="utf-8"))))
                if name not in EXTERNAL_CONSTANTS and not re.search(rf"^\s*{name}\s*(:[^=\n]*)?=", code, re.M)]
    assert not problems, "\n".join(problems)


def test_every_docs_page_says_what_it_is_for_and_is_on_the_map():
    text = README.read_text(encoding="utf-8")
    assert MAP_HEADING in text, f"README.md has no map of the docs ({MAP_HEADING!r})"
    section = text.split(MAP_HEADING, 1)[1].split("\n## ", 1)[0]
    on_map = {(REPO / target).resolve() for target in _links(section)}
    problems = [f"{page.relative_to(REPO)} is not on the README's map" for page in DOC_PAGES
                if page.resolve() not in on_map]
    for page in DOC_PAGES:
        paragraphs = [p.strip() for p in page.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        opening = next((p for p in paragraphs if not p.startswith("#")), "")
        if re.match(r"^(\||```|[-*>!]|\d+\.)", opening) or len(opening.split()) < 8 or "." not in opening:
            problems.append(f"{page.relative_to(REPO)} does not open with a sentence saying what it is for: "
                            f"{opening[:80]!r}")
    assert not problems, "\n".join(problems)


# ---- numbers quoted from the committed reports ----

def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _interval(difference: dict) -> tuple[str, str, str]:
    """A paired difference as the docs write it: '+0.2', '-1.2', '+1.6' for +0.2 (-1.2 to +1.6)."""
    return tuple(_points(difference[key]) for key in ("difference", "low", "high"))


Quote = tuple[str, tuple[str, ...]]  # a pattern, and the groups every match of it must have
SIGNED = r"([+-]\d+\.\d) \(([+-]\d+\.\d) to ([+-]\d+\.\d)\)"


def _result_rows(default: dict, seeds: dict) -> list[Quote]:
    """The two rows of the result table: Croc, baseline, Croc - baseline (the interval in full)."""
    one, three = default["accuracy"], seeds["accuracy"]
    row = r"\| {}[^|]*\| ([^|]+?) \| ([^|]+?) \| ([^|]+?) \|"
    one_seed = [f"{_percent(one[arm]['overall']['mean'])}%" for arm in ("croc", "baseline")]
    three_seeds = [f"{_percent(three[arm]['overall']['mean'])} ± {_percent(three[arm]['overall']['std'])}%"
                   for arm in ("croc", "baseline")]
    return [
        (row.format(re.escape("`make demo`")),
         (*one_seed, "{} ({} to {})".format(*_interval(default["croc_minus_baseline"])))),
        (row.format(re.escape("`--seeds 3 --ablations`")),
         (*three_seeds, "{} ({} to {})".format(*_interval(seeds["croc_minus_baseline"])))),
    ]


def _reports() -> tuple[dict, dict, dict]:
    default = json.loads((DEFAULT_REPORT / "metrics.json").read_text(encoding="utf-8"))
    seeds = json.loads((SEEDS_REPORT / "metrics.json").read_text(encoding="utf-8"))
    timings = json.loads((DEFAULT_REPORT / "timings.json").read_text(encoding="utf-8"))
    return default, seeds, timings


def readme_quotes(default: dict, seeds: dict) -> list[Quote]:
    """Each number the README quotes from a report, with the report's value."""
    return [
        *_result_rows(default, seeds),
        # The README presents the default run: any VTR ratio it quotes is that run's.
        (r"([0-9.]+) of the mean predictor's distance",
         (f"{default['vtr_probe']['croc/stage1_5']['ratio_to_trivial']:.3f}",)),
        (r"scores what full Croc scores: ([+-]\d+\.\d) points \(([+-]\d+\.\d) to ([+-]\d+\.\d)\)",
         _interval(seeds["splits"]["test"]["minus_croc"]["ablation_dcg"])),
    ]


def demo_page_quotes(default: dict, seeds: dict, timings: dict) -> list[Quote]:
    """The same for docs/DEMO.md, which reads both reports in full (three seeds unless it says so)."""
    accuracy, chance, test = seeds["accuracy"], seeds["chance"], seeds["splits"]["test"]
    probes, final = seeds["vtr_probe"], seeds["final_losses"]
    literal, literal_losses = probes["vtr_literal/stage1_5"], final["vtr_literal/stage1_5"]
    weighted_vtr = 10 * literal_losses["vtr_loss"]  # L = 10 L_VTR + L_DCG in every demo run
    literal_share = weighted_vtr / (weighted_vtr + literal_losses["lm_loss"])
    victor_form = test["minus_baseline"]["vtr_linear_l2"]

    def mean(arm: str, question_type: str) -> str:
        return _percent(accuracy[arm][question_type]["mean"])

    return [
        *_result_rows(default, seeds),
        (r"count ([0-9.]+) / ([0-9.]+)% against a ([0-9.]+)% majority answer",
         (mean("croc", "count"), mean("baseline", "count"), _percent(chance["count"]["majority"]))),
        (r"colour ([0-9.]+) / ([0-9.]+)% against ([0-9.]+)% chance",
         (mean("croc", "color"), mean("baseline", "color"), _percent(chance["color"]["uniform"]))),
        (rf"scores what full Croc scores, {SIGNED} against Croc",
         _interval(test["minus_croc"]["ablation_dcg"])),
        (rf"caption training itself adds {SIGNED} over the baseline",
         _interval(test["minus_baseline"]["ablation_dcg"])),
        (rf"causal attention {SIGNED}", _interval(test["minus_croc"]["ablation_causal"])),
        (rf"brief captions {SIGNED}", _interval(test["minus_croc"]["ablation_brief"])),
        (rf"nearest-neighbour matching {SIGNED}", _interval(test["minus_croc"]["ablation_nearest"])),
        (r"norm ([0-9.]+), the tokens have norm ([0-9.]+), the term is (\d+)% of the loss, and on unseen "
         r"images it is ([0-9.]+)×",
         (f"{literal['prediction_norm']:.1f}", f"{literal['target_norm']:.1f}", f"{100 * literal_share:.0f}",
          f"{literal['ratio_to_trivial']:.1f}")),
        (r"([0-9.]+) of the mean predictor's distance over three seeds, ([0-9.]+) in the `make demo` run",
         (f"{probes['croc/stage1_5']['ratio_to_trivial']:.3f}",
          f"{default['vtr_probe']['croc/stage1_5']['ratio_to_trivial']:.3f}")),
        (r"final `L_DCG` ([0-9.]+) against ([0-9.]+)",
         (f"{final['croc/stage1_5']['lm_loss']:.2f}", f"{literal_losses['lm_loss']:.2f}")),
        (r"equals the literal form's \(([0-9.]+) vs ([0-9.]+)%\)",
         (mean("croc", "overall"), mean("vtr_literal", "overall"))),
        (r"([0-9.]+) points \*below\* the baseline \(([+-]\d+\.\d) to ([+-]\d+\.\d)\)",
         (f"{-100 * victor_form['difference']:.1f}", *_interval(victor_form)[1:])),
        (r"the report says (\d+) s of steps", (f"{timings['steps']['total']:.0f}",)),
    ]


def _misquoted(doc: Path, quotes: list[Quote]) -> list[str]:
    """Each quote must be in `doc` (a sentence that lost its number fails too) and every match must show the
    report's value."""
    name = doc.relative_to(REPO)
    if not doc.is_file():
        return [f"{name} is missing"]
    text = " ".join(_normalised(doc.read_text(encoding="utf-8")).split())  # a quote may wrap across lines
    problems = []
    for pattern, expected in quotes:
        found = [match.groups() for match in re.finditer(pattern, text)]
        if not found:
            problems.append(f"{name}: no quote matching {pattern!r} (the report says {expected})")
        problems += [f"{name}: quotes {groups} where the report says {expected} ({pattern!r})"
                     for groups in found if groups != expected]
    return problems


def test_readme_numbers_are_the_committed_reports():
    default, seeds, _ = _reports()
    problems = _misquoted(README, readme_quotes(default, seeds))
    assert not problems, "\n".join(problems)


def test_demo_page_numbers_are_the_committed_reports():
    default, seeds, timings = _reports()
    problems = _misquoted(REPO / "docs" / "DEMO.md", demo_page_quotes(default, seeds, timings))
    assert not problems, "\n".join(problems)


# ---- the GPU check's status ----

def _markdown_table(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table under `heading`."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def gpu_status_fragments() -> list[str]:
    """What a status paragraph must say, from RESULTS-gpu.md: the date and device of the last run, each step's
    outcome (`assignment: ok`), the tests' counts (`3 errors`), and `LABEL: not run` for every step of the
    current plan (`benchmarks.gpu_check.plan`) that the run does not list."""
    text = RESULTS_GPU.read_text(encoding="utf-8")
    machine = dict(_markdown_table(text, "## Machine"))
    fragments = [f"last run {machine['date (UTC)'][:10]} on one {machine['CUDA device']}"]
    listed = set()
    for label, status in _markdown_table(text, "## Runs"):
        listed.add(label)
        outcome = next((word for word in ("ok", "timed out") if status.startswith(word)), "failed")
        fragments.append(f"{label.removesuffix(' (cuda)')}: {outcome}")
        fragments += [" ".join(count) for count in re.findall(r"\b(\d+) (passed|failed|errors?)\b", status)]
    fragments += [f"{step.label.removesuffix(' (cuda)')}: not run" for step in gpu_check_plan()
                  if step.label not in listed]
    return fragments


def _paragraphs(doc: Path) -> list[str]:
    """The doc's paragraphs on one line each, without code and bold marks."""
    text = _normalised(doc.read_text(encoding="utf-8")).replace("`", "").replace("**", "")
    return [" ".join(paragraph.split()) for paragraph in text.split("\n\n")]


def test_gpu_check_status_is_the_results_file():
    expected = gpu_status_fragments()
    problems = []
    for doc in (README, REPO / "docs" / "BENCHMARKS.md"):
        paragraphs = _paragraphs(doc) if doc.is_file() else []
        statuses = [paragraph for paragraph in paragraphs if GPU_STATUS_MARKER in paragraph]
        if not statuses:
            problems.append(f"{doc.relative_to(REPO)}: no {GPU_STATUS_MARKER!r} paragraph")
        problems += [f"{doc.relative_to(REPO)}: the GPU check status does not say {fragment!r}"
                     for status in statuses for fragment in expected if fragment not in status]
    # RESULTS-gpu.md records a run: no page may still say the GPU check has not run.
    for doc in DOCS:
        for paragraph in _paragraphs(doc):
            problems += [f"{doc.relative_to(REPO)}: {sentence[:120]!r} contradicts RESULTS-gpu.md"
                         for sentence in re.split(r"(?<=[.!?])\s+", paragraph)
                         if NOT_RUN.search(sentence) and "gpu" in sentence.lower()]
    assert not problems, "\n".join(problems)


# ---- where each recipe's downloads live ----

# Recipes whose data root is the user's own folder (any LLaVA-format file): each command names its own.
ANY_ROOT_RECIPES = frozenset({"llava_json"})
BUILD = re.compile(r"python -m data_recipes build ([\w.]+)\s+--data-root\s+(\S+)")


def _yaml_header_commands() -> Iterator[tuple[str, str]]:
    """(where, command) of every command a stage YAML's header shows (`#   python -m ...` lines)."""
    for path in sorted((REPO / "trainer" / "configs").rglob("*.yaml")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.startswith("#") and "python -m " in line:
                yield f"{path.relative_to(REPO)}:{number}", line.lstrip("# ")


def test_every_build_command_reads_the_data_root_data_md_lays_out():
    """DATA.md lays each recipe's downloads out under one folder and builds it from there (LCS-558K under
    data/LLaVA-Pretrain, where its `hf download` line puts it); a build command elsewhere (the README, TRAINING.md,
    a stage YAML's header) with another `--data-root` sends a newcomer who followed DATA.md to a folder that holds
    none of the files (`error: playground/data/blip_laion_cc_sbu_558k.json: no such file`)."""
    data_md = REPO / "docs" / "DATA.md"
    laid_out: dict[str, set[str]] = {}
    for command in documented_commands([data_md]):
        if (found := BUILD.search(shlex.join(command.words))):
            laid_out.setdefault(found.group(1), set()).add(found.group(2))
    assert {"lcs558k", "croc1.5m", "llava665k"} <= set(laid_out)
    shown = [(command.where(), shlex.join(command.words)) for command in documented_commands()
             if command.doc != data_md]
    problems = []
    for where, text in [*shown, *_yaml_header_commands()]:
        found = BUILD.search(" ".join(text.split()))
        if found and found.group(1) not in ANY_ROOT_RECIPES and found.group(2) not in laid_out.get(found.group(1), ()):
            problems.append(f"{where}: builds {found.group(1)} from {found.group(2)}; DATA.md lays it out under "
                            f"{' or '.join(sorted(laid_out.get(found.group(1), {'(nothing)'})))}")
    assert not problems, "\n".join(problems)


def test_reject_reasons_are_listed_in_the_order_rows_are_checked():
    """DATA.md lists the reject reasons "in the order they are checked (`data_recipes.REJECT_REASONS`)": its list is
    the dict's, and a row failing two checks gets the one the dict names first (a lone surrogate in an unknown role's
    turn is `invalid_text`, as DATA.md says, not `unknown_role`)."""
    from data_recipes import REJECT_REASONS, rows_to_dataset, validate_dataset
    from data_recipes.schema import normalise_row

    text = " ".join(_normalised((REPO / "docs" / "DATA.md").read_text(encoding="utf-8")).split())
    listing = text.split("in the order they are checked (`data_recipes.REJECT_REASONS`):", 1)[1].split(". ", 1)[0]
    listed = [name for name in re.findall(r"`([a-z_]+)`", listing) if name in REJECT_REASONS]
    assert listed == list(REJECT_REASONS), f"DATA.md lists {listed}, REJECT_REASONS is {list(REJECT_REASONS)}"
    turns = [{"from": "system", "value": "\ud800"}, {"from": "gpt", "value": "an answer"}]
    row = normalise_row({"id": "both", "conversations": turns}, source="s", index=0)
    reasons = validate_dataset(rows_to_dataset([row]), None, image_check="none").reasons
    assert reasons == ["invalid_text"]
    assert list(REJECT_REASONS).index("invalid_text") < list(REJECT_REASONS).index("unknown_role")


def test_every_family_is_named_where_the_families_are_listed():
    """MODELS.md's Families table holds every family of `modeling_croc.families`, and the lists a newcomer reads
    first name each of them: MODELS.md's opening ("the families of the Families table (...)") and CONVERSIONS.md's
    `to-plain` line ("any family -> its plain parent folder (...)"). A family missing there reads as one that
    cannot be trained or exported."""
    from modeling_croc.families import FAMILIES

    models = _normalised((REPO / "docs" / "MODELS.md").read_text(encoding="utf-8"))
    table = {model_type: name for name, model_type in
             re.findall(r"^\| ([^|]+?) \| `\w+` \(`(\w+)`\) \|", models.split("## Families", 1)[1], re.M)}
    assert set(table) == {family.model_type for family in FAMILIES}, table
    opening = re.search(r"families of the \[Families\]\(#families\) table \(([^)]*)\)", " ".join(models.split()))
    assert opening, "MODELS.md no longer lists the families in its opening"
    named = {name.strip() for name in opening.group(1).split(",")}
    conversions = (REPO / "docs" / "CONVERSIONS.md").read_text(encoding="utf-8")
    to_plain = re.search(r"any family -> its plain parent folder \(([^):]*)", conversions)
    assert to_plain, "CONVERSIONS.md no longer shows to-plain for the families"
    exported = {name.strip() for name in to_plain.group(1).split(",")}
    problems = []
    for family in FAMILIES:
        if family.plain_model_type in ("llava", "llava_onevision"):  # the LLaVA layouts, named on their own
            continue
        if table[family.model_type] not in named:
            problems.append(f"MODELS.md's opening does not name {table[family.model_type]}")
        if family.plain_model_type not in exported:
            problems.append(f"CONVERSIONS.md's to-plain line does not name {family.plain_model_type}")
    assert not problems, "\n".join(problems)


def test_the_tiny_family_walkthrough_names_every_tiny_folder_and_full_scale_config():
    """MODELS.md's walkthrough ("The same for the other families (...)", "At full scale each family has ... (...)")
    names every `python -m croc_testing tiny-<family>` command and one model per `trainer/configs/<family>/` folder
    (PaliGemma's were missing from both, a newcomer found)."""
    from croc_testing.__main__ import PLAIN_FOLDERS

    models = " ".join((REPO / "docs" / "MODELS.md").read_text(encoding="utf-8").split())
    same = re.search(r"The same for the other families \((.*?); `trainer/configs/cpu_tiny/", models)
    assert same, "MODELS.md no longer lists the other families' tiny folders"
    shown = set(re.findall(r"python -m croc_testing (tiny-\w+)", models))
    assert set(re.findall(r"`(tiny-\w+)`", same.group(1))) | shown == set(PLAIN_FOLDERS)
    full = re.search(r"At full scale each family has `trainer/configs/<family>/stage1_5.yaml` \(([^)]*)\)", models)
    assert full, "MODELS.md no longer lists the full-scale family configs"
    family_configs = [path.parent.name for path in (REPO / "trainer" / "configs").glob("*/stage1_5.yaml")
                      if path.parent.name != "victor" and f"tiny-{path.parent.name}" in PLAIN_FOLDERS]
    assert len(full.group(1).split(", ")) == len(family_configs), (full.group(1), family_configs)


def _slugs(doc: Path) -> set[str]:
    """The anchors GitHub gives `doc`'s headings: lower case, punctuation but `-` and `_` dropped, spaces to `-`,
    a repeated heading numbered (`-1`, `-2`)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    slugs = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return slugs


def test_links_to_a_section_name_a_heading_of_their_page():
    """A link's `#anchor` (`DATA.md#evaluation-sets`, `#families`) is a heading of the page it points to: a renamed
    heading would otherwise leave the link landing at the top of the page."""
    problems = []
    for doc in DOCS:
        for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s#]*)#([^)\s]+)\)", _prose(doc)):
            page = (doc.parent / match.group(1)).resolve() if match.group(1) else doc
            if page.suffix == ".md" and page.is_file() and match.group(2) not in _slugs(page):
                problems.append(f"{doc.relative_to(REPO)}: {match.group(0)} names no heading of {page.name}")
    assert not problems, "\n".join(problems)


def _family_refusals(family) -> set[str]:
    """What the trainer refuses for `family` (a `modeling_croc.families` entry), read from the code on a tiny config:
    `packing` (`resolve.check_croc_config`: a token count per image, or the model's `croc_packing_refusal`) and
    `LoRA` (`model_checks.check_lora_keeps_the_trained_parts` in stage 1.5 or 2, on the model built on `meta`)
    and the `official` preset's `bert` VTR head (the config refuses it for a token count per image)."""
    from croc_testing.family_specs import SPECS
    from croc_testing.tiny import tiny_croc_config, tiny_croc_onevision_config
    from modeling_croc.configuration_croc import CrocConfigError
    from trainer.cli import ConfigError
    from trainer.model_checks import build_on_meta, check_lora_keeps_the_trained_parts
    from trainer.stages import get_stage

    builders = {spec.config_class.model_type: spec.config for spec in SPECS}
    builders["croc"] = tiny_croc_config
    builders["croc_onevision"] = lambda **fields: tiny_croc_onevision_config(vocab_size=160, **fields)
    config = builders[family.model_type]()
    refused = set()
    try:  # the preset's head, not the tiny builders' default `linear`
        builders[family.model_type](croc_preset="official", vtr_head=None)
    except CrocConfigError:
        refused.add("`bert` VTR head")
    if config.croc_variable_token_count or getattr(family.model, "croc_packing_refusal", None):
        refused.add("packing")
    model = build_on_meta(config, "eager")
    for stage in ("1.5", "2"):
        try:
            check_lora_keeps_the_trained_parts(model, list(get_stage(stage).trainable_parts))
        except ConfigError:
            refused.add("LoRA")
    return refused


def test_families_table_states_what_the_trainer_refuses_for_each_family():
    """MODELS.md's Families table says `no packing`, `no LoRA` and `no `bert` VTR head` exactly for the families
    whose runs the trainer refuses with `packing: true`, `model.use_peft: true` or the `official` preset's head:
    LLaVA-NeXT's and OneVision's LoRA runs were refused (their bare `image_newline` would be frozen), and `official`
    on every family with a token count per image, while the table a user picks a family from said nothing of it."""
    from modeling_croc.families import FAMILIES

    models = _normalised((REPO / "docs" / "MODELS.md").read_text(encoding="utf-8"))
    notes = dict(re.findall(r"^\| [^|]+? \| `\w+` \(`(\w+)`\) \|[^|\n]*\|([^\n]*)\|$",
                            models.split("## Families", 1)[1], re.M))
    problems = []
    for family in FAMILIES:
        refused = _family_refusals(family)
        for option in ("packing", "LoRA", "`bert` VTR head"):
            if (option in refused) != (f"no {option}" in notes[family.model_type]):
                problems.append(f"MODELS.md's Families table {'omits' if option in refused else 'wrongly states'} "
                                f"'no {option}' for {family.model_type}")
    assert not problems, "\n".join(problems)


# What RELIABILITY.md's "Resume is exact or refused" calls each key of the run record a resume cannot change
# (`trainer.run_record.FIXED`). A key recorded since must be named there too: a user who changes it (another
# per-device batch on a smaller GPU, say) reads in the contract that the resume will be refused.
RECORD_KEYS_AS_DOCUMENTED = {
    "stage": "stage", "croc_config": "Croc config", "model_config": "model", "data_rows": "the rows by content",
    "global_batch_size": "global batch", "per_device_split": "per-device batch (where the step depends on it)",
    "epoch_rows": "the rows an epoch trains", "trainable_parts": "what trains", "seed": "seed", "data_seed": "data seed", "group_by_modality_length": "sampler",
    "train_sampling_strategy": "sampler", "model_max_length": "`model_max_length`", "template": "template",
    "image_aspect_ratio": "image aspect ratio", "dtype": "dtype", "mixed_precision": "mixed precision",
    "lora": "LoRA settings", "lora_base_weights": "base weights LoRA adapts",
    "start_weights": "the weights a run without LoRA started from", "deepspeed_zero_stage": "ZeRO stage",
    "deepspeed_processes": "processes",
    "random_stream_processes": "processes", "optim": "optimiser", "neftune_noise_alpha": "NEFTune noise",
    "average_tokens_across_devices": "loss averaging over processes", "image_limits": "image limits",
}


def test_reliability_names_every_key_a_resume_cannot_change():
    """RELIABILITY.md's run record lists every key `trainer.run_record.FIXED` refuses to change on a resume (the
    per-device batch of a step that depends on its split was refused with the page still listing only "batch")."""
    from trainer.run_record import FIXED

    text = " ".join(_normalised((REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")).split())
    record = re.search(r"The run record \(`croc_run\.json`: (.*?)\) is written", text)
    assert record, "RELIABILITY.md no longer lists what the run record holds"
    undocumented = sorted(set(FIXED) - set(RECORD_KEYS_AS_DOCUMENTED))
    assert not undocumented, f"name these run-record keys in RELIABILITY.md and RECORD_KEYS_AS_DOCUMENTED: {undocumented}"
    missing = [f"{key} ({phrase!r})" for key, phrase in RECORD_KEYS_AS_DOCUMENTED.items()
               if key in FIXED and phrase not in record.group(1)]
    assert not missing, f"RELIABILITY.md's run record does not name: {', '.join(missing)}"


def test_publishing_docs_name_every_path_field_written_as_a_name():
    """TRAINING.md's Hub bullet and RELIABILITY.md's publishing promise say which uploaded fields lose their local
    folder (`modeling_croc.provenance.PATH_FIELDS`): a pushed LoRA adapter names a base others can load only when the run started
    from a Hub id, which no page said (the field went up as a bare folder name, unsaid)."""
    from modeling_croc.provenance import PATH_FIELDS

    training = " ".join((REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8").split())
    missing = [field for field in PATH_FIELDS if f"`{field}`" not in training]
    assert not missing, f"TRAINING.md's Hub bullet does not name these uploaded path fields: {missing}"
    reliability = " ".join((REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8").split())
    assert "`base_model_name_or_path`" in reliability, "RELIABILITY.md no longer says where an adapter's base path goes"


def test_roll_back_is_documented_where_a_checkpoint_is_named():
    """A named older checkpoint renames the later ones (`trainer.checkpoint_io.ABANDONED_SUFFIX`): the pages and the
    `resume_from_checkpoint` help of `--help` say so, and say that a resume takes its save steps from the command."""
    from trainer.checkpoint_io import ABANDONED_SUFFIX
    from trainer.training_args import CrocTrainingArguments

    help_text = " ".join(CrocTrainingArguments.__dataclass_fields__["resume_from_checkpoint"].metadata["help"].split())
    for where, text in (("TRAINING.md", (REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8")),
                        ("RELIABILITY.md", (REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")),
                        ("--help (resume_from_checkpoint)", help_text)):
        assert f"checkpoint-N{ABANDONED_SUFFIX}" in text or re.search(rf"checkpoint-\d+{ABANDONED_SUFFIX}", text), \
            f"{where} does not say that a roll-back keeps the later checkpoints as checkpoint-N{ABANDONED_SUFFIX}"
    from trainer.script_args import DataArguments

    image_check = DataArguments.__dataclass_fields__["image_check"].metadata["help"]
    assert "resume" in image_check, "--help's image_check says every start checks as set; a resume only stats"
    training = " ".join((REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8").split())
    assert "save and logging steps" in training.lower() and "save and logging steps" in \
        help_text.lower(), "TRAINING.md and --help no longer say that a resume takes its save steps from the command"


def test_the_documented_merge_of_a_downloaded_adapter_passes_options_the_merge_has(commands):
    """A downloaded LoRA adapter names its base by folder name only: the docs show the merge with `--base`, and
    every option a documented `trainer.merge_lora` command passes is one its `--help` lists (a documented option
    it did not have would read as a command that works)."""
    merges = [command for command in commands if (_launched_module(command) or [None])[0] == "trainer.merge_lora"]
    assert any("--base" in command.words for command in merges), "the docs show no merge with --base"
    output = help_of(["trainer.merge_lora"])["trainer.merge_lora"]["output"]
    problems = [f"{command.where()}: `python -m trainer.merge_lora --help` lists no {option}" for command in merges
                for option in (word.split("=", 1)[0] for word in command.module()[1] if word.startswith("--"))
                if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", output)]
    assert not problems, "\n".join(problems)


# Where the code's messages send the reader: a docs page by its path, or a README section by its heading.
MESSAGE_DOC = re.compile(r"\bdocs/([\w-]+\.md)\b")
MESSAGE_README_SECTION = re.compile(r"\(README, ([A-Z][\w -]*)\)")


def test_every_page_and_section_the_code_names_exists():
    """The configuration errors end with where to read on (`... (docs/EVALUATION.md)`): the evaluation refusals sent
    the reader to a README section `Evaluation` the README no longer had."""
    readme_headings = set(re.findall(r"^#{1,6}\s+(.+?)\s*$", README.read_text(encoding="utf-8"), re.M))
    problems = []
    for folder in REPO_FOLDERS:
        if folder in ("docs", "tests"):
            continue
        for path in sorted((REPO / folder).rglob("*.py")):
            code = path.read_text(encoding="utf-8")
            where = path.relative_to(REPO)
            problems += [f"{where}: docs/{page} does not exist" for page in sorted(set(MESSAGE_DOC.findall(code)))
                         if not (REPO / "docs" / page).is_file()]
            problems += [f"{where}: README has no section {section!r}"
                         for section in sorted(set(MESSAGE_README_SECTION.findall(code)))
                         if section not in readme_headings]
    assert not problems, "\n".join(problems)


# Command lines the docs call whose `--help` a newcomer reads for what each argument means (trainer.train's help
# lists its keys from the config dataclasses, checked by the trainer's own tests).
# Each with the module whose `main(argv)` builds its parser (`data_recipes/__main__.py` runs at import).
DOCUMENTED_CLIS = {"modeling_croc.convert": "modeling_croc.convert.__main__", "data_recipes": "data_recipes.cli",
                   "croc_testing": "croc_testing.__main__", "modeling_croc.chat": "modeling_croc.chat",
                   "trainer.merge_lora": "trainer.merge_lora", "trainer.model_card": "trainer.model_card",
                   "demo": "demo.__main__"}


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser a command's `main` built."""


def _parser_of(module: str, monkeypatch) -> argparse.ArgumentParser:
    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_Parsed) as parsed:
        importlib.import_module(DOCUMENTED_CLIS[module]).main([])
    return parsed.value.args[0]


def _undocumented_arguments(parser: argparse.ArgumentParser, name: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _undocumented_arguments(sub, f"{name} {command}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            yield f"python -m {name}: {'/'.join(action.option_strings) or action.dest}"


def test_every_argument_of_a_documented_command_has_help(commands, monkeypatch):
    """`--help` says what every option and positional of a documented command is (a bare `--preset {...}` left the
    reader to guess its default, which differs from one conversion to the next)."""
    documented = {launched[0] for command in commands if (launched := _launched_module(command))}
    assert set(DOCUMENTED_CLIS) <= documented
    problems = [line for module in DOCUMENTED_CLIS
                for line in _undocumented_arguments(_parser_of(module, monkeypatch), module)]
    assert not problems, "arguments without help:\n" + "\n".join(problems)


# ---- numbers quoted from the code and the committed benchmark results ----

RESULTS = REPO / "benchmarks" / "RESULTS.md"


def _table_under(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first table after `heading` (the end of a line), as {column: cell}."""
    lines = text.split(f"{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [dict(zip(table[0], row)) for row in table[2:]]


def test_training_md_packing_numbers_are_the_committed_results():
    """TRAINING.md's packing paragraph quotes `python -m benchmarks packing` (benchmarks/RESULTS.md): every share and
    ratio it gives is the committed table's, rounded as it is written."""
    results = RESULTS.read_text(encoding="utf-8")
    tokens = {(row["stage"], row["layout"]): row for row in _table_under(
        results, "### Packing against padding: tokens per real token (stage YAML micro-batches, 8 processes)")}
    steps = _table_under(results, "### Step time per real token (cpu, torch.float32): padded vs packed, same "
                                  "micro-batches")

    def share(stage: str, layout: str, column: str) -> str:
        return f"{float(tokens[(stage, layout)][column]) * 100:.0f}%"

    def step(stage: str, micro_batch: str, layout: str) -> float:
        return next(float(row["time vs padded"]) for row in steps
                    if (row["stage"], row["micro-batch"], row["layout"]) == (stage, micro_batch, layout))

    padded, longest = "padded", "packed, budget: longest sample"
    estimate, text_rows = "stage estimate (weighted by real tokens)", "text rows, 8 samples"
    texts = sorted(step(stage, text_rows, "packed") for stage in ("1.5", "2"))
    fixed = sorted(step(stage, estimate, "packed, fixed budget") for stage in ("1.5", "2"))
    quotes = [
        f"packing removes {share('1.5', longest, 'padding avoided')} of the tokens a stage-1.5 micro-batch computes "
        f"(padding share {share('1.5', padded, 'padding share')} -> {share('1.5', longest, 'padding share')})",
        f"and {share('2', longest, 'padding avoided')} in stage 2 ({share('2', padded, 'padding share')} -> "
        f"{share('2', longest, 'padding share')})",
        f"({float(tokens[('1', padded)]['padding share']) * 100:.1f}% padding) and gain nothing",
        f"took {step('1.5', estimate, 'packed'):.2f}x (stage 1.5) and {step('2', estimate, 'packed'):.2f}x (stage 2)",
        f"{texts[0]:.2f}-{texts[1]:.2f}x on text micro-batches",
        f"slower ({fixed[0]:.1f}-{fixed[1]:.1f}x)",
        f"removes all padding ({share('1.5', padded, 'padding share')} / {share('2', padded, 'padding share')} of "
        "the tokens)",
    ]
    training = " ".join(_normalised((REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8")).split())
    missing = [quote for quote in quotes if quote not in training]
    assert not missing, f"TRAINING.md does not quote benchmarks/RESULTS.md's packing results as: {missing}"


def test_data_md_counts_are_the_recipes_defaults():
    """DATA.md's per-source tables of the croc1.5m and llava802k recipes, and the sums it states, are the defaults
    the recipes draw (`CROC_1_5M_COUNTS`, `EXTRA_802K_COUNTS`)."""
    from data_recipes.catalog import CROC_1_5M_COUNTS
    from data_recipes.recipes.llava802k import EXTRA_802K_COUNTS

    text = (REPO / "docs" / "DATA.md").read_text(encoding="utf-8")

    def number(cell: str) -> int:
        return int(re.match(r"[\d,]+", cell).group().replace(",", ""))

    text_sets = {row["key"].strip("`"): number(row["rows"]) for row in _table_under(
        text, "**Text-only rows.** Which rows were drawn is not published, so the recipe draws them with the recorded seed.")}
    assert text_sets == {name: n for name, n in CROC_1_5M_COUNTS.items() if name != "sharegpt4v"}
    extras = {row["key"].strip("`"): number(row["default rows"]) for row in _table_under(
        text, "`OpenGVLab/InternVL-Chat-V1-2-SFT-Data` with these defaults (`EXTRA_802K_COUNTS`), a choice of this "
              "project:")}
    assert extras == EXTRA_802K_COUNTS
    flat = " ".join(text.split())
    assert f"The eight counts add up to {sum(text_sets.values()):,}" in flat
    assert f"The defaults sum to {sum(extras.values()):,}." in flat
    assert f"The recipe samples {CROC_1_5M_COUNTS['sharegpt4v']:,} rows" in flat


def test_configs_that_save_no_checkpoints_are_the_ones_training_md_names():
    """TRAINING.md: "Configs with `save_strategy: "no"` (`cpu_tiny/`, `demo/`, `victor/stage1.yaml`) say so when the
    run starts" and resume only from a Ctrl-C or preemption checkpoint; every other config saves steps."""
    configs = REPO / "trainer" / "configs"
    no_save = {str(path.relative_to(configs)) for path in configs.rglob("*.yaml")
               if yaml.safe_load(path.read_text(encoding="utf-8")).get("save_strategy") == "no"}
    named = {"victor/stage1.yaml"} | {str(path.relative_to(configs)) for folder in ("cpu_tiny", "demo")
                                     for path in (configs / folder).glob("*.yaml")}
    training = " ".join((REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8").split())
    assert 'Configs with `save_strategy: "no"` (`cpu_tiny/`, `demo/`, `victor/stage1.yaml`)' in training
    assert no_save == named, f"save_strategy no: {sorted(no_save ^ named)} differ from TRAINING.md's list"


def test_data_md_synopses_name_every_option_of_data_recipes():
    """The `synth` synopsis left out `--val-fraction`, which `python -m data_recipes synth --help` lists."""
    from data_recipes import cli

    sub = next(action for action in cli._parser()._actions if isinstance(action, argparse._SubParsersAction))
    text = (REPO / "docs" / "DATA.md").read_text(encoding="utf-8")
    problems = []
    for command, parser in sub.choices.items():
        # The synopsis: from its first line to the first line not continued with a backslash.
        synopsis = re.search(rf"^python -m data_recipes {command}\b.*?(?<!\\)$", text, re.M | re.S)
        shown = synopsis.group(0) if synopsis else ""
        for action in parser._actions:
            options = [option for option in action.option_strings if option not in ("-h", "--help")]
            if options and not any(re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", shown) for option in options):
                problems.append(f"DATA.md's `{command}` synopsis lacks {options[-1]}")
    assert not problems, "\n".join(problems)
