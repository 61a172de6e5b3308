"""Reading a Trainer checkpoint's weights back into a live Croc model, and writing checkpoints atomically.

`save_pretrained` writes a Llava-family model in the Hub layout (`language_model.model.*`, `vision_tower.*`, ...:
transformers reverses its checkpoint conversion mapping on save), but `Trainer._load_from_checkpoint` feeds the
file's keys straight to `load_state_dict`, so on resume every renamed weight is reported missing and silently keeps
its pre-resume value. Here the keys go through the model's own conversion mapping first, and any weight still
missing is an error.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import (
    WeightConverter,
    WeightRenaming,
    dot_natural_key,
    rename_source_key,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"


def has_full_weights(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / SAFE_WEIGHTS).is_file() or (folder / SAFE_INDEX).is_file()


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint, on the CPU, with the file's key names."""
    folder = Path(folder)
    if (folder / SAFE_WEIGHTS).is_file():
        return load_file(str(folder / SAFE_WEIGHTS), device="cpu")
    shards = sorted(set(json.loads((folder / SAFE_INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard), device="cpu"))
    return state


class CheckpointMismatch(ValueError):
    """A checkpoint's tensors that the model's conversion mapping cannot turn into its parameters."""


def to_model_names(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to the model's parameter names with the model's conversion mapping, and convert the
    tensors of its converters as transformers' loading does: keys in natural order (expert 10 after expert 9), each
    parameter's source tensors gathered by a copy of its converter, then converted together (Qwen3-VL-MoE's
    one-to-one Transposes; Qwen3.5-MoE's per-expert `gate_proj` / `up_proj` / `down_proj` merged into the fused
    `gate_up_proj` and `down_proj`, the layout `save_pretrained` splits them back into)."""
    # With the legacy renames, as `from_pretrained` takes them: LLaVA-OneVision-1.5's `save_pretrained` writes its text
    # model under `model.model.*`, which only the legacy `model.language_model.model` rename brings back (every
    # LLaVA-OneVision-1.5 resume was refused without it).
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    names = set(model.state_dict())
    renamed: dict[str, torch.Tensor] = {}
    gathered: dict[str, WeightConverter] = {}
    for key, tensor in sorted(state.items(), key=lambda item: dot_natural_key(item[0])):
        new_key, pattern = rename_source_key(key, renamings, converters)
        # As transformers' own loading does: a key the renames send to no parameter keeps its name when the model has
        # it (Qwen2.5-VL's legacy `^model` rename sends the pool's `model.prompt_pool` into `model.language_model`,
        # so every Qwen2.5-VL resume was refused).
        if new_key not in names and key in names:
            new_key, pattern = key, None
        converter = next((c for c in converters if pattern in c.source_patterns), None) if pattern else None
        if converter is None or new_key not in names:
            renamed[new_key] = tensor
            continue
        gathered.setdefault(new_key, copy.deepcopy(converter)).add_tensor(new_key, key, pattern, tensor)
    for new_key, converter in gathered.items():
        # A shape-checked Transpose reads the parameter's shape from the model.
        try:
            converted = converter.convert(new_key, model=model, config=model.config)
        except (RuntimeError, ValueError) as error:
            # Tensors that do not merge (an expert's `gate_proj` without its `up_proj`: torch.cat's error, a
            # traceback after the model loaded): one line naming the parameter, as a weight of another shape gets.
            raise CheckpointMismatch(f"its tensors for {new_key} do not convert "
                                     f"({' '.join(str(error).split())[:200]})") from None
        for name, tensor in converted.items():
            renamed[name] = tensor[0] if isinstance(tensor, list) else tensor
    return renamed


def load_weights_into(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a checkpoint folder's weights into `model` in place; raise if any parameter is left without a value."""
    try:
        state = to_model_names(model, read_weights(folder))
    except CheckpointMismatch as error:  # "checkpoint ...": the trainer reports it in one line, as the mismatch below
        raise ValueError(f"checkpoint {folder} does not match the model: {error}") from None
    result = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {folder} does not match the model: missing {missing[:8]}, unexpected "
            f"{result.unexpected_keys[:8]}"
        )


