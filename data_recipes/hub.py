"""The only code that talks to the Hugging Face Hub. Called only when a user asks for a Hub source
(`--set hub.NAME=...`) or `--push-to-hub`; tests replace these functions, never call them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard


def download_hub_file(repo_id: str, filename: str) -> Path:
    """Download one file of a Hub dataset repository (cached by huggingface_hub) and return its path.

    LLaVA-format JSON files go through here rather than `datasets.load_dataset`, because their mixed
    int/str ids make the json builder fail; they are then read by :func:`data_recipes.io.read_records`.
    """
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset"))


def load_hub_dataset(repo_id: str, data_files: str | None = None) -> Dataset:
    """Load the `train` split of a Hub dataset with `datasets.load_dataset` (text-only sources)."""
    from datasets import load_dataset

    return load_dataset(repo_id, data_files=data_files, split="train")


def push_build(dataset: Dataset, card: DatasetCard, out_dir: Path, repo_id: str, *, private: bool | None = None,
               num_shards: int | None = None) -> None:
    """Push a built dataset (`data_recipes.publish.hub_dataset`: images embedded from a `datasets.Image` column), its
    card and its summary/rejects files to `repo_id`, in `num_shards` Parquet shards.

    `Dataset.push_to_hub` writes its own README with the `configs`/`dataset_info` metadata the Hub viewer
    needs; that metadata is copied into our card before the card replaces the README.
    """
    from huggingface_hub import DatasetCard as _DatasetCard
    from huggingface_hub import HfApi

    dataset.push_to_hub(repo_id, private=private, num_shards=num_shards, embed_external_files=True)
    remote = _DatasetCard.load(repo_id, repo_type="dataset")
    for key in ("configs", "dataset_info"):
        value = remote.data.get(key)
        if value is not None:
            card.data[key] = value
    card.push_to_hub(repo_id, repo_type="dataset")
    api = HfApi()
    for name in ("summary.json", "rejects.jsonl"):
        if (out_dir / name).is_file():
            api.upload_file(path_or_fileobj=out_dir / name, path_in_repo=name, repo_id=repo_id, repo_type="dataset")
