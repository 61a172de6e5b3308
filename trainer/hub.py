"""Publishing the final folder: `--push_to_hub`, or `--hub_dry_run DIR`, which writes what the push would upload.

The upload set is the regular files of `output_dir` that a model repository needs (`files_to_upload`): the
Trainer's own ignore patterns (checkpoints, `_*`) and any other checkpoint folder, plus this machine's records, which
stay local at any depth: `training_args.bin` (the pickled arguments, `--hub_token` among them), the data report and
rejected rows (local data paths), TensorBoard logs, hidden files (the run lock, publish markers). A symbolic link is
never followed: one the set would take is refused (`check_no_links`); a named pipe, socket or device is left out.
JSON files go up with local paths in their path fields written as folder names, or as null where something loads
from them (a LoRA adapter's `base_model_name_or_path`): `write_upload_set`. Both publishes write that set into a
staging folder inside `output_dir` (copies; the weights and large files as hard links) and scan it for tokens, local
paths (the run's own folders among them) and the user name (`modeling_croc.upload_scan`), refusing with one line;
the dry run then fills DIR from it, the push uploads exactly that file list in one commit, deleting only the
top-level weight and adapter files it does not rewrite.

`check_publishing_arguments` runs before the model loads: the dry-run folder rule, the push strategy and a token, an
`output_dir` clear of the run's sources and of links, and the files a save carries over from a local model source.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard, get_token
from huggingface_hub.utils import (
    DEFAULT_IGNORE_PATTERNS,
    HFValidationError,
    filter_repo_objects,
    validate_repo_id,
)
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINING_ARGS_NAME
from transformers.trainer_utils import HubStrategy

from data_recipes import recorded_image_root
from modeling_croc.loading import source_kind
from modeling_croc.provenance import without_local_paths
from modeling_croc.publish_folder import (
    PublishError,
    check_publish_folder,
    copy_file,
    fill_publish_folder,
    prepare_publish_folder,
)
from modeling_croc.upload_scan import UploadLeakError, check_upload_set, push_files

from .checkpoint_io import MANIFEST, TRAINER_STATE
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
# WANDB_DIR next to logging_dir, `output_dir/logs`, holds it one level down). The records stay local at any depth: a
# folder the user copied a checkpoint or an older run into holds them too. `report_to=codecarbon` writes its
# emissions.csv into output_dir (transformers' CodeCarbonCallback): the machine's country, region and coordinates.
CODECARBON_FILE = "emissions.csv"
LOCAL_RECORDS = (TRAINING_ARGS_NAME, REPORT_FILE, REJECTS_FILE, RUN_RECORD, CODECARBON_FILE)
LOCAL_ONLY_PATTERNS = [".*", "*/.*", *LOCAL_RECORDS, *(f"*/{name}" for name in LOCAL_RECORDS), "runs/*",
                       "*events.out.tfevents.*", "wandb/*", "*/wandb/*"]
# A folder holding the Trainer's state beside one of these is a checkpoint, whatever its name (`best-step1`, a copy
# of `checkpoint-1`): left out as `checkpoint-*` folders are (optimizer and RNG state, the pickled arguments).
CHECKPOINT_STATE_FILES = (OPTIMIZER_NAME, SCHEDULER_NAME, "rng_state*.pth", "latest")
# What a save carries over from a local model source into output_dir: scanned before the model loads when the run
# publishes, since a leak there cannot be removed from output_dir (the next run writes it again from the source).
# Of stage 1's parts, only the vision tower's image processor and the language model's tokenizer and generation
# settings go on (their configs are converted; a CLIP folder's tokenizer is never used).
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.json",
                    "chat_template.jinja")
SOURCE_FILES_CARRIED = {
    "model.name_or_path": ("config.json", "generation_config.json", *_TOKENIZER_FILES, "processor_config.json",
                           "preprocessor_config.json", "video_preprocessor_config.json"),
    "model.vision_tower": ("preprocessor_config.json",),
    "model.language_model": ("generation_config.json", *_TOKENIZER_FILES),
}
# Fields of a tokenizer's config naming the files it was read from (a Hub uploader's cache path, often): a save does
# not write them again, so they are no leak of the upload.
NOT_SAVED_FIELDS = ("special_tokens_map_file", "tokenizer_file", "vocab_file", "merges_file")
# The repository files a loader reads by their name alone: weights, their shard index, a LoRA adapter. One that an
# earlier push left and this push does not rewrite is deleted in the same commit, since it changes what loads:
# transformers reads a single `model.safetensors` before a shard index, and an `adapter_config.json` makes the repo
# an adapter on its base. Every other remote file stays; the repository's history keeps the deleted ones.
# They are fnmatch patterns (`filter_repo_objects`), where `*` also matches `/`: none holds one, since the loader reads
# these names at the repository's top level only, and the same name in a subfolder is another file (a quantised
# variant the user keeps in `model-4bit/`). Shards are named as transformers writes them, five digits each.
_FIVE_DIGITS = "[0-9]" * 5
_SHARD = f"{_FIVE_DIGITS}-of-{_FIVE_DIGITS}"
LOADED_BY_NAME = ("model.safetensors", f"model-{_SHARD}.safetensors", "model.safetensors.index.json",
                  "pytorch_model.bin", f"pytorch_model-{_SHARD}.bin", "pytorch_model.bin.index.json",
                  "adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")
STAGING_PREFIX = ".hub-upload-"
# The staged set is what the scan reads and, after create_repo's and list_repo_files' round trips, what the commit
# reads again: a hard link shares its file with output_dir, so a write into it in between (an editor saving notes in
# place, a script appending eval results) went up unscanned. Files are staged as copies, except the weights and any
# file of LINKED_MIN_BYTES or more, hard-linked: a copy would need their size again on output_dir's disk. What remains
# is a writer into one of those during the publish.
LINKED_MIN_BYTES = 64 * 2**20
LINKED_SUFFIXES = (".safetensors", ".bin")
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
    * either: `output_dir` is none of the run's sources and contains none (its files are the upload), holds no
      symbolic link the upload would take, and the files a save carries over from a local model source hold no
      token, local path or user name.
    """
    if args.push_to_hub or args.hub_dry_run:
        _check_output_dir_holds_no_source(args.output_dir, keep_clear_of)
        if os.path.isdir(os.path.expanduser(str(args.output_dir))):
            check_no_links(args.output_dir)
        _check_model_sources(args, keep_clear_of)
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


