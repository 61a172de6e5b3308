"""The recipes' only code that talks to the Hugging Face Hub. Called only when a user asks for a Hub source
(`--set hub.NAME=...`) or `--push-to-hub`; tests replace these functions or the `HfApi` methods, never reach the
network. A push uploads an exact, scanned file list (`modeling_croc.upload_scan.push_files`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import is_offline_mode
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from modeling_croc.upload_scan import UploadLeakError, push_files

from . import publish
from .io import DataError

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import CommitInfo, DatasetCard


# The name of a shard as `publish.shard_name` writes it (`data/train-00000-of-00002.parquet`), as an fnmatch pattern:
# digits only, since `*` there also matches `/` and would take `data/train-images/0001.jpg` or `data/train-notes.md`.
_FIVE_DIGITS = "[0-9]" * 5
SHARD_PATTERN = f"{publish.DATA_DIR}/{publish.SPLIT}-{_FIVE_DIGITS}-of-{_FIVE_DIGITS}.parquet"
# A refused connection or a timeout raises the HTTP client's own error (httpx's or requests', by huggingface_hub's
# version), which is not an HfHubHTTPError: its bases name both that error and OSError.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, *HfHubHTTPError.__bases__)


class HubPushError(DataError):
    """A push that did not go through: the network, the Hub refusing a call, or a remote file the card would read
    beside the new shards (refused before any upload). The message is one line, naming the repo."""


def download_hub_file(repo_id: str, filename: str) -> Path:
    """Download one file of a Hub dataset repository (cached by huggingface_hub) and return its path.

    LLaVA-format JSON files go through here rather than `datasets.load_dataset`, because their mixed
    int/str ids make the json builder fail; they are then read by :func:`data_recipes.io.read_records`.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset"))
    except LocalEntryNotFoundError:
        if not is_offline_mode():
            raise
        raise DataError(_not_in_the_cache(f"{repo_id}/{filename}", repo_id)) from None


def load_hub_dataset(repo_id: str, data_files: str | None = None) -> Dataset:
    """Load the `train` split of a Hub dataset with `datasets.load_dataset` (text-only sources)."""
    from datasets import load_dataset

    try:
        return load_dataset(repo_id, data_files=data_files, split="train")
    except ConnectionError:
        if not is_offline_mode():
            raise
        raise DataError(_not_in_the_cache(repo_id, repo_id)) from None


def _not_in_the_cache(source: str, repo_id: str) -> str:
    # Offline, a Hub source is read from the cache (downloaded on a machine with network, built on one without); one
    # that is not there was a traceback from huggingface_hub or datasets.
    return (f"Hub source {source} is not in the Hugging Face cache, and the Hub is switched off here "
            f"(HF_HUB_OFFLINE=1): download it where there is network (`hf download {repo_id} --repo-type dataset`, "
            "with the same HF_HOME), or unset HF_HUB_OFFLINE")


@contextlib.contextmanager
def _reaching(repo_id: str) -> Iterator[None]:
    """A network failure or the Hub's refusal (an HTTP error) as :class:`HubPushError`, one line naming the repo; a
    leak refusal (a ValueError) and every other error as they are."""
    try:
        yield
    except _NETWORK_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise HubPushError(f"could not push to the Hub dataset repo {repo_id}: {reason}") from None


