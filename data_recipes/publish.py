"""What a pushed mixture holds, built locally: rows whose `image` is a `datasets.Image` feature (the bytes travel with
the rows), written as `Dataset.push_to_hub` writes a one-split dataset: Parquet shards `data/train-0000i-of-0000N.
parquet` with the images embedded, and a README whose metadata (`configs`, `dataset_info`) lets
`datasets.load_dataset(repo or folder)` find and decode them.

A local build keeps the path-only form (`image` a path relative to the image root), which training reads without
copying a single image; the embedded form is for anyone who has the dataset but not the image folders.
`hub.push_build` pushes the same files, with the same shard count, that `write_hub_folder` writes.

What goes up is the shards and the card, nothing else: the build folder's `summary.json` and `rejects.jsonl` are
this machine's records (absolute data paths, rejected rows as read) and stay local. The card is drawn from
`public_summary`, the summary with this machine's folders written as names. `--hub-folder DIR` follows the
publish-folder rule of `modeling_croc.publish_folder` (a new, empty or earlier hub folder, clear of the build's folders).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Image, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from modeling_croc.images import resolve_image_path
from modeling_croc.publish_folder import prepare_publish_folder, record_publish_files, relative_text

# How a pushed dataset stores images: `embedded` (a datasets.Image column, bytes in the Parquet shards) or `path`
# (the build's relative path strings, usable only next to the same image folders).
IMAGE_STORAGES = ("embedded", "path")
SPLIT = "train"
DATA_DIR = "data"
MAX_SHARD_BYTES = 500 * 1024 * 1024  # push_to_hub's default shard size (datasets.config.MAX_SHARD_SIZE)
CARD = "README.md"
# The card's `configs` data files: what `load_dataset(repo)` reads as the rows of the split (a `*` stops at `/`).
DATA_FILES = f"{DATA_DIR}/{SPLIT}-*"
HUB_FOLDER_OPTION = "--hub-folder"
# How a published card writes this machine's folders (`public_summary`), and what each stands for.
DATA_ROOT = "DATA_ROOT"
OUT = "OUT"
HUB_FOLDER = "HUB_FOLDER"
IMAGE_ROOT = "IMAGE_ROOT"
FOLDER_PLACEHOLDERS: dict[str, str] = {
    DATA_ROOT: "the folder of the downloaded sources (`--data-root`, laid out as docs/DATA.md of the Croc project "
               "describes for the recipe)",
    OUT: "the local build folder (`--out`)",
    HUB_FOLDER: "the folder the uploaded files were written to first (`--hub-folder`)",
    IMAGE_ROOT: "the image folder outside the data root that the rows' image paths are relative to",
}


def with_image_feature(dataset: Dataset, image_root: str | Path) -> Dataset:
    """`dataset` with `image` as a `datasets.Image` feature: each relative path resolved under `image_root` (the bytes
    are read when the shards are written), null for text-only rows."""
    root = Path(image_root).resolve()

    def absolute(batch: dict) -> dict:
        # `..` folded lexically, as validation and training resolve the path: `link/../a.jpg` is ROOT/a.jpg, not
        # the file next to wherever the symbolic link `link` points.
        return {"image": [None if path is None else str(resolve_image_path(root, path)) for path in batch["image"]]}

    return dataset.map(absolute, batched=True, desc="image paths").cast_column("image", Image())


def hub_dataset(dataset: Dataset, image_root: str | Path | None, image_storage: str) -> Dataset:
    """The rows a push sends: with `embedded` storage the images as a `datasets.Image` column, else as built."""
    if image_storage not in IMAGE_STORAGES:
        raise ValueError(f"image_storage must be one of {IMAGE_STORAGES}, got {image_storage!r}")
    if image_storage == "path":
        return dataset
    if image_root is None:
        if any(path is not None for path in dataset["image"]):
            raise ValueError("embedding images needs the build's image root")
        return dataset.cast_column("image", Image())
    return with_image_feature(dataset, image_root)


def shard_count(dataset: Dataset, max_shard_bytes: int = MAX_SHARD_BYTES) -> int:
    """How many Parquet shards `push_to_hub` cuts `dataset` into (its own rule: estimated bytes, external image
    files included, per `max_shard_bytes`, plus one)."""
    return max(1, min(len(dataset), int(dataset._estimate_nbytes() / max_shard_bytes) + 1))


def shard_name(index: int, num_shards: int) -> str:
    """The path of shard `index` in the repository, as `push_to_hub` names it."""
    return f"{DATA_DIR}/{SPLIT}-{index:05d}-of-{num_shards:05d}.parquet"


def with_hub_metadata(card: DatasetCard, dataset: Dataset, num_bytes_written: int) -> DatasetCard:
    """`card` with the metadata `push_to_hub` writes into the README: the default config's data files and the
    dataset info (features, split sizes)."""
    MetadataConfigs({"default": {"data_files": [{"split": SPLIT, "path": DATA_FILES}]}}
                    ).to_dataset_card_data(card.data)
    info = DatasetInfo(features=dataset.features, splits=SplitDict(), download_size=num_bytes_written,
                       dataset_size=dataset._estimate_nbytes())
    info.splits.add(SplitInfo(name=SPLIT, num_bytes=info.dataset_size, num_examples=len(dataset)))
    DatasetInfosDict({"default": info}).to_dataset_card_data(card.data)
    return card


def build_folders(out_dir: str | Path, data_root: str | Path | None,
                  image_root: str | Path | None = None) -> dict[str, str | Path | None]:
    """A build's own folders, by the name a refusal gives them: a hub folder must keep clear of them, and an upload
    must not name them."""
    return {"build folder (--out)": out_dir, "data root": data_root, "image root": image_root}


def _inside(path: str | Path, folder: str | Path | None) -> bool:
    """Whether `path` is `folder` or lies inside it, lexically (`..` folded)."""
    if not folder:
        return False
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return folder in [path, *path.parents]


def source_paths(summary: dict[str, Any]) -> list[str]:
    """The local files and folders a build read its sources from (`origin` of each source, Hub sources left out, and
    the folder of a file), absolute and `..` folded: `--set annotation=/data/corpora/rows.json` or `paths.NAME=...`
    may name one outside the data root, which neither the data root's name nor the scan's local roots cover. A
    relative origin (`--data-root data --set annotation=../corpora/rows.json` records `data/../corpora/rows.json`)
    is the working directory's, where the build ran."""
    found = []
    for source in (summary.get("sources") or {}).values():
        origin = source.get("origin") if isinstance(source, dict) else None
        if isinstance(origin, str) and origin and not origin.startswith("hub:"):
            path = os.path.abspath(os.path.expanduser(origin))
            found += [path, os.path.dirname(path)] if os.path.isfile(path) else [path]
    return list(dict.fromkeys(found))