def _check_output_dir_holds_no_source(output_dir: str, keep_clear_of: dict[str, str]) -> None:
    """Refuse an `output_dir` that is or contains one of the run's sources (`run_folders`): the upload set is
    output_dir's files, so the data rows, images or a base model kept there would go up with the model. An
    output_dir inside a data folder uploads none of it, and a named checkpoint is left out as every checkpoint is."""
    out = Path(os.path.realpath(os.path.expanduser(str(output_dir))))
    for name, source in keep_clear_of.items():
        if name in ("output_dir", "LoRA merge folder", "resume_from_checkpoint"):
            continue
        real = Path(os.path.realpath(os.path.expanduser(str(source))))
        if real != out and out not in real.parents:
            continue
        relation = "is" if real == out else "contains"
        raise ConfigError(f"output_dir {output_dir} {relation} the {name} {source}: a publish uploads the files of "
                          f"output_dir, so it would upload the {name} with the model; choose an output_dir outside "
                          "it (nothing was written or deleted)")


def _check_model_sources(args, keep_clear_of: dict[str, str]) -> None:
    """Scan the files a save carries over from each local model source as the upload will hold them (path fields
    written as names), before the model loads: a local path there reaches output_dir again on every run, so the
    refusal names the source file, the one place it can be removed."""
    for option, carried in SOURCE_FILES_CARRIED.items():
        source = keep_clear_of.get(option)
        folder = Path(source).expanduser() if source else None
        if folder is None or not folder.is_dir():
            continue
        names = [name for name in carried if (folder / name).is_file()]
        if not _config_carried_as_is(folder):
            names = [name for name in names if name != "config.json"]
        with tempfile.TemporaryDirectory(prefix="croc-source-scan-") as staging:
            write_upload_set(folder, names, staging)
            for name in names:
                _drop_fields_not_saved(Path(staging) / name)
            try:
                check_upload_set(staging, names, tokens=[args.hub_token], folders=_scan_folders(args, keep_clear_of))
            except UploadLeakError as error:
                first = error.findings[0]
                raise ConfigError(f"{option} folder {source}: {first.file} holds {first.kind} ({first.where}): "
                                  f"{first.text!r}; a publish would carry it into the upload: remove it there "
                                  "(nothing was written or uploaded)") from None


