"""Where a checkpoint's weights and data came from, as the Hub's card metadata states it: `base_model` (Hub ids),
`license` and `datasets`. Read from the cards of the parts (a CLIP and an LM folder or snapshot, a previous stage,
a data_recipes build), combined, and written into the next card, so a stage's card states what it inherits from
stage 0 (the parts' licences, e.g. Llama 2's for Vicuna) without anyone retyping it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml
from huggingface_hub.repocard import metadata_load

# A Hub repository id ("org/name") or a canonical one-part id ("gpt2"); anything with a path separator beyond the
# one slash, or that exists on disk, is a local path, which is not a valid `base_model` / `datasets` entry.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# The Hub's licence ids are lower-case slugs ("apache-2.0", "llama2", "cc-by-nc-4.0"); `other` needs a name and link.
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
UNKNOWN_LICENSE = "unknown"
OTHER_LICENSE = "other"


def is_hub_id(name: str) -> bool:
    """A Hub id that is not also a local path."""
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


def expand_home(args: Any, names: Iterable[str]) -> str | None:
    """Expand `~` in the folder arguments `names` of a command line's parsed `args`, in place (docs/RELIABILITY.md:
    `~` is the home folder in every folder argument; a check that read the expanded path while the command wrote the
    literal `./~/OUT` wrote over a user's files). Returns the one line for a `~user` that is no user of this machine
    (pathlib raises RuntimeError there), else None."""
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("~"):
            try:
                setattr(args, name, str(Path(value).expanduser()))
            except RuntimeError:
                return (f"{value}: {value.split('/', 1)[0]} is the home folder of no user on this machine; give the "
                        "folder's path")
    return None


# A Trainer checkpoint folder's name (`transformers.trainer_utils.PREFIX_CHECKPOINT_DIR`-N).
_CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")


def card_metadata(folder: str | Path) -> dict[str, Any]:
    """The YAML metadata block of `folder/README.md` (a model or dataset card), {} when there is none."""
    # `~` expanded as the model loads it: a stage started from `~/stage1` loaded its weights and read no card, so
    # its own card lost the licence, base models and datasets the folder's stated.
    readme = Path(folder).expanduser() / "README.md"
    if not readme.is_file() and _CHECKPOINT_NAME.match(readme.parent.name):
        # A Trainer checkpoint carries no card: its run's (in the output folder holding it) has the same base models,
        # licence and datasets; a stage started from `stage1_5/checkpoint-2` lost them from its own card.
        readme = readme.parent.parent / "README.md"
    if not readme.is_file():
        return {}
    try:
        return metadata_load(readme) or {}
    except (ValueError, yaml.YAMLError):  # a metadata block that is not a mapping, or not YAML (another tool's card)
        return {}


# The card tag of a stage-0 folder (a projector never trained: `convert from-parts`, `croc_testing tiny-model`).
STAGE0_TAG = "croc-stage-0"


def is_stage0_folder(folder: str | Path) -> bool:
    """Whether `folder`'s card marks it as a stage-0 folder (`STAGE0_TAG`)."""
    return STAGE0_TAG in _as_list(card_metadata(folder).get("tags"))


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def _hub_ids(value: Any) -> list[str]:
    """The Hub ids among a card's `base_model` / `datasets` entries. Another tool's card (a local fine-tune's) may list
    its base model or data by local path: carried on, such an entry put this machine's path into the next card, which
    the card check then refused with a traceback after training (`trainer.model_card.check_card`)."""
    return [item for item in _as_list(value) if HUB_ID.match(item)]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


