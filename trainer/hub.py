"""Publishing the final folder: `--push_to_hub`, or `--hub_dry_run DIR`, which writes what the push would upload.

The upload set is the files of `output_dir` that a model repository needs (`files_to_upload`): the Trainer's own
ignore patterns (checkpoints, `_*`) plus this machine's records, which stay local: `training_args.bin` (the pickled
arguments, `--hub_token` among them), the data report and rejected rows (local data paths), TensorBoard logs, hidden
files (the run lock, publish markers). JSON files go up with local paths in their path fields written as folder
names (`write_upload_set`: a LoRA adapter's `base_model_name_or_path`). The dry run writes that set into DIR; the
push writes it into a staging folder inside `output_dir` (hard links) and uploads exactly that file list in one commit.
Both scan the set for tokens, local paths and the user name first (`modeling_croc.upload_scan`), and refuse with one
line.

`check_publishing_arguments` runs before the model loads: the dry-run folder rule, the push strategy and a token.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from huggingface_hub import ModelCard, get_token
from huggingface_hub.utils import (
    DEFAULT_IGNORE_PATTERNS,
    HFValidationError,
    filter_repo_objects,
    validate_repo_id,
)
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import HubStrategy

from data_recipes import recorded_image_root
from modeling_croc.provenance import is_hub_id
from modeling_croc.publish_folder import (
    PublishError,
    check_publish_folder,
    copy_file,
    fill_publish_folder,
    prepare_publish_folder,
)
from modeling_croc.upload_scan import UploadLeakError, check_upload_set, push_files

from .cli import ConfigError
from .data_report import REJECTS_FILE, REPORT_FILE
from .resume import merged_folder
from .run_record import RUN_RECORD

logger = logging.getLogger(__name__)

# `Trainer.push_to_hub` (transformers 5.23) passes these; huggingface_hub's own defaults keep `.git` out.
TRAINER_IGNORE_PATTERNS = ["_*", "checkpoint-*"]
HUB_DEFAULT_IGNORE_PATTERNS = list(DEFAULT_IGNORE_PATTERNS)
# This machine's records of the run, never uploaded: hidden files (the run lock, publish markers, a staging folder),
# the pickled TrainingArguments (hub_token and local paths inside), the data report and rejected rows (local data
# paths), TensorBoard logs wherever logging_dir puts them (the host name in every event file's name, the arguments
# inside) and W&B's folder wherever WANDB_DIR puts it inside output_dir (host, paths and the command line; a
# WANDB_DIR next to logging_dir, `output_dir/logs`, holds it one level down).
LOCAL_ONLY_PATTERNS = [".*", "*/.*", TRAINING_ARGS_NAME, REPORT_FILE, REJECTS_FILE, RUN_RECORD, "runs/*",
                       "*events.out.tfevents.*", "wandb/*", "*/wandb/*"]
# JSON fields that name a folder: a local path there is written as the folder's name in the upload.
PATH_FIELDS = ("_name_or_path", "name_or_path", "base_model_name_or_path", "best_model_checkpoint")
STAGING_PREFIX = ".hub-upload-"
DRY_RUN_OPTION = "--hub_dry_run"


def run_folders(model_args, data_args, args) -> dict[str, str]:
    """The folders a dry run's folder must keep clear of (be none of, lie inside none of, contain none of), by the
    name a refusal gives them: `output_dir`, the LoRA merge folder, and what the run reads: the data (its file or
    folder, and the image root its rows name images under) and each local model source. A dry run replaces its
    folder as a whole: pointed at the run's own data or base model it used to delete the one and overwrite the
    other."""
    folders = {"output_dir": args.output_dir}
    if model_args.use_peft:
        folders["LoRA merge folder"] = merged_folder(args.output_dir)
    sources = {"model.name_or_path": model_args.name_or_path, "model.vision_tower": model_args.vision_tower,
               "model.language_model": model_args.language_model, "data.path": data_args.path,
               "data.image_root": data_args.image_root, "resume_from_checkpoint": _named_checkpoint(args)}
    data = Path(data_args.path).expanduser() if data_args.path else None
    if data is not None and data_args.image_root is None:
        # A build's images lie under the root it recorded. A JSON file's default root, its own folder, is not kept
        # clear of: it is often the project's folder, and a new dry-run folder next to the file deletes nothing.
        build = data if data.is_dir() else data.parent if data.name == "data.jsonl" else None
        sources["the build's image root"] = recorded_image_root(build) if build is not None else None
    # A Hub id is no folder of this machine; a path that does not exist yet cannot be deleted.
    folders.update({name: str(value) for name, value in sources.items()
                    if value and os.path.exists(os.path.expanduser(str(value)))})
    return folders


def _named_checkpoint(args) -> str | None:
    checkpoint = args.resume_from_checkpoint
    return checkpoint if isinstance(checkpoint, str) else None


def check_publishing_arguments(args, keep_clear_of: dict[str, str]) -> None:
    """Refuse, before the model loads, a publish that would delete files, push past the leak check, or fail at the
    end of the run. Raises `ConfigError` (one line).

    * `hub_dry_run`: the folder rule of `modeling_croc.publish_folder` (new, empty or an earlier dry run's folder),
      clear of `keep_clear_of` (`run_folders`: output_dir, the LoRA merge folder, the data and the model sources).
    * `push_to_hub`: `hub_strategy` must be `end`: the other strategies make the Trainer upload `output_dir` (with
      `training_args.bin`) or whole checkpoints from inside the training loop, where nothing is checked; and a
      token must be available offline (`--hub_token`, `HF_TOKEN` or `hf auth login`).
    """
    if args.hub_dry_run:
        try:
            check_publish_folder(args.hub_dry_run, option=DRY_RUN_OPTION, keep_clear_of=keep_clear_of)
        except PublishError as error:
            raise ConfigError(str(error)) from None
    if args.push_to_hub and not args.hub_dry_run:
        strategy = HubStrategy(args.hub_strategy)
        if strategy != HubStrategy.END:
            raise ConfigError(f"hub_strategy={strategy.value} uploads output_dir or checkpoints during training, "
                              "without the check for tokens and local paths; use --hub_strategy=end (the final "
                              "folder is checked and pushed once)")
        repo_id = _repo_id(args)
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            source = "--hub_model_id" if args.hub_model_id else "the repository named after output_dir"
            raise ConfigError(f"{source} {repo_id!r} is not a valid Hub repository id ({error}); pass "
                              "--hub_model_id=NAME or USER/NAME") from None
        if not (args.hub_token or get_token()):
            raise ConfigError("push_to_hub needs a Hugging Face token with write access, and none is available: run "
                              "`hf auth login`, set HF_TOKEN or pass --hub_token before training")


def _repo_id(args) -> str:
    """The repository a push goes to, as the Trainer names it: `hub_model_id`, else the name of `output_dir`."""
    return args.hub_model_id or Path(args.output_dir).absolute().name


def files_to_upload(folder: str | Path) -> list[str]:
    """Relative paths of the files of `folder` (a run's `output_dir`) that a push uploads, sorted."""
    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    ignored = TRAINER_IGNORE_PATTERNS + HUB_DEFAULT_IGNORE_PATTERNS + LOCAL_ONLY_PATTERNS
    return list(filter_repo_objects(paths, ignore_patterns=ignored))


def _is_local_path(value: str) -> bool:
    """Whether a path field's value names a local folder: absolute, under `~`, on a drive, or relative and no Hub id
    (`..` or `.` in it, more than two components: `--model.name_or_path=../team/client/base` is stored as typed,
    and neither the scan's roots nor its folders know it). `org/name` stays: it is the Hub's spelling, unless it is
    a folder here (`outputs/stage1`), which is what transformers loaded it from: kept, the pushed adapter_config.json
    sent PEFT to the Hub repo of that name, someone else's, while the card (`is_hub_id`) listed no base model."""
    if os.path.isabs(value) or value.startswith("~") or PureWindowsPath(value).drive != "":
        return True
    return value != "" and not is_hub_id(value)


def _folder_name(value: str) -> str:
    """The last component of the local path `value` (`../base` -> `base`), folded without the working directory,
    whose names are this machine's: "" when none is left (`..`), as transformers writes a config of no folder."""
    if PureWindowsPath(value).drive:
        return PureWindowsPath(value).name
    name = PurePosixPath(os.path.normpath(value.replace("\\", "/"))).name
    return "" if name in (".", "..") else name


def _without_local_paths(node: Any) -> bool:
    """Write each local path in a `PATH_FIELDS` field of the JSON value `node` as its last component, in place.
    Returns whether anything changed."""
    changed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PATH_FIELDS and isinstance(value, str) and _is_local_path(value):
                node[key] = _folder_name(value)
                changed |= node[key] != value  # `my base` (no Hub id, yet a name already) stays as it is
            else:
                changed |= _without_local_paths(value)
    elif isinstance(node, list):
        for value in node:
            changed |= _without_local_paths(value)
    return changed


def write_upload_set(output_dir: str | Path, files: list[str], target: str | Path, *, link: bool = False) -> None:
    """Write `files` of `output_dir` into `target` as they go up: JSON files with the local paths of their path fields
    written as folder names, every other file copied (`link`: hard-linked where possible)."""
    output_dir, target = Path(output_dir), Path(target)
    for name in files:
        source = output_dir / name
        if name.endswith(".json"):
            try:
                data = json.loads(source.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError):
                data = None
            if data is not None and _without_local_paths(data):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                continue
        copy_file(source, target / name, link=link)


def _save_final_folder(trainer) -> None:
    """Save the model and card into `output_dir` as `Trainer.push_to_hub` does, without its upload: on every process
    (ZeRO-3 gathers are collective); the card on the main process."""
    # `_internal_call` keeps `save_model` from starting the Trainer's own, unchecked push.
    trainer.save_model(trainer.args.output_dir, _internal_call=True)
    if trainer.is_world_process_zero():
        trainer.create_model_card(model_name=trainer.args.hub_model_id or Path(trainer.args.output_dir).name)
        ModelCard.load(Path(trainer.args.output_dir) / "README.md")  # parses the metadata block: fails early if broken


def _scan_folders(args) -> list[str | None]:
    """The run's folders the scan looks for, on top of home and the working directory."""
    return [args.output_dir, args.hub_dry_run, args.resume_from_checkpoint if isinstance(
        args.resume_from_checkpoint, str) else None]


def hub_dry_run(trainer, target: str | Path, keep_clear_of: dict[str, str]) -> list[str]:
    """Save the model and card as the push would, then write the files it would upload into `target` (the folder
    rule applies again, clear of `keep_clear_of` (`run_folders`), as it may have been created since the run started)
    and scan them.

    Returns the written relative paths. Raises `ConfigError` (one line) when `target` may not be written, or when the
    set holds a token, a local path or the user name: the files written are then removed again, so nothing that
    leaked stays ready to upload by hand (the message names what was found and where).
    """
    _save_final_folder(trainer)
    if not trainer.is_world_process_zero():
        return []
    args = trainer.args
    files = files_to_upload(args.output_dir)
    try:
        target = prepare_publish_folder(target, files, option=DRY_RUN_OPTION, keep_clear_of=keep_clear_of)
        # Written and scanned inside output_dir (which holds the same bytes and stays local), copied into the dry
        # run's folder only once the scan passed: a run killed during the copy or the scan leaves nothing that
        # leaked ready to upload by hand, only a staging folder in output_dir that the rerun's dry run ignores.
        # The staged files are hard links (as the push's): copies would need the weights' size again on output_dir's
        # disk, which a dry run into a folder on another disk never needed. The dry run's folder gets copies, so it
        # shares no file with output_dir.
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=args.output_dir))
        try:
            write_upload_set(args.output_dir, files, staging, link=True)
            check_upload_set(staging, files, tokens=[args.hub_token], folders=_scan_folders(args))
            fill_publish_folder(staging, files, target)  # a full disk there leaves none of them
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except UploadLeakError as error:
        for name in files:  # what a copy cut short, or an earlier version of this project, left there
            (Path(target) / name).unlink(missing_ok=True)
        raise ConfigError(str(error)) from None
    except PublishError as error:
        raise ConfigError(str(error)) from None
    logger.info("hub dry run: %d files that push_to_hub would upload written to %s", len(files), target)
    return files


