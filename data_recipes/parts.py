"""What a recipe returns: one :class:`SourcePart` per upstream set, each with its provenance.

Also the shared helpers recipes use to turn an upstream set (local file or Hub) into a part:
:func:`llava_part` for LLaVA-format annotation files and :func:`text_part` for the text-only sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from . import hub
from .catalog import SourceInfo
from .io import read_records
from .sampling import Sample, sample_indices
from .schema import normalise_row, rows_to_dataset
from .text_sources import text_record_to_row

RowTransform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class SourcePart:
    """Rows from one upstream set plus what is needed to report where they came from."""

    name: str
    dataset: Dataset
    origin: str
    licence: str
    licence_id: str
    hub_id: str | None
    sample: Sample

    def provenance(self) -> dict[str, Any]:
        """The per-source record written to summary.json and the card."""
        return {
            "origin": self.origin,
            "hub_id": self.hub_id,
            "licence": self.licence,
            "licence_id": self.licence_id,
            "requested": self.sample.requested,
            "available": self.sample.available,
            "taken": self.sample.taken,
            "shortfall": self.sample.shortfall,
            "sample_seed": self.sample.seed,
        }


@dataclass
class RecipeResult:
    """A recipe's output before validation: parts, the root their image paths are relative to, and
    the parameters to record (instruction, counts...)."""

    parts: list[SourcePart]
    image_root: Path | None
    pretty_name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Location:
    """Where to read a source from: a local path, or a Hub repository (and file)."""

    local_path: Path | None = None
    hub_id: str | None = None
    hub_file: str | None = None

    @property
    def origin(self) -> str:
        if self.hub_id is not None:
            return f"hub:{self.hub_id}" + (f"/{self.hub_file}" if self.hub_file else "")
        return str(self.local_path)


def locate(info: SourceInfo, data_root: Path, *, path: str | None = None, hub_ref: Any = None) -> Location:
    """Resolve a source's location from the catalogue defaults and the user's overrides.

    `path` (absolute, or relative to `data_root`) replaces the default local path. `hub_ref` chooses the
    Hub instead: True means the catalogue's repository, a string names another repository (same file).
    """
    if hub_ref:
        repo = info.hub_id if hub_ref is True else str(hub_ref)
        return Location(hub_id=repo, hub_file=info.hub_file)
    local = Path(path) if path is not None else Path(info.local_path)
    return Location(local_path=local if local.is_absolute() else data_root / local)


def require_local_sources(locations: Mapping[str, Location], data_root: Path) -> None:
    """Raise one `FileNotFoundError` naming every local source of a mixture that is not on disk, before any is read:
    a mixture of nine sources would otherwise stop at the first missing one, after reading the ones before it, and
    again at the next after each download."""
    missing = [(name, location.local_path) for name, location in locations.items()
               if location.local_path is not None and not location.local_path.exists()]
    if not missing:
        return

    def shown(path: Path) -> str:
        return str(path.relative_to(data_root)) if path.is_relative_to(data_root) else str(path)

    raise FileNotFoundError(
        f"{len(missing)} of {len(locations)} sources are not under {data_root}: "
        + ", ".join(f"{name} ({shown(path)})" for name, path in missing)
        + "; download them (docs/DATA.md), point at them with --set paths.NAME=PATH, or leave one out with "
          "--set counts.NAME=0")


def _take(records: Sequence[Any] | Dataset, indices: Sequence[int]) -> list[dict[str, Any]]:
    if isinstance(records, Dataset):
        return list(records.select(indices))
    return [records[i] for i in indices]


def _read_llava(location: Location) -> list[dict[str, Any]]:
    if location.hub_id is not None:
        return read_records(hub.download_hub_file(location.hub_id, location.hub_file))
    return read_records(location.local_path)


def _read_text(location: Location) -> Sequence[dict[str, Any]] | Dataset:
    if location.hub_id is not None:
        return hub.load_hub_dataset(location.hub_id, data_files=location.hub_file)
    return read_records(location.local_path)


def llava_part(
    info: SourceInfo,
    location: Location,
    *,
    count: int | None,
    seed: int,
    image_prefix: str = "",
    transform: RowTransform | None = None,
) -> SourcePart:
    """Read a LLaVA-format set, draw `count` rows (all when None), normalise them to the row schema.

    `image_prefix` is prepended to image paths so that every part of a build is relative to one image
    root; `transform` edits normalised rows (e.g. the stage-1.5 caption instruction).
    """
    return records_part(info, _read_llava(location), location.origin, count=count, seed=seed,
                        image_prefix=image_prefix, transform=transform)


def records_part(
    info: SourceInfo,
    records: Sequence[dict[str, Any]],
    origin: str,
    *,
    count: int | None,
    seed: int,
    image_prefix: str = "",
    transform: RowTransform | None = None,
) -> SourcePart:
    """`llava_part` for LLaVA-format records already read (e.g. streamed out of parquet shards)."""
    sample = sample_indices(len(records), count, seed=seed, source=info.name)
    rows = []
    for index, record in zip(sample.indices.tolist(), _take(records, sample.indices.tolist())):
        row = normalise_row(record, source=info.name, index=index)
        if image_prefix and row["image"] is not None:
            row["image"] = f"{image_prefix.rstrip('/')}/{row['image']}"
        rows.append(transform(row) if transform else row)
    return SourcePart(info.name, rows_to_dataset(rows), origin, info.licence, info.licence_id, info.hub_id, sample)


def text_part(info: SourceInfo, location: Location, *, count: int | None, seed: int) -> SourcePart:
    """Read a text-only set, draw `count` rows, convert each with the source's registered converter."""
    records = _read_text(location)
    sample = sample_indices(len(records), count, seed=seed, source=info.name)
    indices = sample.indices.tolist()
    rows = [text_record_to_row(r, source=info.name, index=i) for i, r in zip(indices, _take(records, indices))]
    return SourcePart(info.name, rows_to_dataset(rows), location.origin, info.licence, info.licence_id,
                      info.hub_id, sample)


def merge_overrides(defaults: dict[str, Any], overrides: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """Overlay user overrides on per-source defaults, refusing unknown source names (typos would
    otherwise be ignored and the default silently used)."""
    if overrides is not None and not isinstance(overrides, Mapping):
        # `--set hub=true` on a mixture: one value where one per source is expected (a traceback from dict()).
        raise ValueError(f"{what}: expected one value per source (--set {what}.NAME=VALUE), got {overrides!r}; "
                         f"sources: {', '.join(defaults)}")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"{what}: unknown source(s) {sorted(unknown)}; known: {', '.join(defaults)}")
    return {**defaults, **overrides}
