"""ViCToR's stage 1.5: LLaVA-ReCap-CC3M (detailed re-captions of CC3M images)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from modeling_croc.write_failures import write_failure_reason

from ..build import BuildWriteError
from ..catalog import source_info
from ..parts import RecipeResult, llava_part, locate, records_part
from ..registry import register_recipe
from ..sampling import sample_indices
from .croc1_5m import caption_instruction

# The prompt LLaVA-NeXT put after <image> in its ReCap jsons ("..._prompt_v2.json"), which ViCToR trains on
# (github.com/deepglint/Victor scripts/train/README.md L50; stage1.5_caption_siglip_qwen_victor.sh L26).
VICTOR_INSTRUCTION = "Please generate detailed descriptions of the given image."
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@register_recipe("recap_cc3m")
def recap_cc3m(
    data_root: Path,
    *,
    seed: int,
    annotation: str | None = None,
    image_root: str = "images",
    instruction: str | None = VICTOR_INSTRUCTION,
    count: int | None = None,
) -> RecipeResult:
    """ViCToR stage 1.5: LLaVA-ReCap-CC3M, ~3M CC3M images with detailed captions (lmms-lab/LLaVA-ReCap-CC3M).

    Expected layout (`hf download lmms-lab/LLaVA-ReCap-CC3M --repo-type dataset --local-dir ROOT`)::

        ROOT/data/train-00000-of-00281.parquet    columns id, image {bytes, path}, conversations [{from, value}]
        ...

    The images are embedded in the shards: the build writes each one once to ROOT/<image_root>/ (an image already
    there is not written again) and the rows point at those files. Alternatively a LLaVA-format annotation file with
    an image folder, as ViCToR's stage-1.5 script reads it (`--data_path LLaVA-ReCap-CC3Mv2.json --image_folder
    train_images`): `--set annotation=LLaVA-ReCap-CC3Mv2.json --set image_root=train_images`.

    Parameters (`--set key=value`):
        annotation: a LLaVA-format file (absolute or relative to ROOT) instead of the parquet shards.
        image_root: where the images are (parquet: where they are written), absolute or relative to ROOT.
        instruction: the human turn after `<image>` (default: LLaVA-NeXT's v2 prompt that ViCToR trains on; the
            string `none` keeps each row's own).
        count: rows to draw with the seed (None: all).
    """
    info = source_info("recap_cc3m")
    root = Path(image_root) if Path(image_root).is_absolute() else data_root / image_root
    transform = caption_instruction(None if instruction == "none" else instruction, seed)
    if annotation is not None:
        part = llava_part(info, locate(info, data_root, path=annotation), count=count, seed=seed, transform=transform)
    else:
        shards = data_root / info.local_path
        records = _read_shards(shards)
        # Only the drawn rows' images are written (records_part draws the same indices from the same seed).
        drawn = sample_indices(len(records), count, seed=seed, source=info.name).indices.tolist()
        _write_images(shards, root, records, set(drawn), _file_stems(records))
        part = records_part(info, records, f"{shards} (parquet shards)", count=count, seed=seed, transform=transform)
    return RecipeResult(
        parts=[part],
        image_root=root,
        pretty_name="LLaVA-ReCap-CC3M (ViCToR stage 1.5)",
        params={"annotation": annotation, "image_root": image_root, "instruction": instruction, "count": count},
    )


def _shard_files(shards: Path) -> list[Path]:
    """The parquet shards under `shards`, sorted, so row order is stable."""
    files = sorted(shards.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{shards}: no *.parquet shards (hf download lmms-lab/LLaVA-ReCap-CC3M "
                                "--repo-type dataset --local-dir ROOT puts them in ROOT/data/)")
    return files


def _read_shards(shards: Path) -> list[dict[str, Any]]:
    """LLaVA-format records (id, conversations; no image yet) of every shard, without reading the image bytes."""
    import pyarrow.parquet as pq

    records = []
    for file in _shard_files(shards):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=4096, columns=["id", "conversations"]):
            records.extend({"id": row["id"], "image": None, "conversations": row["conversations"]}
                           for row in batch.to_pylist())
    return records


def _file_stems(records: list[dict[str, Any]]) -> list[str]:
    """Per record, the name (without suffix) its image is written under: its id, made safe for a file name. Ids
    that share a name (a repeated id, or `a/1` and `a_1`) get `~<row index>` after the first in file order: under
    one name, the later row would point at the earlier row's image, kept as "already there". Decided over every
    record, not the drawn ones, so a row's file is the same whatever the count draws (`~` is never in a safe id)."""
    stems, seen = [], set()
    for index, record in enumerate(records):
        stem = _UNSAFE.sub("_", str(record["id"]))
        stems.append(f"{stem}~{index}" if stem in seen else stem)
        seen.add(stem)
    return stems


def _write_images(shards: Path, image_root: Path, records: list[dict[str, Any]], wanted: set[int],
                  stems: list[str]) -> None:
    """Write the image of each record whose index is in `wanted` to `image_root` under its name in `stems` and name
    it in the record. Streams the shards a batch at a time: the images never sit in memory together."""
    import pyarrow.parquet as pq

    try:
        image_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if isinstance(error, FileExistsError):  # a file where the folder should be: not a write failure
            raise FileExistsError(f"image_root {image_root} is a file, not a folder") from None
        raise _image_write_error(image_root, error) from None
    index = 0
    for file in _shard_files(shards):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=512, columns=["id", "image"]):
            for row in batch.to_pylist():
                if index in wanted:
                    records[index]["image"] = _write_image(row, image_root, stems[index])
                index += 1


def _write_image(row: dict[str, Any], image_root: Path, stem: str) -> str | None:
    image = row.get("image") or {}
    data = image.get("bytes")
    if not data:
        return None
    suffix = Path(image.get("path") or "").suffix or ".jpg"
    name = stem + suffix
    target = image_root / name
    if not target.exists():
        # Written beside it under a hidden name and renamed into place: an image cut short (a full disk) was kept by
        # every rerun as "already there", then rejected as unreadable or, with --skip-image-check, trained on.
        temporary = image_root / f".{name}.{os.getpid()}.tmp"
        try:
            temporary.write_bytes(data)
            os.replace(temporary, target)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise _image_write_error(target, error) from None
    return name


def _image_write_error(target: Path, error: OSError) -> BuildWriteError:
    return BuildWriteError(f"could not write the image {target} taken out of the parquet shards: "
                           f"{write_failure_reason(error)}; the images written before it are whole and kept, --out was "
                           "not changed: free space there (or make it writable) and rerun the same command")