def push(trainer, commit_message: str | None = None, token: str | None = None, revision: str | None = None,
         private: bool | None = None):
    """Push the final folder: save it, stage the upload set inside `output_dir`, scan it and upload exactly its files
    (`modeling_croc.upload_scan.push_files`). Returns the `CommitInfo` on the main process, None elsewhere.

    `token`, `revision` and `private` default to `hub_token`, `hub_revision` and `hub_private_repo`; the repository
    is the one the Trainer created (`hub_model_id`, else the name of `output_dir`). Raises `ConfigError` (one line)
    when the set holds a token, a local path or the user name; nothing is uploaded then.
    """
    _save_final_folder(trainer)
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    repo_id = getattr(trainer, "hub_model_id", None) or _repo_id(args)
    files = files_to_upload(args.output_dir)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=args.output_dir)
    try:
        write_upload_set(args.output_dir, files, staging, link=True)
        commit = push_files(staging, files, repo_id, repo_type="model",
                            commit_message=commit_message or f"Croc stage {args.stage}",
                            token=token or args.hub_token, revision=revision or args.hub_revision,
                            private=args.hub_private_repo if private is None else private,
                            folders=_scan_folders(args))
    except PublishError as error:
        raise ConfigError(str(error)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("pushed %d files to %s", len(files), repo_id)
    return commit


__all__ = [
    "check_publishing_arguments", "files_to_upload", "hub_dry_run", "push", "run_folders", "write_upload_set",
]
