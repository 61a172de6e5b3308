"""Merge a LoRA run into a plain Croc folder.

    python -m trainer.merge_lora ADAPTER_DIR --out MERGED_DIR [--base BASE] [--dtype float32|bfloat16|float16]

ADAPTER_DIR is the output folder (or a checkpoint) of a LoRA run, or a copy of it (downloaded from the Hub):
adapters, the `modules_to_save` copies of the projector / pool / head, the processor, and `base_config/` (the base's
Croc config for that stage, and a fingerprint of the base weights the adapters were trained on).
BASE is the base model's folder or Hub id; left out, the base `adapter_config.json` names is looked up as a folder
here, then in the Hub cache (a pushed adapter names its base by folder name only). A BASE of another architecture
or other weights than the adapters were trained on is refused: the merge would give a wrong model, silently.
MERGED_DIR gets the run's model card too (base models, licences, datasets), saying it is a model folder.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import secrets
import shutil
import sys
import warnings
from pathlib import Path

from modeling_croc.constants import MODEL_DTYPES
from modeling_croc.loading import load_croc_config, load_pretrained_croc, load_processor, local_folder
from modeling_croc.model_folders import (
    PROCESSOR_FILES,
    ModelFolderError,
    check_weight_files,
    overlong_name,
    reading_weights,
)
from modeling_croc.provenance import expand_home, is_hub_id
from modeling_croc.write_failures import is_write_failure, write_failure_reason

from .croc_trainer import BASE_CONFIG_DIR, BASE_WEIGHTS_FILE
from .fingerprints import earlier_weights_fingerprints, weights_fingerprint
from .model_card import merged_card
from .run_record import _VOLATILE_CONFIG_KEYS, read_run_record

logger = logging.getLogger(__name__)


def recorded_base(adapter_dir: str | Path) -> str | None:
    """The base `adapter_dir`'s `adapter_config.json` names (a path, a folder name, a Hub id), or None."""
    try:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (config.get("base_model_name_or_path") or None) if isinstance(config, dict) else None


def find_base(adapter_dir: str | Path, base: str | None = None) -> str:
    """The base model to merge the adapters of `adapter_dir` onto: `base` (`--base`) when given, else the one
    `adapter_config.json` names, as a local folder, else as a Hub repository already in the cache (no download).
    Raises ValueError naming the base needed when it is found nowhere."""
    if base:
        if not Path(base).expanduser().is_dir() and not is_hub_id(base):
            raise ValueError(f"--base {base} is neither a model folder nor a Hub repository id")
        return base
    recorded = recorded_base(adapter_dir)
    if not recorded:
        # A pushed adapter names a local base nowhere PEFT loads from (`modeling_croc.provenance.LOADED_PATH_FIELDS`); its base
        # config keeps the folder's name.
        named = _base_config_name(adapter_dir)
        if named:
            raise ValueError(f"{adapter_dir}: its adapters were trained on the base `{named}` (a local folder, named "
                             "only); pass --base BASE (that base model's folder or Hub id)")
        raise ValueError(f"{adapter_dir}: the adapter config names no base model; pass --base BASE (the folder or "
                         "Hub id of the model the adapters were trained on)")
    if Path(recorded).expanduser().is_dir():
        return recorded
    if is_hub_id(recorded):
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(recorded, "config.json"), str):
            return recorded
    # A pushed or copied adapter names its base by folder name only (a local path never leaves the machine), so
    # on another machine this is the usual case: the reason was "BASE is not a model folder: it has no config.json".
    raise ValueError(f"{adapter_dir}: its adapters were trained on the base `{recorded}`, which is neither a folder "
                     "here nor a Hub repository in the cache; pass --base BASE (that base model's folder or Hub id)")