# ---- atomic checkpoints ----
# A checkpoint is written under `<output_dir>/STAGING_DIR/checkpoint-N` and renamed to `<output_dir>/checkpoint-N` only
# once every file is on disk, so a `checkpoint-N` folder is always complete: a save killed at any moment leaves at
# most a staging folder, which the next save or resume removes. The name matches neither transformers' checkpoint
# pattern (`checkpoint-<digits>`) nor its rotation glob (`checkpoint-*`), so nothing else ever reads it.
STAGING_DIR = ".checkpoint-staging"
# The file the Trainer writes last into a checkpoint: a folder without a readable one is incomplete (a checkpoint
# written without staging, e.g. by an earlier version of this project, and killed mid-save).
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def read_trainer_state(folder: str | Path) -> dict[str, Any] | None:
    """A checkpoint's `trainer_state.json` (the file the Trainer writes last) as a dict, or None when it is missing,
    unreadable or not an object."""
    try:
        state = json.loads((Path(folder) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def checkpoint_step(folder: str | Path) -> int | None:
    """The `global_step` of a checkpoint's readable `trainer_state.json` (the file the Trainer writes last), or None."""
    step = (read_trainer_state(folder) or {}).get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def is_complete_checkpoint(folder: str | Path) -> bool:
    """True when `folder` holds a readable `trainer_state.json`, the file the Trainer writes last."""
    return checkpoint_step(folder) is not None


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (highest N) first, links to folders included, and links to
    nothing: a checkpoint moved to a disk that is not mounted now cannot be resumed, which is not the same as none
    (the run would start over, fail to save over the link, and say that rerunning starts over)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = sorted(((int(match.group(1)), path) for path in output_dir.iterdir()
                    if (path.is_dir() or path.is_symlink()) and (match := _CHECKPOINT.match(path.name))),
                   reverse=True)
    return [path for _, path in found]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest intact `checkpoint-N` in `output_dir` (`checkpoint_problem` finds nothing wrong with it), warning
    about each newer one it passes over; None when there is none."""
    for folder in checkpoint_folders(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            note_added_reports(folder)
            return str(folder)
        logger.warning("skipping checkpoint %s: %s (kept; not resumed)", folder, problem)
    return None


# A checkpoint past the one a run was rolled back to, renamed out of the `checkpoint-<digits>` names (see
# `set_aside_later_checkpoints`).
ABANDONED_SUFFIX = "-abandoned"


def set_aside_later_checkpoints(output_dir: str | Path, resumed_from: str | Path | None) -> list[tuple[Path, Path]]:
    """Rename each `checkpoint-M` of `output_dir` past the step the run goes on from to `checkpoint-M-abandoned`
    (`-abandoned-2`, ... when taken); returns the (old, new) paths. The run goes on from `resumed_from`, or from
    nothing (every checkpoint is later): a roll-back to a named checkpoint, a resume past newer checkpoints that are
    not intact (a file added since, a link to a disk not mounted), a run that starts over (`auto_resume=false`).
    Left as they were, the run would replace them, unsaid, when it reaches their step (the files the user put in
    them deleted), rotation would weigh them against its own (deleting another run's), and a plain rerun would
    resume the abandoned line's newest, off the curve the user chose. Renamed, they are kept, and neither resumed nor
    rotated (only `checkpoint-<digits>` folders are) nor uploaded (`checkpoint-*`). A folder without a readable
    `trainer_state.json` (the file written last: a save cut short in place by an earlier version, or a folder the
    user made) is no checkpoint: it stays until the run saves that step, which sets it aside then
    (`promote_checkpoint`)."""
    step = -1 if resumed_from is None else checkpoint_step(resumed_from)
    if step is None:
        return []
    moved = []
    for folder in reversed(checkpoint_folders(output_dir)):
        if int(_CHECKPOINT.match(folder.name).group(1)) <= step:
            continue
        if folder.is_dir() and not is_complete_checkpoint(folder):
            continue
        target = _unique_name(folder, ABANDONED_SUFFIX)  # rolled back past it before: keep both
        folder.rename(target)
        moved.append((folder, target))
    return moved


def rotate_checkpoints(output_dir: str | Path, save_total_limit: int | None, keep: tuple = ()) -> None:
    """Delete the oldest `checkpoint-N` folders of `output_dir` until `save_total_limit` are left, never the newest
    one nor those in `keep` (the best checkpoint). Oldest by modification time, as the Trainer rotates (a run
    resumed from an older checkpoint keeps what it writes now), by step where the file system's times do not tell
    them apart. Only folders named `checkpoint-<digits>` are checkpoints: transformers' rotation takes every
    `checkpoint-*` folder, so a `checkpoint-best` or `checkpoint-2000-keep` the user made in `output_dir` was
    deleted with the old checkpoints. Of those, only the ones this run wrote count (`foreign_checkpoint`): a
    `checkpoint-0` the user made, or one copied from another run, is left as it is, said once, and not counted
    (counted, it would take the place of one of the run's own forever)."""
    if save_total_limit is None or save_total_limit <= 0:
        return
    run_record = _read_record(output_dir)
    folders = []
    for path in checkpoint_folders(output_dir):
        if not path.is_dir():  # a link to nothing has no time, and is no folder to delete
            continue
        why = foreign_checkpoint(path, run_record)
        if why is None:
            folders.append((int(_CHECKPOINT.match(path.name).group(1)), path))
        elif str(path.resolve()) not in _FOREIGN_NOTED:  # every save rotates: the line is said once per run
            _FOREIGN_NOTED.add(str(path.resolve()))
            logger.warning("save_total_limit: %s is kept as it is and not counted: %s", path, why)
    if len(folders) <= save_total_limit:
        return
    times = {path: _saved_at(path) for _, path in folders}
    by_time = max(times.values()) - min(times.values()) >= 1.0
    ordered = [path for _, path in sorted(folders, key=lambda item: (times[item[1]], item[0]) if by_time else item[0])]
    protected = {ordered[-1].resolve(), *(Path(path).resolve() for path in keep if path)}
    remaining = len(ordered)
    for path in ordered:
        if remaining <= max(save_total_limit, len(protected)):
            break
        if path.resolve() not in protected:
            logger.info("deleting %s (save_total_limit=%d)", path, save_total_limit)
            _delete_checkpoint(path)
            remaining -= 1


# The folders `rotate_checkpoints` found not to be the run's, already said in this process.
_FOREIGN_NOTED: set[str] = set()


def _read_record(folder: str | Path) -> dict[str, Any] | None:
    # Imported here: the run record's module is not needed to read or write a checkpoint, only to tell whose it is.
    from .run_record import read_run_record

    return read_run_record(folder)


def foreign_checkpoint(folder: str | Path, run_record: dict[str, Any] | None) -> str | None:
    """Why the `checkpoint-N` folder `folder` is not one this run wrote, in a few words, or None when it is: rotation
    deletes a folder's files only on the word of its manifest, so a folder without a readable one (made or copied
    in by the user, or saved by an earlier version of this project) is never deleted, and neither is one whose run
    record is not this run's (`run_record`, output_dir's: a checkpoint copied in from a run of another stage, data,
    seed, ...; the learning rate and the other values a resume may accept a change of do not count)."""
    folder = Path(folder)
    try:
        files = dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"it has no readable {MANIFEST}, so this run did not write it (made or copied in, or an earlier version's)"
    if run_record is None:  # a run that keeps no record (the trainer used alone) has only the manifest to go by
        return None
    from .run_record import FIXED, RUN_RECORD, record_differences

    saved = _read_record(folder) if RUN_RECORD in files else None
    if saved is None:
        return f"its manifest lists no {RUN_RECORD}, so it is not this run's"
    differences = [difference.key for difference in record_differences(saved, run_record) if difference.key in FIXED]
    if differences:
        return f"its {RUN_RECORD} is another run's (it differs in {', '.join(differences[:4])})"
    return None


def _saved_at(folder: Path) -> float:
    """When a checkpoint was saved: its manifest's time (written last, and touched by nothing after), not the
    folder's, which a file added since (an evaluation's report) makes the newest, so rotation deleted the checkpoint
    just saved or resumed from and kept an older one."""
    try:
        return (folder / MANIFEST).stat().st_mtime
    except OSError:
        return folder.stat().st_mtime


# What is left of a rotated checkpoint that held files the run did not write: the folder renamed out of the
# `checkpoint-<digits>` names, so that it is neither resumed nor rotated again nor uploaded (`checkpoint-*`).
ROTATED_SUFFIX = "-rotated"


def _unique_name(folder: Path, suffix: str) -> Path:
    target, count = folder.with_name(folder.name + suffix), 2
    while target.exists() or target.is_symlink():
        target, count = folder.with_name(f"{folder.name}{suffix}-{count}"), count + 1
    return target


def _delete_checkpoint(folder: Path) -> None:
    """Delete what the run wrote into a checkpoint folder (the files its manifest lists), never a file the user added
    since (an evaluation's scores) nor one of its files the user replaced since (another size): a folder left with
    such files is renamed `checkpoint-N-rotated` and said. A
    folder with no readable manifest never comes here (`foreign_checkpoint`): there is nothing to say what the run
    wrote, and transformers' way, the folder deleted whole, took the user's files with it."""
    try:
        listed = dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    # A name that leads out of the folder (`../x`, absolute, through a link) is no file of the checkpoint's, whatever
    # a manifest says: only what lies inside it is deleted.
    inside = folder.resolve()
    written = {name: entry for name, entry in listed.items()
               if isinstance(name, str) and (folder / name).resolve().is_relative_to(inside)
               and _as_written(folder / name, entry)}
    added = sorted(set(_files(folder)) - set(written))
    if not added:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in [*written, MANIFEST]:
        (folder / name).unlink(missing_ok=True)
    for sub in sorted((path for path in folder.rglob("*") if path.is_dir() and not path.is_symlink()),
                      key=lambda path: len(path.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    target = _unique_name(folder, ROTATED_SUFFIX)
    folder.rename(target)
    how = "added or changed" if set(added) & set(listed) else "added"
    logger.warning("save_total_limit: deleted what the run wrote into %s and kept the %d file(s) %s since (%s) in %s",
                   folder.name, len(added), how, ", ".join(added[:3]) + (", ..." if len(added) > 3 else ""), target)


# ---- manifests ----
# Every checkpoint carries a manifest written when it was saved: the size and SHA-256 of every file in it. A
# checkpoint is resumed only when each file is there with its recorded size and hash and no other file was added,
# so a truncated `model.safetensors` (a disk that filled up, a copy cut short) or a file swapped in afterwards sends
# the run to the newest intact checkpoint instead of a traceback or a silently different state.
MANIFEST = "croc_manifest.json"
MANIFEST_FORMAT = 1
_HASH_CHUNK = 16 << 20


# Files a user's own scripts add to a checkpoint (an evaluation's scores, notes, plots): no resume reads them, so they
# neither make the checkpoint not intact (every checkpoint an evaluation touched would be refused) nor get deleted
# with it (`rotate_checkpoints`). Anything of another kind, anything named as a file transformers, PEFT, DeepSpeed or
# this project reads, and anything inside a folder the save wrote (a DeepSpeed or FSDP shard folder) still does.
_REPORT_SUFFIXES = frozenset({".json", ".jsonl", ".txt", ".md", ".csv", ".tsv", ".log", ".yaml", ".yml", ".html",
                              ".png", ".jpg", ".jpeg", ".svg", ".pdf"})
_READ_BY_NAME = frozenset({"config.json", "generation_config.json", "adapter_config.json", "trainer_state.json",
                           "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                           "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                           "chat_template.json", "vocab.json", "vocab.txt", "merges.txt", "tekken.json",
                           "params.json", "quantize_config.json", "latest",
                           # this trainer's own, read back on resume (an older checkpoint's manifest may lack them)
                           "data_report.json", "logging_window.json", "nonfinite_steps.json"})


def is_report_file(name: str, manifest_files) -> bool:
    """True when `name` (a path relative to a checkpoint folder, not in its manifest `manifest_files`) is a file a
    user's script added that no resume reads: a report (scores, notes, plots) at the top of the checkpoint or in a
    folder of its own, not named as a file any loader looks for."""
    path = Path(name)
    if path.suffix.lower() not in _REPORT_SUFFIXES or path.name in _READ_BY_NAME or path.name.startswith("croc_"):
        return False
    if path.name.endswith(".index.json"):
        return False
    written_folders = {Path(listed).parts[0] for listed in manifest_files if len(Path(listed).parts) > 1}
    return len(path.parts) == 1 or path.parts[0] not in written_folders


def added_report_files(folder: str | Path) -> list[str]:
    """The files of a checkpoint folder not in its manifest that `is_report_file` lets stay (empty without a
    readable manifest)."""
    folder = Path(folder)
    try:
        files = dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [name for name in sorted(set(_files(folder)) - set(files)) if is_report_file(name, files)]


def note_added_reports(folder: str | Path) -> None:
    """Say which files of a checkpoint about to be resumed were added after its save (and stay unread)."""
    if added := added_report_files(folder):
        logger.info("%s holds %s, added after the save: no resume reads them; they stay", folder,
                    ", ".join(added[:5]) + (", ..." if len(added) > 5 else ""))


def _as_written(path: Path, entry: Any) -> bool:
    """Whether the file a manifest lists is still the one the save wrote, as far as its size tells: hashing every
    rotated checkpoint would read its weights and optimiser state again at every save, and file times say nothing
    once a folder was copied (a copy that keeps no times, manifest first, made every file of every checkpoint look
    changed, and rotation kept them all)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return path.is_file() and not path.is_symlink() and isinstance(entry, dict) and stat.st_size == entry.get("size")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.is_file() and path.name != MANIFEST)


def _hash_all(folder: Path, names: list[str]) -> dict[str, str]:
    # hashlib releases the GIL on large buffers: the files of a checkpoint (ZeRO shards, optimizer states) hash in
    # parallel, as fast as the disk reads them.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(names, pool.map(lambda name: _sha256(folder / name), names)))


def write_manifest(folder: str | Path) -> dict:
    """Write `MANIFEST` into a fully written checkpoint folder; returns it."""
    folder = Path(folder)
    names = _files(folder)
    hashes = _hash_all(folder, names)
    manifest = {"format": MANIFEST_FORMAT,
                "files": {name: {"size": (folder / name).stat().st_size, "sha256": hashes[name]} for name in names}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


# Checkpoints already verified in this process, by folder and the (name, size, modification time) of every file: the
# resume plan and the trainer both ask, the files are hashed once, and a file touched since is hashed again.
_VERIFIED: dict[str, tuple] = {}


def _stamp(folder: Path) -> tuple:
    return tuple((path.relative_to(folder).as_posix(), path.stat().st_size, path.stat().st_mtime_ns)
                 for path in sorted(folder.rglob("*")) if path.is_file())


# `checkpoint_problem`'s words for a checkpoint without a manifest: one made by hand, or by a version of this project
# from before manifests (2026-12-05), whose files nothing vouches for.
NO_MANIFEST = f"no {MANIFEST} (written by an earlier version of this project, or not by it)"
# What a user can do with such a checkpoint, said where a run refuses it.
NO_MANIFEST_WAY_ON = ("a checkpoint of a version from before manifests resumes only under that version: finish the run "
                      "with it, or start a new run from its weights (--model.name_or_path=CHECKPOINT and another "
                      "output_dir; its optimizer state and data position are not carried)")


def checkpoint_problem(folder: str | Path, hashes: bool = True) -> str | None:
    """What is wrong with a checkpoint folder, in a few words, or None when it is intact: complete (a readable
    `trainer_state.json`), with a manifest whose every file is present with its size (and, with `hashes`, its
    SHA-256), no file beyond it, and every file that resuming unpickles loadable without running code
    (`unpicklable_files`)."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        return f"it is a link to {os.readlink(folder)}, which is not there (a disk not mounted?)"
    if not folder.exists():
        return "no such folder"
    if not folder.is_dir():
        return "it is a file, not a checkpoint folder (name the checkpoint-N folder)"
    if not is_complete_checkpoint(folder):
        return f"no readable {TRAINER_STATE} (its save was interrupted)"
    # The checks below read the folder's own files: a link inside (a shard folder linked in) would be read from
    # wherever it points, and a linked folder's files are not listed by the search for files to unpickle safely.
    links = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_symlink())
    if links:
        return f"{links[0]} is a link (a checkpoint this trainer writes holds none); it is not followed"
    step = checkpoint_step(folder)
    match = _CHECKPOINT.match(folder.name)
    if match and step != int(match.group(1)):
        return f"it is named {folder.name} but holds step {step} (renamed?)"
    try:
        stamp = _stamp(folder)
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except FileNotFoundError:
        return NO_MANIFEST
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable {MANIFEST} ({type(error).__name__})"
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int) and not isinstance(entry["size"], bool)
                and isinstance(entry.get("sha256"), str)):
            return f"unreadable {MANIFEST} (the entry of {name!r} is not a size and a SHA-256)"
    if hashes and _VERIFIED.get(str(folder.resolve())) == stamp:
        return None
    present = _files(folder)
    extra = [name for name in sorted(set(present) - set(files)) if not is_report_file(name, files)]
    if extra:
        return f"{extra[0]} is not in its manifest (added after the save)"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry.get("size"):
            return f"{name} is {size:,} bytes, the manifest says {entry.get('size'):,} (truncated or changed)"
    if not hashes:
        return None
    for name, digest in _hash_all(folder, sorted(files)).items():
        if digest != files[name].get("sha256"):
            return f"{name} does not match its SHA-256 in the manifest (changed after the save)"
    unsafe = unpicklable_files(folder)
    if unsafe:
        return unsafe
    _VERIFIED[str(folder.resolve())] = stamp
    return None


# ---- files that resuming unpickles ----
# transformers loads its own checkpoint files (optimizer.pt, scheduler.pt, rng_state*.pth, scaler.pt) with
# `weights_only=True`; DeepSpeed's engine loads its shards (`global_step*/*.pt`) with a full unpickler, which runs
# whatever code a crafted file names. Every such file is first loaded here with PyTorch's restricted unpickler
# (tensors, containers, numbers and strings, plus the few plain classes DeepSpeed writes, listed below), so a file
# that names anything else is refused before any full unpickler sees it. Tensor data is memory-mapped, not read.
PICKLED_SUFFIXES = (".pt", ".pth")


def _deepspeed_safe_globals() -> list:
    """The classes DeepSpeed pickles into its ZeRO checkpoints, all plain data rebuilt from their fields: the ZeRO
    stage enum, the loss scalers, and the (numel, start) address of a parameter's slice in a flat partition."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # DeepSpeed not installed: no DeepSpeed checkpoint will be loaded either
        return []
    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def unpicklable_files(folder: str | Path) -> str | None:
    """The first file of `folder` that resuming would unpickle and that PyTorch's restricted unpickler refuses,
    described in a few words; None when every such file loads as data. FSDP's sharded checkpoints
    (`torch.distributed.checkpoint`) are checked as their reader reads them: `_dcp_problem`."""
    from transformers.trainer_pt_utils import safe_globals

    folder = Path(folder)
    allowed = _deepspeed_safe_globals()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _DCP_METADATA.match(path.name):
            problem = _dcp_problem(path)
            if problem is not None:
                return f"{path.relative_to(folder)}: {problem}; it is not loaded"
        if not path.is_file() or path.suffix not in PICKLED_SUFFIXES:
            continue
        try:
            with safe_globals(), torch.serialization.safe_globals(allowed):
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001  (any refusal or damage means: do not load it)
            return f"{path.relative_to(folder)} does not load as plain data ({_few_words(error)}); it is not loaded"
    return None


def _few_words(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"


# FSDP's sharded state (transformers saves `pytorch_model_fsdp_0/`, `optimizer_0/` with torch.distributed.checkpoint)
# is a `.metadata` file, which its reader loads with plain `pickle.load`, and `.distcp` files, whose tensors it loads
# with `weights_only=True` but whose other values ("bytes items") its default planner loads with
# `weights_only=False`. Both are checked here first: the metadata through an unpickler that builds only the plain
# classes torch.distributed.checkpoint writes there (the standard library's documented way to restrict a pickle),
# every bytes item with PyTorch's restricted unpickler.
_DCP_METADATA = re.compile(r"^(__\d+)?\.metadata$")
_DCP_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class _DcpMetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _DCP_GLOBALS.get(module, ()) or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                    torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a class torch.distributed.checkpoint writes")


def _dcp_problem(metadata_path: Path) -> str | None:
    """What keeps a torch.distributed.checkpoint folder (named by its metadata file) from loading as plain data, in
    a few words, or None."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    from transformers.trainer_pt_utils import safe_globals

    try:
        with metadata_path.open("rb") as file:
            metadata = _DcpMetadataUnpickler(file).load()
        byte_items = {name for name, entry in metadata.state_dict_metadata.items()
                      if isinstance(entry, BytesStorageMetadata)}
        places = [info for index, info in (metadata.storage_data or {}).items() if index.fqn in byte_items]
    except Exception as error:  # noqa: BLE001  (any refusal or damage means: do not load it)
        return f"does not load as plain data ({_few_words(error)})"
    for info in places:
        if info.transform_descriptors:  # compressed or otherwise transformed: not readable here
            return f"a value is stored transformed ({', '.join(info.transform_descriptors)}), which is not checked"
        try:
            with (metadata_path.parent / info.relative_path).open("rb") as file:
                file.seek(info.offset)
                value = io.BytesIO(file.read(info.length))
            with safe_globals():
                torch.load(value, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001
            return f"a value in {info.relative_path} does not load as plain data ({_few_words(error)})"
    return None


def discard_staging(output_dir: str | Path) -> None:
    """Remove what an interrupted save left in `output_dir` (main process only). A staging path that is a link or a
    file is not the trainer's: the link is removed, never followed."""
    staging = Path(output_dir) / STAGING_DIR
    if staging.is_symlink() or staging.is_file():
        logger.warning("removing %s, a %s where checkpoints are staged", staging,
                       "link" if staging.is_symlink() else "file")
        staging.unlink()
        return
    if staging.exists():
        leftovers = sorted(path.name for path in staging.iterdir())
        if leftovers:
            logger.warning("removing the unfinished checkpoint save %s left by an interrupted run",
                           ", ".join(str(staging / name) for name in leftovers))
        shutil.rmtree(staging)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Files only a save writes into a checkpoint (the Trainer's state, this project's records), never a model folder a
# user copies: a folder holding one, and no file of the user's, is a save's.
_SAVE_ONLY = frozenset({TRAINER_STATE, "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", MANIFEST,
                        "croc_run.json", "logging_window.json"})


def _unfinished_save(folder: Path) -> bool:
    """Whether `folder` (a `checkpoint-N` the run is about to save) is a save cut short in place, which the save
    replaces: a real folder holding a file only a save writes (`_SAVE_ONLY`, `rng_state*.pth`) and no file a user
    adds (`is_report_file`: notes, scores, plots; a PEFT card too, so such a folder is kept rather than deleted)."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    files = [*_files(folder), *([MANIFEST] if (folder / MANIFEST).is_file() else [])]
    names = {Path(name).name for name in files}
    saved = any(name in _SAVE_ONLY or name.startswith("rng_state") for name in names)
    return saved and not any(is_report_file(name, ()) for name in files)


def promote_checkpoint(staged: str | Path, final: str | Path, before_rename: Callable[[], None] | None = None) -> None:
    """Make the fully written `staged` folder the checkpoint `final`, in one rename.

    Files and folders are flushed first, so the rename cannot reach the disk before their contents (a machine that
    loses power right after still has either no `final` or a complete one). A `final` already there is replaced
    only when it is a save cut short in place (`_unfinished_save`: an earlier version's, killed mid-save); any other
    (a folder the user made under that name, weights copied in) is renamed `checkpoint-N-abandoned` and said, never
    deleted. `before_rename` runs after the flushes, right before anything in the run folder changes (a check that
    raises to leave it as it is)."""
    staged, final = Path(staged), Path(final)
    for path in sorted(staged.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(staged)
    if before_rename is not None:
        before_rename()
    if _unfinished_save(final):
        shutil.rmtree(final)
    elif final.exists() or final.is_symlink():
        aside = _unique_name(final, ABANDONED_SUFFIX)
        final.rename(aside)
        logger.warning("%s was already there (not a checkpoint this run can resume); it is kept as %s", final, aside)
    os.replace(staged, final)
    _fsync(final.parent)