@dataclass
class Provenance:
    """Base models (Hub ids), licences (Hub licence ids, one per part that states one) and datasets (Hub ids)."""

    base_models: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    # Licences a card declared as `license: other` with a `license_name` (Qwen's qwen-research): name -> its link.
    license_links: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_model_folder(cls, folder: str | Path, hub_id: str | None = None) -> Provenance:
        """What `folder`'s card says. A folder that is itself the part (a CLIP or LM snapshot) is the base model,
        named by `hub_id`; a Croc stage folder's card lists its own base models, licences and datasets."""
        data = card_metadata(folder)
        licenses = data.get("croc_licenses") or _as_list(data.get("license"))
        links = {}
        name = str(data.get("license_name") or "")
        # `other` alone is no licence: the Hub's rule (and the card check) wants its name and link, carried here. A
        # card of a conversion or a stage 0 also lists that one name in `croc_licenses`: read alone, the next card
        # stated the name as its `license`, which is no Hub licence id, and dropped the link.
        if name and data.get("license") == OTHER_LICENSE and licenses in ([OTHER_LICENSE], [name]):
            licenses = [name]
            links = {name: str(data.get("license_link") or "README.md#licences")}
        licenses = [name for name in licenses if name != UNKNOWN_LICENSE]
        if hub_id:
            return cls([hub_id], licenses, [], links)
        return cls(_hub_ids(data.get("base_model")), licenses, _hub_ids(data.get("datasets")), links)

    @classmethod
    def of_dataset_folder(cls, folder: str | Path) -> Provenance:
        """A data_recipes build (or its pushed copy): the upstream Hub datasets its card lists."""
        data = card_metadata(folder)
        return cls(datasets=_hub_ids(data.get("source_datasets")))

    def merged(self, *others: Provenance) -> Provenance:
        parts = (self, *others)
        return Provenance(_unique(m for p in parts for m in p.base_models),
                          _unique(name for p in parts for name in p.licenses),
                          _unique(d for p in parts for d in p.datasets),
                          {name: link for p in parts for name, link in p.license_links.items()})

    def license_metadata(self) -> dict[str, Any]:
        """The card's licence fields: the one licence every part shares, `unknown` when no part states one, or
        `other` naming all of them when they differ (the weights are bound by each)."""
        licenses = _unique(self.licenses)
        if not licenses:
            return {"license": UNKNOWN_LICENSE}
        if len(licenses) == 1 and licenses[0] in self.license_links:
            return {"license": OTHER_LICENSE, "license_name": licenses[0], "license_link": self.license_links[licenses[0]]}
        if len(licenses) == 1:
            return {"license": licenses[0]}
        return {"license": OTHER_LICENSE, "license_name": "-and-".join(licenses),
                "license_link": "README.md#licences", "croc_licenses": licenses}



# JSON fields that name a folder: a local path there is written as the folder's name in what leaves the machine (a
# push's upload set, a conversion's folder).
PATH_FIELDS = ("_name_or_path", "name_or_path", "base_model_name_or_path", "best_model_checkpoint")
# Path fields something loads from: a local path there goes up as null, not as a name. transformers and PEFT load an
# adapter's `base_model_name_or_path` wherever the downloader runs: `stage1_5` there is whatever folder of that name
# the working directory holds (an adapter put on other weights, silently), or else the Hub repository of that name,
# someone else's. The card names the base; `trainer.merge_lora --base` takes it and checks its weights.
LOADED_PATH_FIELDS = ("base_model_name_or_path",)


def is_local_path(value: str) -> bool:
    """Whether a path field's value names a local folder: absolute, under `~`, on a drive, or relative and no Hub id
    (`..` or `.` in it, more than two components: `--model.name_or_path=../team/client/base` is stored as typed,
    and neither the scan's roots nor its folders know it). `org/name` stays: it is the Hub's spelling, unless it is
    a folder here (`outputs/stage1`), which is what transformers loaded it from: kept, the pushed adapter_config.json
    sent PEFT to the Hub repo of that name, someone else's, while the card (`is_hub_id`) listed no base model."""
    if os.path.isabs(value) or value.startswith("~") or PureWindowsPath(value).drive != "":
        return True
    return value != "" and not is_hub_id(value)


def folder_name(value: str) -> str:
    """The last component of the local path `value` (`../base` -> `base`), folded without the working directory,
    whose names are this machine's: "" when none is left (`..`), as transformers writes a config of no folder."""
    if PureWindowsPath(value).drive:
        return PureWindowsPath(value).name
    name = PurePosixPath(os.path.normpath(value.replace("\\", "/"))).name
    return "" if name in (".", "..") else name


def without_local_paths(node: Any) -> bool:
    """Write each local path in a `PATH_FIELDS` field of the JSON value `node` as its last component (as null in a
    `LOADED_PATH_FIELDS` field), in place. Returns whether anything changed."""
    changed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PATH_FIELDS and isinstance(value, str) and is_local_path(value):
                node[key] = None if key in LOADED_PATH_FIELDS else folder_name(value)
                changed |= node[key] != value  # `my base` (no Hub id, yet a name already) stays as it is
            else:
                changed |= without_local_paths(value)
    elif isinstance(node, list):
        for value in node:
            changed |= without_local_paths(value)
    return changed


def write_without_local_paths(folder: str | Path) -> None:
    """Rewrite the JSON files at the top of `folder` with `without_local_paths`: a conversion's configs carry the
    local folders their parts were read from (`text_config._name_or_path`), and the folder is made to be shared."""
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if without_local_paths(data):
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

__all__ = ["HUB_ID", "LICENSE_ID", "LOADED_PATH_FIELDS", "PATH_FIELDS", "Provenance", "card_metadata", "folder_name",
           "is_hub_id", "is_local_path", "without_local_paths", "write_without_local_paths"]