def _base_config_name(adapter_dir: str | Path) -> str | None:
    """The name of the base the run's `BASE_CONFIG_DIR/config.json` was saved from (its `_name_or_path`), or None."""
    try:
        config = json.loads((Path(adapter_dir) / BASE_CONFIG_DIR / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    return Path(name).name if isinstance(name, str) and name else None


def _architecture(config: dict) -> dict:
    """What of a Croc config decides which weights fit it: its model_type and language / vision configs."""
    def stable(value):
        if isinstance(value, dict):
            return {key: stable(item) for key, item in value.items() if key not in _VOLATILE_CONFIG_KEYS}
        return value

    return {"model_type": config.get("model_type"), "text_config": stable(config.get("text_config") or {}),
            "vision_config": stable(config.get("vision_config") or {})}


def _first_difference(trained: object, given: object, where: str = "") -> str | None:
    """The first key (dotted) at which `given` differs from `trained`, with both values, or None."""
    if isinstance(trained, dict) and isinstance(given, dict):
        for key in sorted(set(trained) | set(given)):
            found = _first_difference(trained.get(key), given.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if trained == given else f"{where} is {given!r} there, {trained!r} in the adapters' base"


def base_mismatch(adapter_dir: str | Path, base: str) -> str | None:
    """Why `base` is not the model the adapters of `adapter_dir` were trained on, or None (also where the adapter
    folder records nothing to compare: an adapter made outside this trainer). Compared: the architecture of its
    config against `base_config/config.json`, and its weights' `weights_fingerprint` against the one the run
    recorded (`base_config/BASE_WEIGHTS_FILE`, or the local run record's `lora_base_weights`)."""
    from modeling_croc.loading import _config_folder, source_kind

    adapter_dir = Path(adapter_dir)
    trained_config = adapter_dir / BASE_CONFIG_DIR / "config.json"
    folder = _config_folder(base)
    if trained_config.is_file() and folder is not None and source_kind(folder) == "croc":
        # Through the config classes: a saved config.json leaves out the values at their defaults.
        trained, given = load_croc_config(trained_config.parent).to_dict(), load_croc_config(folder).to_dict()
        difference = _first_difference(_architecture(trained), _architecture(given))
        if difference:
            return f"--base {base} is another architecture than the adapters were trained on ({difference})"
    try:
        recorded = json.loads((adapter_dir / BASE_CONFIG_DIR / BASE_WEIGHTS_FILE).read_text(encoding="utf-8"))
        recorded = recorded.get("weights_fingerprint") if isinstance(recorded, dict) else None
        earlier: set[str] = set()
    except (OSError, ValueError):
        recorded = (read_run_record(adapter_dir) or {}).get("lora_base_weights")
        # A run older than BASE_WEIGHTS_FILE: its record holds the fingerprint as its version computed it, and the
        # very base it trained on was refused as "other weights" where that differs from today's.
        earlier = earlier_weights_fingerprints(base) if recorded else set()
    current = weights_fingerprint(base) if recorded else None
    if recorded and current and current != recorded and recorded not in earlier:
        return (f"--base {base} holds other weights than the base the adapters were trained on (fingerprint "
                f"{current}, trained on {recorded}): the merge would give a wrong model; pass that base")
    return None


def overlong_argument(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None) -> str | None:
    """Which argument names a file or folder over `NAME_MAX` bytes, and why, or None: every look at such a path
    raises the system's "File name too long" (a traceback from `Path.exists()`)."""
    for name, value in (("ADAPTER_DIR", adapter_dir), ("--out", out_dir), ("--base", base)):
        problem = overlong_name(Path(value).expanduser()) if value else None
        if problem:
            return f"{name}: {problem}"
    return None


# Why refused adapter weights are: the end of each `adapter_gaps` line.
_NOT_MATCHING = ("the adapter config and weights do not match (was one edited or cut after saving?): not merged, "
                 "nothing was written")


def _adapter_weight_names(adapter_dir: Path) -> set[str]:
    """The tensor names of `adapter_dir`'s adapter weights file, as PEFT saved them (no adapter name)."""
    weights = adapter_dir / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as file:  # the header only
            return set(file.keys())
    from peft.utils import load_peft_weights

    return set(load_peft_weights(str(adapter_dir), device="cpu"))


def _shown(names: list[str]) -> str:
    short = [name.removeprefix("base_model.model.") for name in names[:3]]
    return ", ".join(short) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def adapter_gaps(adapter_dir: Path, peft_model) -> str | None:
    """What of `adapter_dir`'s adapter weights file the loaded `peft_model` does not hold as written, or None:
    tensors with no place in the model its adapter_config.json describes (a config edited to fewer
    `target_modules`: PEFT leaves them unread) and adapter weights the model has but the file lacks (PEFT only
    warns; their `lora_B` stays zero and those layers merge as the base's). Both gave a wrong merged model with
    exit 0. Names as PEFT saves them (`get_peft_model_state_dict`: no adapter name), the `modules_to_save` copies
    (projector, pool, head) included."""
    from peft import get_peft_model_state_dict

    held = _adapter_weight_names(adapter_dir)
    # The embedding layers are saved along when the vocabulary was resized: in the file, they are used; not in
    # it, they are the base's (not an adapter weight).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = set(get_peft_model_state_dict(peft_model, save_embedding_layers=False))
        placed = set(get_peft_model_state_dict(peft_model, save_embedding_layers=True))
    unused, missing = sorted(held - placed), sorted(expected - held)
    problems = []
    if unused:
        problems.append(f"adapter_model.safetensors holds {len(unused)} adapter weight{'s' if len(unused) != 1 else ''}"
                        f" with no place in the model its adapter_config.json describes ({_shown(unused)})")
    if missing:
        problems.append(f"adapter_model.safetensors lacks {len(missing)} adapter weight"
                        f"{'s' if len(missing) != 1 else ''} its adapter_config.json asks for ({_shown(missing)}): "
                        "those layers would merge as the base's")
    return f"{'; '.join(problems)}; {_NOT_MATCHING}" if problems else None


def _load_adapters(model, adapter_dir: Path):
    """`PeftModel.from_pretrained(model, adapter_dir)`, its adapter weights checked against the file
    (`adapter_gaps`): a `ModelFolderError` where they differ. A `modules_to_save` copy (projector, pool, head)
    missing a tensor made PEFT's loading raise KeyError (a traceback)."""
    from peft import PeftModel

    with reading_weights(adapter_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found missing adapter keys")  # `adapter_gaps` says it, refused
        try:
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
        except KeyError as error:
            name = error.args[0] if error.args else None
            if not isinstance(name, str) or name in _adapter_weight_names(adapter_dir):
                raise
            raise ModelFolderError(adapter_dir, f"adapter_model.safetensors lacks {_shown([name])}, a weight of a "
                                                "module its adapter_config.json saves whole (modules_to_save); "
                                                f"{_NOT_MATCHING}") from None
        gaps = adapter_gaps(adapter_dir, peft_model)
    if gaps:
        raise ModelFolderError(adapter_dir, gaps)
    return peft_model


class MergeWriteError(OSError):
    """The merged model could not be written (a full disk, a quota): the message says so in one line."""


# What a saved processor is made of: a folder holding any of these has a processor, which must load (taking the
# base's instead, or none, gave a merged model without the run's tokenizer, with exit 0).
_PROCESSOR_PARTS = (*PROCESSOR_FILES, "tokenizer_config.json", "tokenizer.json", "tokenizer.model",
                    "special_tokens_map.json")


def _processor_files(folder: str | Path) -> list[str]:
    """The processor and tokenizer files `folder` holds (none for a Hub id or a weights-only folder)."""
    folder = Path(folder)
    return [name for name in _PROCESSOR_PARTS if (folder / name).is_file()]


def _run_processor(source: str | Path):
    """The processor the merged folder gets, from `source` (the adapter folder, else the base): None where `source`
    is a folder without processor files; a `ModelFolderError` where it holds some that do not load. With
    tokenizer files and no processor_config.json (a save a full disk cut short), `load_processor` took the folder for
    a weights-only one and the merge wrote a model with no tokenizer, with exit 0."""
    processor = load_processor(source)  # a `ModelFolderError` for a processor_config.json whose processor fails
    present = _processor_files(source)
    if processor is not None or not present:
        return processor
    from transformers import AutoProcessor

    try:  # again, for why: `load_processor` keeps it to itself
        return AutoProcessor.from_pretrained(str(source))
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as error:
        raise ModelFolderError(source, f"its processor ({', '.join(present)}) does not load: {type(error).__name__}: "
                                       f"{' '.join(str(error).split())[:300]}; not merged, nothing was written"
                               ) from None


# A merge is written into a hidden folder next to --out and renamed into place when whole: `.<name>.merging-<pid>-
# <hex>`. The name part is cut so that a name near NAME_MAX still leaves room for the suffix.
_STAGING = ".{name}.merging-{pid}-{token}"
_STAGING_NAME_BYTES = 150


def _staging_prefix(out_dir: Path) -> str:
    name = os.fsencode(out_dir.name)[:_STAGING_NAME_BYTES].decode(errors="ignore")
    return f".{name}.merging-"


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove the staging folders a merge into `out_dir` killed outright (SIGKILL, power) left: those of a process
    no longer running. Only real folders of that exact name pattern; a link is left alone, never followed."""
    pattern = re.compile(re.escape(_staging_prefix(out_dir)) + r"(\d+)-[0-9a-f]{8}")
    if not out_dir.parent.is_dir():
        return
    for entry in out_dir.parent.iterdir():
        found = pattern.fullmatch(entry.name)
        if not found or entry.is_symlink() or not entry.is_dir() or int(found.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(found.group(1)), 0)
            continue  # still merging (or another user's process)
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Put the whole merge `staging` at `out_dir` in one rename where it is new or an empty folder (an interrupt
    leaves either nothing or all of it); into a folder that holds files already (`trainer.train`'s
    `<output_dir>-merged`, its run record first) or a link to one, file by file, replacing the merge's names."""
    if not out_dir.is_symlink():
        try:
            os.rename(staging, out_dir)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if not out_dir.is_dir():
                raise
    for entry in sorted(staging.iterdir()):
        target = out_dir / entry.name
        if target.is_dir() and not target.is_symlink() and entry.is_dir():
            shutil.rmtree(target)  # a folder of the merge's own (a half-written earlier merge's)
        shutil.move(str(entry), str(target))


def merge_lora(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32", base: str | None = None
               ) -> Path:
    """Load the base model, apply the adapters of `adapter_dir`, merge them and save a full folder to `out_dir`.
    `base`: the base model's folder or Hub id, when not the one the adapter names (`find_base`); one of another
    architecture or other weights than the adapters were trained on raises ValueError (`base_mismatch`), as do
    adapter weights its adapter_config.json does not describe (`adapter_gaps`) and a processor that does not load.
    Everything is loaded and checked before anything is written, and the merge is written into a hidden folder
    next to `out_dir` renamed into place when whole: a failure or a Ctrl-C leaves nothing at `out_dir`."""
    overlong = overlong_argument(adapter_dir, out_dir, base)
    if overlong:
        raise ValueError(overlong)
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_config = adapter_dir / "adapter_config.json"
    if not adapter_config.is_file():
        raise FileNotFoundError(f"{adapter_dir} has no adapter_config.json: not a LoRA run folder")
    base_path = find_base(adapter_dir, base)
    if not Path(base_path).expanduser().is_dir():  # a Hub id: its snapshot (the cache only, offline)
        base_path = str(local_folder(base_path))
    if Path(base_path).is_dir():  # a cut file first: its fingerprint would call it other weights than the base's
        check_weight_files(base_path)
    check_weight_files(adapter_dir)
    mismatch = base_mismatch(adapter_dir, base_path)
    if mismatch:
        raise ValueError(mismatch)
    # The processor before the model: it failed to load after the merged weights were written, leaving a folder
    # that loads as a model and that every rerun refused as "already holds files".
    processor = _run_processor(adapter_dir if _processor_files(adapter_dir) else base_path)
    config_dir = adapter_dir / BASE_CONFIG_DIR
    config = load_croc_config(config_dir if config_dir.is_dir() else base_path)  # LLaVA-1.5 or OneVision family
    model = load_pretrained_croc(base_path, config, dtype=dtype)
    merged = _load_adapters(model, adapter_dir).merge_and_unload()
    # The run's card carries what the merged weights derive from; without it the next stage, trained from this
    # folder, lost the base models and licences, and a push of it said nothing of them.
    card = merged_card(adapter_dir, out_dir.resolve().name)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out_dir)
    staging = out_dir.parent / f"{_staging_prefix(out_dir)}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        merged.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
        if card is not None:
            card.save(staging / "README.md")
        _move_into_place(staging, out_dir)
    except Exception as error:  # safetensors, torch.save and tokenizers raise their own: `is_write_failure`
        if not is_write_failure(error):
            raise
        # A full disk raised SafetensorError or tokenizers' plain Exception, which went out as a traceback.
        raise MergeWriteError(f"could not write the merged model to {out_dir}: {write_failure_reason(error)}; "
                              f"nothing was written to {out_dir} (the partial copy beside it was removed): free space "
                              "there and rerun the same command") from None
    finally:
        if staging.is_dir() and not staging.is_symlink():  # a failure or an interrupt: nothing half-written stays
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("merged %s (base %s) into %s", adapter_dir, base_path, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.merge_lora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter_dir", help="a LoRA run's output_dir or checkpoint, or a downloaded adapter folder")
    parser.add_argument("--out", required=True, help="folder for the merged model")
    parser.add_argument("--base", help="the base model's folder or Hub id (default: the one adapter_config.json "
                                       "names, as a folder here, then in the Hub cache)")
    parser.add_argument("--dtype", choices=MODEL_DTYPES, default="float32",
                        help="dtype the base is loaded and the merged model saved in (default float32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    unknown_home = expand_home(args, ("adapter_dir", "out", "base"))
    if unknown_home:
        raise SystemExit(f"merge error: {unknown_home}")
    problem = merge_output_problem(args.adapter_dir, args.out, args.base)
    if problem:
        raise SystemExit(f"merge error: {problem}")
    try:
        merge_lora(args.adapter_dir, args.out, args.dtype, base=args.base)
    except (OSError, ValueError) as error:
        # Not a LoRA folder, a base folder moved or never on this machine (an adapter downloaded alone), a full disk:
        # one line, as the other mistakes of this command.
        raise SystemExit(f"merge error: {' '.join(str(error).split())}") from None
    except RuntimeError as error:
        # Adapters of another base (its folder retrained or replaced since), or memory running out: PyTorch lists
        # every mismatched tensor on a line of its own; the first says what is wrong.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        more = f" ({len(lines) - 2} more like it)" if len(lines) > 2 else ""
        raise SystemExit(f"merge error: {' '.join(lines[:2])}{more}") from None
    except KeyboardInterrupt:
        # The merge writes beside --out (new or empty: checked above) and renames once complete; the staging folder
        # is removed on the way out. So --out holds files only when the interrupt came after the rename.
        out = Path(args.out)
        finished = out.is_dir() and any(out.iterdir())
        print("merge error: interrupted (Ctrl-C) " + (f"after the merge had finished: {args.out} holds it" if finished
              else f"before the merge had finished: nothing was written to {args.out}"), file=sys.stderr)
        raise SystemExit(130) from None


def merge_output_problem(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None) -> str | None:
    """Why the CLI must not write the merged model into `out_dir`, or None: it must be a new or empty folder, and
    neither the run's folder nor its base model's (`--out BASE` replaced the base the adapters were trained on):
    `base` (`--base`), else the one the adapter names."""
    overlong = overlong_argument(adapter_dir, out_dir, base)
    if overlong:
        return f"{overlong} (nothing was written)"
    out = Path(out_dir).expanduser().resolve()
    base = base or recorded_base(adapter_dir)
    for name, folder in (("LoRA run", adapter_dir), ("base model", base)):
        if folder and not overlong_name(Path(folder).expanduser()) and Path(folder).expanduser().exists():
            folder = Path(folder).expanduser().resolve()
            if out == folder or folder in out.parents:
                return f"--out {out_dir} is {'inside ' if out != folder else ''}the {name} folder {folder}: choose a new folder"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return f"--out {out_dir} already holds files: choose a new or empty folder (nothing was written)"
    return None


if __name__ == "__main__":
    main()