def _folded(text: str, sources: Collection[str] = (), data_root: str | None = None,
            folders: Collection[str] = ()) -> str:
    """`text`, an absolute path spelled with `..`, `.` or `//` (`/data/x/../raw`), written as `os.path.abspath`
    writes it, the form `relative_text` matches; a relative spelling of one of `sources`, or of one of the local
    `folders` (absolute) or a path inside one, relative to `data_root` (as `annotation=../corpora/rows.json` is) or to
    the working directory (as `--out work/b5` and a recorded origin are), written as its absolute path, which
    `relative_text` only matches; any other text as it is. A folder that holds the base itself is left out: every
    relative word would lie inside it (`--data-root .`)."""
    if text.startswith("/") and not text.startswith("//"):
        return os.path.abspath(text)
    if text and not text.startswith("~"):
        for base in (data_root, os.curdir):
            if not base:
                continue
            path = os.path.abspath(os.path.join(base, text))
            if path in sources:
                return path
            for spelled in dict.fromkeys((path, os.path.realpath(path))):  # through a link, as the folder may be
                if any(_inside(spelled, folder) and not _inside(base, folder) for folder in folders):
                    return spelled
    return text


def _folded_command(command: str, sources: Collection[str] = (), data_root: str | None = None,
                    folders: Collection[str] = ()) -> str:
    """A command line with every absolute path in it `_folded` (a word, or the value of `--opt=` or `key=`): the
    card shows the command as typed, where `--data-root /data/x/../raw` spells the data root another way."""
    try:
        words = shlex.split(command)
    except ValueError:  # not a shell command line (unbalanced quotes): left as it is
        return command
    folded = []
    for word in words:
        name, equals, value = word.rpartition("=")
        folded.append(f"{name}{equals}{_folded(value, sources, data_root, folders)}" if equals
                      else _folded(word, sources, data_root, folders))
    return shlex.join(folded) if folded != words else command