def files_the_card_reads(remote_files: list[str]) -> list[str]:
    """Of a repository's files, those the card's data files (:data:`publish.DATA_FILES`) make `datasets` read as rows:
    `datasets.data_files.resolve_pattern` itself resolves the pattern over empty stand-ins of the files, so hidden
    files, the extension filter and a `*` that stops at `/` are exactly what `load_dataset(repo)` does."""
    from datasets.data_files import resolve_pattern
    from datasets.load import _ALL_ALLOWED_EXTENSIONS

    under = [name for name in remote_files if name.startswith(f"{publish.DATA_DIR}/")
             and ".." not in name.split("/") and not name.startswith("/")]
    if not under:
        return []
    with tempfile.TemporaryDirectory(prefix="hub-files-") as stand_in:
        for name in under:
            path = Path(stand_in, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        try:
            found = resolve_pattern(publish.DATA_FILES, base_path=stand_in, allowed_extensions=_ALL_ALLOWED_EXTENSIONS)
        except FileNotFoundError:
            return []
        return sorted(Path(os.path.relpath(path, stand_in)).as_posix() for path in found)


def check_remote_files(repo_id: str) -> None:
    """Refuse a push to `repo_id` (raises :class:`HubPushError`, before anything is uploaded) when the repository
    holds a file the card's data files would read beside the new shards that this project did not name: its rows
    would be loaded with the push's (`load_dataset` fails on the split sizes, streaming repeats rows), and a push
    deletes only the shards this project named (:data:`SHARD_PATTERN`), never a file the user made."""
    from huggingface_hub import HfApi

    try:
        remote = HfApi().list_repo_files(repo_id, repo_type="dataset")
    except RepositoryNotFoundError:  # created by the push
        return
    stray = [name for name in files_the_card_reads(remote) if not fnmatchcase(name, SHARD_PATTERN)]
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise HubPushError(
            f"refusing to push to {repo_id}: it holds {shown}, which the card's data files ({publish.DATA_FILES}) "
            "would load as rows beside this push's shards, and a push never deletes a file it did not name itself: "
            f"delete them (`hf repos delete-files {repo_id} FILE... --repo-type dataset`, or "
            f"HfApi().delete_file(FILE, {repo_id!r}, repo_type=\"dataset\")) or push to another repo (nothing was "
            "uploaded)")


def repo_is_private(repo_id: str) -> bool:
    """Whether the Hub holds `repo_id` as a private dataset repo. `create_repo(exist_ok=True)` leaves an existing
    repo as it is, so `--private` alone does not say; an answer the Hub did not give counts as private, so that a
    model card never names a repository no one else may read."""
    from huggingface_hub import HfApi

    try:
        return HfApi().repo_info(repo_id, repo_type="dataset").private is not False
    except _NETWORK_ERRORS:
        return True


def push_folder(folder: str | Path, files: list[str], repo_id: str, *, private: bool | None = None,
                folders: list[str | Path | None] | tuple = ()) -> CommitInfo:
    """Upload exactly `files` of a written hub folder (`publish.write_hub_files`) to the dataset repo `repo_id` in one
    commit, after the leak scan of `modeling_croc.upload_scan` (`folders`: the build's own folders, which must not
    appear). Shards of an earlier push that this one does not rewrite are deleted, as `Dataset.push_to_hub` does:
    only files named exactly as this project names a shard (:data:`SHARD_PATTERN`), never another file of the repo;
    another file the card would read as rows refuses the push (:func:`check_remote_files`). A network failure or
    the Hub's refusal raises :class:`HubPushError` (one line, naming the repo)."""
    with _reaching(repo_id):
        check_remote_files(repo_id)
        return push_files(folder, files, repo_id, repo_type="dataset", private=private, folders=folders,
                          dataset_rows=True, commit_message="Upload dataset built by data_recipes",
                          delete_patterns=[SHARD_PATTERN])


def push_build(dataset: Dataset, card: DatasetCard, out_dir: Path, repo_id: str, *, private: bool | None = None,
               num_shards: int | None = None, image_root: str | Path | None = None) -> CommitInfo:
    """Push a built dataset (`data_recipes.publish.hub_dataset`: images embedded from a `datasets.Image` column) and
    its card (drawn from `publish.public_summary`) to `repo_id` in `num_shards` Parquet shards: the files
    `publish.write_hub_folder` writes, staged in a hidden folder inside `out_dir` (removed afterwards) and uploaded
    by `push_folder`. The build's summary.json and rejects.jsonl stay local. A leak refusal names the build folder,
    not the staging folder, which is gone when the message is read."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    folders = [*publish.build_folders(out_dir, summary.get("data_root"), summary.get("image_root")).values(),
               *publish.source_paths(summary)]
    with _reaching(repo_id):
        check_remote_files(repo_id)  # before the shards are written: embedding a large mixture takes a while
    with tempfile.TemporaryDirectory(prefix=".hub-upload-", dir=out_dir) as staging:
        files = publish.write_hub_files(dataset, card, staging, num_shards or publish.shard_count(dataset),
                                        image_root=image_root)
        try:
            return push_folder(staging, files, repo_id, private=private, folders=folders)
        except UploadLeakError as error:
            message = str(error).replace(f"refusing to publish {staging}:",
                                         f"refusing to publish the build {out_dir} to {repo_id}:", 1)
            raise UploadLeakError(message, error.findings) from None