def _drop_fields_not_saved(path: Path) -> None:
    """Remove `NOT_SAVED_FIELDS` from the JSON file `path` (a staged copy), if it is a JSON object holding any."""
    if path.suffix != ".json":
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return
    if isinstance(data, dict) and any(field in data for field in NOT_SAVED_FIELDS):
        path.write_text(json.dumps({key: value for key, value in data.items() if key not in NOT_SAVED_FIELDS},
                                   indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _config_carried_as_is(folder: Path) -> bool:
    """Whether the save writes the model source `folder`'s config.json keys into output_dir's: a Croc folder's,
    loaded as it is. A released checkpoint's is converted (a released LLaVA's `mm_vision_tower` may name the local
    CLIP folder it is built from, and is not kept): the scan at publish time sees what it carries."""
    try:
        return source_kind(folder) == "croc"
    except (OSError, ValueError):  # the load reports a folder it cannot read
        return False


def _repo_id(args) -> str:
    """The repository a push goes to, as the Trainer names it: `hub_model_id`, else the name of `output_dir`."""
    return args.hub_model_id or Path(args.output_dir).absolute().name


IGNORED_PATTERNS = TRAINER_IGNORE_PATTERNS + HUB_DEFAULT_IGNORE_PATTERNS + LOCAL_ONLY_PATTERNS


def is_checkpoint_folder(folder: str | Path) -> bool:
    """Whether `folder` is a checkpoint, whatever its name: it holds this project's checkpoint manifest, or the
    Trainer's state beside optimizer, scheduler or RNG state."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return True
    return (folder / TRAINER_STATE).is_file() and any(any(folder.glob(name)) for name in CHECKPOINT_STATE_FILES)


def _walk(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(regular files, symbolic links, other entries) under `folder`, relative to it; checkpoint folders below it are
    not entered, nor links (a link to a checkpoint folder is left out with it). Other entries are named pipes,
    sockets and devices: reading a pipe waits for a writer (the end-of-run push hung), a socket cannot be read."""
    files, links, others = [], [], []
    for parent, folders, names in os.walk(folder):
        here = Path(parent)
        for name in list(folders):
            path = here / name
            if is_checkpoint_folder(path):
                folders.remove(name)
            elif path.is_symlink():
                folders.remove(name)
                links.append(path.relative_to(folder).as_posix() + "/")
        for name in names:
            path = here / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:  # removed since the listing: nothing to upload
                continue
            kind = links if stat.S_ISLNK(mode) else files if stat.S_ISREG(mode) else others
            kind.append(path.relative_to(folder).as_posix())
    return sorted(files), sorted(links), sorted(others)


def _uploaded(names: list[str]) -> list[str]:
    return list(filter_repo_objects(names, ignore_patterns=IGNORED_PATTERNS))


def files_to_upload(folder: str | Path) -> list[str]:
    """Relative paths of the files of `folder` (a run's `output_dir`) that a push uploads, sorted: regular files only
    (a symbolic link is never followed: `check_no_links` refuses one the set would take; a named pipe, socket or
    device is left out, named in one info line), none in a checkpoint folder (`checkpoint-*` and any other,
    `is_checkpoint_folder`), no local record at any depth."""
    files, _, others = _walk(Path(folder))
    skipped = _uploaded(others)
    if skipped:
        logger.info("not uploaded from %s, as no regular files: %s", folder, ", ".join(skipped))
    return _uploaded(files)


def check_no_links(folder: str | Path) -> None:
    """Raise `ConfigError` (one line, naming the first link) when `folder` (output_dir) holds a symbolic link where
    the upload set would take a file: a link is never followed into an upload, where it would publish whatever it
    points to, a private file outside the folder included."""
    # A folder link counts when a file inside it would go up (`name/-` stands for one): a link under `runs/` or a
    # hidden folder is never uploaded, so it is no reason to refuse.
    links = [name for name in _walk(Path(folder))[1]
             if _uploaded([name.rstrip("/")]) and (not name.endswith("/") or _uploaded([name + "-"]))]
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise ConfigError(f"output_dir {folder} holds the symbolic link {links[0].rstrip('/')}{more}, which a publish "
                          "would upload: a publish never follows a link; replace the link by the file it points to, "
                          "or remove it (nothing was uploaded)")


def write_upload_set(output_dir: str | Path, files: list[str], target: str | Path, *, link: bool = False) -> None:
    """Write `files` of `output_dir` into `target` as they go up: JSON files with the local paths of their path fields
    written as folder names, every other file copied (`link`: the weights and large files hard-linked where
    possible, `LINKED_MIN_BYTES`)."""
    output_dir, target = Path(output_dir), Path(target)
    for name in files:
        source = output_dir / name
        if name.endswith(".json"):
            try:
                data = json.loads(source.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError):
                data = None
            if data is not None and without_local_paths(data):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                continue
        copy_file(source, target / name, link=link and _staged_as_link(source))


def _staged_as_link(path: Path) -> bool:
    """Whether the staged set takes `path` as a hard link: weights, or a file too large to copy twice cheaply."""
    return path.suffix in LINKED_SUFFIXES or path.stat().st_size >= LINKED_MIN_BYTES


def _save_final_folder(trainer) -> None:
    """Save the model and card into `output_dir` as `Trainer.push_to_hub` does, without its upload: on every process
    (ZeRO-3 gathers are collective); the card on the main process."""
    # `_internal_call` keeps `save_model` from starting the Trainer's own, unchecked push.
    trainer.save_model(trainer.args.output_dir, _internal_call=True)
    if trainer.is_world_process_zero():
        trainer.create_model_card(model_name=trainer.args.hub_model_id or Path(trainer.args.output_dir).name)
        ModelCard.load(Path(trainer.args.output_dir) / "README.md")  # parses the metadata block: fails early if broken


def _scan_folders(args, keep_clear_of: dict[str, str] | None = None) -> list[str | None]:
    """The run's folders the scan looks for, on top of home and the working directory: output_dir, the dry run's
    folder, the named checkpoint, and every local folder the run reads (`keep_clear_of`, `run_folders`: the data,
    its image root, the model sources, the LoRA merge folder). Those often lie under a root the scanner does not
    know (`/work`, `/data`, `/nfs`), and a note in output_dir naming the data's path would go up. A data file's
    folder too: its rows' images are read from there by default (`run_folders` leaves it out of what a dry run's
    folder keeps clear of, not of what the run reads)."""
    folders = dict(keep_clear_of or {})
    return [*folders.values(), _data_file_folder(folders.get("data.path")), args.output_dir, args.hub_dry_run,
            _named_checkpoint(args)]


def _data_file_folder(data: str | None) -> str | None:
    """The folder holding the data file `data`; None for a data folder (a build) or no data."""
    path = Path(data).expanduser() if data else None
    return str(path.absolute().parent) if path is not None and path.is_file() else None


def hub_dry_run(trainer, target: str | Path, keep_clear_of: dict[str, str]) -> list[str]:
    """Save the model and card as the push would, then write the files it would upload into `target` (the folder
    rule applies again, clear of `keep_clear_of` (`run_folders`), as it may have been created since the run started)
    once they passed the scan.

    Returns the written relative paths. Raises `ConfigError` (one line) when `target` may not be written, when
    output_dir holds a symbolic link the set would take, or when the set holds a token, a local path or the user
    name: `target` is then left as it was (an earlier dry run's files included), and the message names what was
    found and where in output_dir.
    """
    _save_final_folder(trainer)
    if not trainer.is_world_process_zero():
        return []
    args = trainer.args
    check_no_links(args.output_dir)  # one may have appeared during the run
    files = files_to_upload(args.output_dir)
    try:
        check_publish_folder(target, option=DRY_RUN_OPTION, keep_clear_of=keep_clear_of)
        # Written and scanned inside output_dir (which holds the same bytes and stays local); the dry run's folder
        # is prepared (an earlier dry run's files removed) and filled only once the scan passed: a leak leaves it as
        # it was, and a run killed during the copy or the scan leaves nothing that leaked ready to upload by hand,
        # only a staging folder in output_dir that the rerun's dry run ignores.
        # The staged weights and large files are hard links (as the push's, `LINKED_MIN_BYTES`): copies would need
        # their size again on output_dir's disk, which a dry run into a folder on another disk never needed. The dry
        # run's folder gets copies, so it shares no file with output_dir.
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=args.output_dir))
        try:
            write_upload_set(args.output_dir, files, staging, link=True)
            try:
                check_upload_set(staging, files, tokens=[args.hub_token], folders=_scan_folders(args, keep_clear_of))
            except UploadLeakError as error:
                raise ConfigError(_named_by_output_dir(error, staging, args.output_dir)) from None
            target = prepare_publish_folder(target, files, option=DRY_RUN_OPTION, keep_clear_of=keep_clear_of)
            fill_publish_folder(staging, files, target)  # a full disk there leaves none of them
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except PublishError as error:
        raise ConfigError(str(error)) from None
    logger.info("hub dry run: %d files that push_to_hub would upload written to %s", len(files), target)
    return files