def public_summary(summary: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """`summary` (a build's summary.json) as a published card may show it: every local folder in its strings written
    as a placeholder or a name (the data root, the build and hub folders, an image root outside the data root as
    :data:`FOLDER_PLACEHOLDERS`, a source file outside the data root as its file name, the working directory as `.`,
    home as `~`), so `/scratch/me/data/text/alpaca` becomes `DATA_ROOT/text/alpaca`, and so does
    `work/me/data/text/alpaca`, typed relative to the working directory. Paths spelled with `..`, `//` or relative
    are folded first, so every spelling is matched. `folders` says what each placeholder used stands for."""
    data_root, image_root = summary.get("data_root"), summary.get("image_root")
    hub_folder = (summary.get("hub") or {}).get("folder")
    names: dict[str | Path, str] = {}
    placeholders: dict[str, str] = {}
    # A placeholder per option, not the folder's own name: `--data-root /scratch/bob` went up as `bob` (the account
    # name), and `--out builds/s15 --hub-folder hub/s15` as the same `s15` twice.
    for folder, placeholder in ((data_root, DATA_ROOT), (out_dir, OUT), (hub_folder, HUB_FOLDER)):
        if folder:
            names[folder] = placeholder
            placeholders[placeholder] = FOLDER_PLACEHOLDERS[placeholder]
    if image_root and not _inside(image_root, data_root):
        names[image_root] = IMAGE_ROOT
        placeholders[IMAGE_ROOT] = FOLDER_PLACEHOLDERS[IMAGE_ROOT]
    sources = source_paths(summary)
    for path in sources:
        if not _inside(path, data_root):
            names[path] = Path(path).name
    # As typed, `--out work/H/b5` names the folders above the build folder: folded as the absolute path is.
    local = list(dict.fromkeys(spelled for folder in names for spelled in (
        os.path.abspath(os.path.expanduser(str(folder))), os.path.realpath(os.path.expanduser(str(folder))))))
    names.update({Path.cwd(): ".", Path.home(): "~"})
    outside = {path for path in sources if not _inside(path, data_root)}

    def public(value: Any, key: str | None = None) -> Any:
        if isinstance(value, str):
            folded = (_folded_command(value, outside, data_root, local) if key == "command"
                      else _folded(value, outside, data_root, local))
            return relative_text(folded, names)
        if isinstance(value, dict):
            return {name: public(item, name) for name, item in value.items()}
        if isinstance(value, list):
            return [public(item) for item in value]
        return value

    return {**public(summary), "folders": placeholders}


def hub_files(num_shards: int) -> list[str]:
    """The files a push of `num_shards` shards uploads, relative to the repository root."""
    return [*(shard_name(index, num_shards) for index in range(num_shards)), CARD]


def _image_path(path: str | None, root: Path) -> str | None:
    """The path an embedded image keeps: relative to the image root (`vg/VG_100K_2/1.jpg`), as the build's row named
    it, or its file name when it lies outside the root; never a path of this machine."""
    if path is None:
        return None
    absolute = Path(os.path.abspath(path))
    return absolute.relative_to(root).as_posix() if _inside(absolute, root) and absolute != root else absolute.name


def _embedded(table: pa.Table, image_root: Path | None) -> pa.Table:
    """`table` with its external files embedded (`embed_table_storage`), the image column's `path` relative to
    `image_root`: `embed_table_storage` keeps only the file name, so `vg/VG_100K_2/1.jpg` went up as `1.jpg`, and
    `images/a/1.png`, `images/b/1.png` both as `1.png`."""
    embedded = embed_table_storage(table)
    if image_root is None or "image" not in table.column_names:
        return embedded
    before, after = table.column("image").combine_chunks(), embedded.column("image").combine_chunks()
    if not pa.types.is_struct(after.type):
        return embedded
    paths = pa.array([_image_path(path, image_root) for path in before.field("path").to_pylist()], pa.string())
    image = pa.StructArray.from_arrays([after.field("bytes"), paths], fields=list(after.type),
                                       mask=after.is_null())
    return embedded.set_column(embedded.column_names.index("image"), "image", image)


def write_hub_files(dataset: Dataset, card: DatasetCard, folder: str | Path, num_shards: int, *,
                    image_root: str | Path | None = None) -> list[str]:
    """Write into the existing `folder` the files `dataset.push_to_hub(repo, num_shards=num_shards)` uploads, plus
    its README: contiguous shards with external files (the images) embedded, as `push_to_hub` does, each image's
    `path` relative to `image_root` (the root `with_image_feature` resolved the rows under; None: the file name, as
    `push_to_hub` keeps it). Returns the written paths (`hub_files`), relative to `folder`."""
    folder = Path(folder)
    root = None if image_root is None else Path(image_root).resolve()  # as `with_image_feature` resolved it
    (folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
    num_bytes = 0
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
        shard = shard.with_format("arrow").map(_embedded, batched=True, keep_in_memory=True,
                                               fn_kwargs={"image_root": root})
        name = shard_name(index, num_shards)
        shard.to_parquet(str(folder / name))
        num_bytes += (folder / name).stat().st_size
    with_hub_metadata(card, dataset, num_bytes).save(folder / CARD)
    return hub_files(num_shards)


def write_hub_folder(dataset: Dataset, card: DatasetCard, folder: str | Path, num_shards: int | None = None, *,
                     keep_clear_of: Mapping[str, str | Path | None] | None = None,
                     image_root: str | Path | None = None) -> list[str]:
    """`write_hub_files` into the publish folder `folder`, which must be new, empty or an earlier hub folder (only
    that publish's files are replaced) and clear of `keep_clear_of` (`build_folders`); raises
    `modeling_croc.publish_folder.PublishFolderError` (one line, nothing deleted) otherwise. Returns the written paths,
    relative to `folder`."""
    num_shards = num_shards or shard_count(dataset)
    prepare_publish_folder(folder, hub_files(num_shards), option=HUB_FOLDER_OPTION, keep_clear_of=keep_clear_of or {})
    written = write_hub_files(dataset, card, folder, num_shards, image_root=image_root)
    record_publish_files(folder, written)  # a later edit of the card is then the user's, never replaced silently
    return written


__all__ = [
    "DATA_FILES",
    "FOLDER_PLACEHOLDERS",
    "HUB_FOLDER_OPTION",
    "IMAGE_STORAGES",
    "build_folders",
    "hub_dataset",
    "hub_files",
    "public_summary",
    "shard_count",
    "shard_name",
    "source_paths",
    "with_hub_metadata",
    "with_image_feature",
    "write_hub_files",
    "write_hub_folder",
]
