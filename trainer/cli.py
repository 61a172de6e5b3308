"""`CONFIG.yaml [--key=value ...]` -> (ModelArguments, DataArguments, CrocTrainingArguments).

The YAML's top level holds `CrocTrainingArguments` fields plus two sections, `model:` and `data:`. Overrides use
the same names: `--language_model_lr=2e-5`, `--model.name_or_path=DIR`, `--data.path=FILE` (a `model`/`data` key that
is not also a training key may drop its prefix). `--key value` and, for a true/false key, a bare `--flag` (= true)
work too. Values are read as YAML and then converted to the field's type, so `2e-5` is a float and `{a: 1}` a dict.

Why not `transformers.HfArgumentParser` (or TRL's `TrlParser`, which adds a YAML file to it): both flatten every
dataclass into one argparse namespace, so the `model.` / `data.` sections and their YAML mappings have no place, and
argparse reads `--croc_overrides={mask_ratio: 0.5}` or a list value as a plain string. What this module adds is only
that: sections, YAML-typed values and "did you mean" hints; the dataclasses themselves (their defaults, help texts
and `__post_init__` checks) are the ones transformers' parser would build.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from .argument_checks import REFUSED_SETTINGS, hint_options
from .script_args import DataArguments, ModelArguments
from .training_args import CrocTrainingArguments

SECTIONS: dict[str, type] = {"model": ModelArguments, "data": DataArguments}
TRAINING = "training"


class ConfigError(ValueError):
    """A configuration problem found before anything is loaded or computed."""


def field_names(cls: type) -> list[str]:
    """Init fields of a dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _valid_keys_message() -> str:
    # One line (errors are printed as one line): where the keys are, not all ~200 of them.
    return ("valid keys: python -m trainer.train --help lists every key of the three sections (training, model.*, "
            "data.*) with its default")


# Keys that were renamed (here or in transformers 5): the hint names the new key rather than a look-alike.
RENAMED_KEYS = {"croc_config": "croc_overrides", "warmup_ratio": "warmup_steps",
                "evaluation_strategy": "eval_strategy", "no_cuda": "use_cpu"}


def _suggestions(keys: list[str]) -> str:
    """`did you mean` hints for misspelled or renamed keys (`warmup_ratio` -> `warmup_steps`)."""
    candidates = field_names(CrocTrainingArguments) + [f"{name}.{key}" for name, cls in SECTIONS.items()
                                                       for key in field_names(cls)]
    hints = []
    for key in keys:
        close = [RENAMED_KEYS[key]] if key in RENAMED_KEYS else _closest(key, candidates)
        if close:
            hints.append(f"{key} -> {' or '.join(close)}")
    return f" (did you mean: {'; '.join(hints)})" if hints else ""


# How much less alike than the best match a second one may be and still be shown: a runner-up far behind it
# (`model.name_or_pth` -> `model.lora_alpha` after `model.name_or_path`) only made the clear hint look uncertain.
SECOND_HINT_MARGIN = 0.05


def _closest(key: str, candidates: list[str]) -> list[str]:
    """The best look-alike of `key`, and the second best only when it is about as close (a real ambiguity, as
    `per_device_batch_size` -> the eval or the train key)."""
    close = difflib.get_close_matches(key, candidates, n=2, cutoff=0.6)
    if len(close) == 2:
        best, second = (difflib.SequenceMatcher(None, key, match).ratio() for match in close)
        if best - second > SECOND_HINT_MARGIN:
            close = close[:1]
    return close


USAGE = "usage: python -m trainer.train CONFIG.yaml [--key=value ...]"


def help_text(width: int = 100) -> str:
    """What `python -m trainer.train --help` prints: the usage, then every key of the three sections (model, data,
    training) with its default and its help, as the dataclasses declare them."""
    import textwrap

    intro = ("Train one Croc stage. The YAML's top level holds the training keys, and `model:` / `data:` sections "
             "the others; every key can be overridden on the command line (--language_model_lr=2e-5, "
             "--model.name_or_path=DIR, --data.path=FILE; values are read as YAML). Stage defaults (learning "
             "rates, template, model_max_length) fill what the config leaves unset.")
    lines = [USAGE, "", *textwrap.wrap(intro, width=width), ""]
    from transformers import TrainingArguments

    sections = [(f"{name} (`{name}:` in the YAML, --{name}.KEY)", cls, lambda spec: True)
                for name, cls in SECTIONS.items()]
    # Croc's own training keys first: after transformers' ~150 they were the last screens of the help.
    upstream = {spec.name for spec in dataclasses.fields(TrainingArguments)}
    sections += [("training, Croc's keys (top level, --KEY)", CrocTrainingArguments,
                  lambda spec: spec.name not in upstream),
                 ("training, transformers' Trainer keys (top level, --KEY)", CrocTrainingArguments,
                  lambda spec: spec.name in upstream)]
    for title, cls, shown in sections:
        lines.append(f"{title}:")
        for spec in dataclasses.fields(cls):
            if not spec.init or not shown(spec):
                continue
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            lines.append(f"  {spec.name} (default: {default!r})")
            # transformers writes its help texts for argparse, which reads `%` as a format: `~20%% slower`.
            text = " ".join(str(spec.metadata.get("help", "")).split()).replace("%%", "%")
            if cls is CrocTrainingArguments and spec.name in REFUSED_SETTINGS:
                _, setting, why = REFUSED_SETTINGS[spec.name]
                text += f" Refused here ({setting}): {why}."
            if text:
                lines += textwrap.wrap(text, width=width, initial_indent="      ", subsequent_indent="      ")
        lines.append("")
    return "\n".join(lines)