def _named_by_output_dir(error: Exception, staging: str | Path, output_dir: str | Path) -> str:
    """The scanner's message with the staging folder, removed by the time it is read, named as output_dir, where
    the files it names are."""
    return str(error).replace(str(staging), str(output_dir), 1)


def push(trainer, commit_message: str | None = None, token: str | None = None, revision: str | None = None,
         private: bool | None = None, keep_clear_of: dict[str, str] | None = None):
    """Push the final folder: save it, stage the upload set inside `output_dir`, scan it and upload exactly its files
    (`modeling_croc.upload_scan.push_files`). Returns the `CommitInfo` on the main process, None elsewhere.

    `token`, `revision` and `private` default to `hub_token`, `hub_revision` and `hub_private_repo`; the repository
    is the one the Trainer created (`hub_model_id`, else the name of `output_dir`). Raises `ConfigError` (one line)
    when the set holds a token, a local path or the user name; nothing is uploaded then. `keep_clear_of`: the
    run's folders (`run_folders`), whose paths the scan looks for too.
    """
    _save_final_folder(trainer)
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    repo_id = getattr(trainer, "hub_model_id", None) or _repo_id(args)
    check_no_links(args.output_dir)  # one may have appeared during the run
    files = files_to_upload(args.output_dir)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=args.output_dir)
    try:
        write_upload_set(args.output_dir, files, staging, link=True)
        commit = push_files(staging, files, repo_id, repo_type="model",
                            commit_message=commit_message or f"Croc stage {args.stage}",
                            token=token or args.hub_token, revision=revision or args.hub_revision,
                            private=args.hub_private_repo if private is None else private,
                            delete_patterns=LOADED_BY_NAME, folders=_scan_folders(args, keep_clear_of))
    except PublishError as error:
        raise ConfigError(_named_by_output_dir(error, staging, args.output_dir)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("pushed %d files to %s", len(files), repo_id)
    return commit


__all__ = [
    "check_no_links", "check_publishing_arguments", "files_to_upload", "hub_dry_run", "is_checkpoint_folder", "push",
    "run_folders", "write_upload_set",
]
