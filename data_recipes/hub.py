"""The recipes' only code that talks to the Hugging Face Hub. Called only when a user asks for a Hub source
(`--set hub.NAME=...`) or `--push-to-hub`; tests replace these functions or the `HfApi` methods, never reach the
network. A push uploads an exact, scanned file list (`modeling_croc.upload_scan.push_files`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import is_offline_mode

from modeling_croc.upload_scan import push_files

from . import publish
from .io import DataError

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import CommitInfo, DatasetCard


# The name of a shard as `publish.shard_name` writes it (`data/train-00000-of-00002.parquet`), as an fnmatch pattern:
# digits only, since `*` there also matches `/` and would take `data/train-images/0001.jpg` or `data/train-notes.md`.
_FIVE_DIGITS = "[0-9]" * 5
SHARD_PATTERN = f"{publish.DATA_DIR}/{publish.SPLIT}-{_FIVE_DIGITS}-of-{_FIVE_DIGITS}.parquet"


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


def push_folder(folder: str | Path, files: list[str], repo_id: str, *, private: bool | None = None,
                folders: list[str | Path | None] | tuple = ()) -> CommitInfo:
    """Upload exactly `files` of a written hub folder (`publish.write_hub_files`) to the dataset repo `repo_id` in one
    commit, after the leak scan of `modeling_croc.upload_scan` (`folders`: the build's own folders, which must not
    appear). Shards of an earlier push that this one does not rewrite are deleted, as `Dataset.push_to_hub` does:
    only files named exactly as this project names a shard (:data:`SHARD_PATTERN`), never another file of the repo."""
    return push_files(folder, files, repo_id, repo_type="dataset", private=private, folders=folders, dataset_rows=True,
                      commit_message="Upload dataset built by data_recipes", delete_patterns=[SHARD_PATTERN])


def push_build(dataset: Dataset, card: DatasetCard, out_dir: Path, repo_id: str, *, private: bool | None = None,
               num_shards: int | None = None) -> CommitInfo:
    """Push a built dataset (`data_recipes.publish.hub_dataset`: images embedded from a `datasets.Image` column) and
    its card (drawn from `publish.public_summary`) to `repo_id` in `num_shards` Parquet shards: the files
    `publish.write_hub_folder` writes, staged in a hidden folder inside `out_dir` (removed afterwards) and uploaded
    by `push_folder`. The build's summary.json and rejects.jsonl stay local."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    folders = [*publish.build_folders(out_dir, summary.get("data_root"), summary.get("image_root")).values(),
               *publish.source_paths(summary)]
    with tempfile.TemporaryDirectory(prefix=".hub-upload-", dir=out_dir) as staging:
        files = publish.write_hub_files(dataset, card, staging, num_shards or publish.shard_count(dataset))
        return push_folder(staging, files, repo_id, private=private, folders=folders)