def wants_help(argv: list[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def _split_argv(argv: list[str]) -> tuple[str, list[tuple[str, str | None]]]:
    """The config path and the (key, raw value) overrides; a value of None means a bare flag."""
    if not argv or argv[0].startswith("--"):
        raise ConfigError(f"{USAGE} (--help lists every key)")
    path, rest, overrides = argv[0], argv[1:], []
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}; overrides look like --key=value")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                value, i = rest[i + 1], i + 1
            else:
                value = None
        overrides.append((key.replace("-", "_"), value))
        i += 1
    return path, overrides


def _section_of(key: str) -> tuple[str, str]:
    """Resolve an override key to (section, field)."""
    if "." in key:
        section, name = key.split(".", 1)
        cls = SECTIONS.get(section)
        if cls is None and section != TRAINING:
            raise ConfigError(f"unknown section {section!r} in --{key}; {_valid_keys_message()}")
        names = field_names(cls or CrocTrainingArguments)
        if name not in names:
            raise ConfigError(f"unknown key --{key}{_suggestions([key])}; {_valid_keys_message()}")
        return section, name
    if key in field_names(CrocTrainingArguments):
        return TRAINING, key
    owners = [section for section, cls in SECTIONS.items() if key in field_names(cls)]
    if len(owners) == 1:
        return owners[0], key
    raise ConfigError(f"unknown key --{key}{_suggestions([key])}; {_valid_keys_message()}")


def load_raw_config(argv: list[str]) -> dict[str, dict[str, Any]]:
    """Read the YAML, apply the overrides and check every key. Returns {"training": ..., "model": ..., "data": ...}."""
    path, overrides = _split_argv(list(argv))
    if Path(path).is_dir():  # "does not exist" was untrue of a folder
        raise ConfigError(f"config file {path} is a folder; name a YAML file in it (e.g. {Path(path) / 'stage1.yaml'})")
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    loaded = _read_yaml(Path(path))
    if loaded is None:
        # Without this, the first required key (data.path) was named missing, as if the file had been read in full.
        raise ConfigError(f"config file {path} is empty (only blank lines or comments); trainer/configs/ holds "
                          "complete configs, or write `{}` in it to give every key on the command line")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw: dict[str, dict[str, Any]] = {TRAINING: {}, **{name: {} for name in SECTIONS}}
    unknown = []
    for key, value in loaded.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: `{key}:` must be a mapping")
            unknown += [f"{key}.{k}" for k in value if k not in field_names(SECTIONS[key])]
            raw[key].update(value)
        elif key in field_names(CrocTrainingArguments):
            raw[TRAINING][key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}{_suggestions(unknown)}; {_valid_keys_message()}")
    for key, value in overrides:
        section, name = _section_of(key)
        if value is None and not _takes_bare_flag(section, name):
            # A bare `--max_steps` used to read as true and fail as "must be an integer, got True".
            raise ConfigError(f"--{key} needs a value (--{key}={_placeholder(section, name)}); only a true/false "
                              "key may be given bare")
        if value is not None and not value.strip():
            # `--output_dir=$OUT` with OUT unset: YAML would read it as null, the field's default (./trainer_output).
            raise ConfigError(f"--{key} is empty (an unset variable in the command?); give a value, or --{key}=null "
                              "for the default")
        try:
            raw[section][name] = True if value is None else yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--{key}: cannot read {value!r} as a YAML value ({_yaml_problem(error)})") from None
        if value is not None:
            _check_nothing_dropped(key, value, raw[section][name])
    return {section: _coerce_section(section, values) for section, values in raw.items()}


def _ends_in_comment(value: str) -> bool:
    """Whether YAML reads a comment after the value's last token (`#` at the start or after a blank, outside
    quotes): read from an override, it dropped the rest of the value silently. Through the scanner, since a ` #`
    inside a quoted item (`[".* #x"]`, `{"k": "a #b"}`) is text, which a search of the text alone took for one."""
    ends = [token.end_mark.index for token in yaml.scan(value)
            if not isinstance(token, (yaml.StreamStartToken, yaml.StreamEndToken))]
    return value[max(ends, default=0):].lstrip().startswith("#")


def _check_nothing_dropped(key: str, value: str, loaded: Any) -> None:
    """Refuse an override YAML reads as less than its text: `--output_dir='runs/try #2'` read as `runs/try` (` #`
    starts a comment), `--output_dir=~` or `--output_dir=#2` read as null (~ is YAML's null), each of which trained
    into another folder (./trainer_output for null) without a word. `null` itself still means the default."""
    commented = _ends_in_comment(value)
    if commented or (loaded is None and value.strip() not in ("null", "Null", "NULL")):
        shown = "null" if loaded is None else repr(loaded)
        raise ConfigError(f"--{key}={value} reads as {shown} in YAML (`~` alone is null, ` #` starts a comment); "
                          f"quote it (--{key}=\"'{value}'\") for the text as given, or --{key}=null for the default")


class _ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses what a config never means: a key given twice in one mapping (PyYAML keeps the
    last silently, so an edit above an old line would be ignored) and a key that is not a string (`1: x`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is not a name", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _field_options(section: str, name: str) -> tuple[Any, ...] | None:
    """The types a field takes (its Union's members), or None where its annotation cannot be resolved."""
    try:
        hint = typing.get_type_hints(SECTIONS.get(section, CrocTrainingArguments)).get(name)
    except Exception:  # an unresolvable annotation elsewhere in TrainingArguments
        return None
    return None if hint is None else hint_options(hint)


def _takes_bare_flag(section: str, name: str) -> bool:
    """Whether `--name` alone (= true) fits the field: a true/false field, or one whose type is not known here."""
    options = _field_options(section, name)
    return options is None or bool in options


def _placeholder(section: str, name: str) -> str:
    options = _field_options(section, name) or ()
    return "N" if int in options else "X" if float in options else "VALUE"


def _read_yaml(path: Path) -> Any:
    """The parsed file; None for a file with no content (empty, or only blank lines and comments)."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({_yaml_problem(error)})") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    return " ".join(str(getattr(error, "problem", None) or error).split())


def _coerce_section(section: str, values: dict[str, Any]) -> dict[str, Any]:
    cls = SECTIONS.get(section, CrocTrainingArguments)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an unresolvable annotation elsewhere in TrainingArguments: keep values as read
        hints = {}
    prefix = f"{section}." if section in SECTIONS else ""  # `data.num_proc`, as the other messages name it
    return {name: _coerce(f"{prefix}{name}", value, hints.get(name)) for name, value in values.items()}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert YAML scalars to the field's scalar type: PyYAML reads `2e-5` as a string and `1.5` as a float."""
    if hint is None or value is None:
        return value
    options = hint_options(hint)
    if isinstance(value, datetime.date) and str in options:
        # `output_dir: 2026-05-01` or `run_name: 2026-05-01`: YAML reads an unquoted date as a date, which no field
        # takes (output_dir failed on it naming no key; the others carried it silently).
        raise ConfigError(f"{name}: YAML reads {value} as a date; quote it (\"{value}\") to give it as text")
    if value is False and str in options and bool not in options and name.endswith("_strategy"):
        return "no"  # YAML reads `save_strategy: no` (and --save_strategy=no) as false: the strategy is "no"
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if str in options and numeric and not any(t in options for t in (int, float)):
        return str(value)  # `stage: 1.5` -> "1.5"
    if float in options and numeric:
        return float(value)
    if isinstance(value, str):
        for scalar in (bool, int, float):
            if scalar in options and str not in options:
                try:
                    return _parse_scalar(scalar, value)
                except ValueError as error:
                    raise ConfigError(f"{name}: cannot read {value!r} as {scalar.__name__}") from error
    return value


def _parse_scalar(scalar: type, text: str) -> Any:
    if scalar is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError(text)
    if scalar is int and text.replace(".", "", 1).isdigit():
        number = float(text)  # "4.0" is 4; "4.5" would be cut to 4 by int(), silently
        if not number.is_integer():
            raise ValueError(text)
        return int(number)
    return scalar(text)


def build_arguments(raw: dict[str, dict[str, Any]]) -> tuple[ModelArguments, DataArguments, CrocTrainingArguments]:
    """Instantiate the three argument dataclasses (TrainingArguments initialises the distributed state here)."""
    model_args = ModelArguments(**raw["model"])
    data_args = DataArguments(**raw["data"])
    training_args = CrocTrainingArguments(**raw[TRAINING])
    return model_args, data_args, training_args
