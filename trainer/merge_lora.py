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
import json
import logging
from pathlib import Path

from modeling_croc.constants import MODEL_DTYPES
from modeling_croc.loading import load_croc_config, load_pretrained_croc, load_processor
from modeling_croc.model_folders import check_weight_files, reading_weights
from modeling_croc.provenance import expand_home, is_hub_id

from .croc_trainer import BASE_CONFIG_DIR, BASE_WEIGHTS_FILE
from .model_card import merged_card
from .run_record import (
    _VOLATILE_CONFIG_KEYS,
    earlier_weights_fingerprints,
    read_run_record,
    weights_fingerprint,
)

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


def merge_lora(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32", base: str | None = None
               ) -> Path:
    """Load the base model, apply the adapters of `adapter_dir`, merge them and save a full folder to `out_dir`.
    `base`: the base model's folder or Hub id, when not the one the adapter names (`find_base`); one of another
    architecture or other weights than the adapters were trained on raises ValueError (`base_mismatch`)."""
    from peft import PeftModel

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_config = adapter_dir / "adapter_config.json"
    if not adapter_config.is_file():
        raise FileNotFoundError(f"{adapter_dir} has no adapter_config.json: not a LoRA run folder")
    base_path = find_base(adapter_dir, base)
    if Path(base_path).is_dir():  # a cut file first: its fingerprint would call it other weights than the base's
        check_weight_files(base_path)
    check_weight_files(adapter_dir)
    mismatch = base_mismatch(adapter_dir, base_path)
    if mismatch:
        raise ValueError(mismatch)
    config_dir = adapter_dir / BASE_CONFIG_DIR
    config = load_croc_config(config_dir if config_dir.is_dir() else base_path)  # LLaVA-1.5 or OneVision family
    model = load_pretrained_croc(base_path, config, dtype=dtype)
    with reading_weights(adapter_dir):
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    has_processor = (adapter_dir / "processor_config.json").is_file() or (adapter_dir / "tokenizer_config.json").is_file()
    processor = load_processor(adapter_dir if has_processor else base_path)
    if processor is not None:
        processor.save_pretrained(out_dir)
    # The run's card carries what the merged weights derive from; without it the next stage, trained from this
    # folder, lost the base models and licences, and a push of it said nothing of them.
    card = merged_card(adapter_dir, out_dir.resolve().name)
    if card is not None:
        card.save(out_dir / "README.md")
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


def merge_output_problem(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None) -> str | None:
    """Why the CLI must not write the merged model into `out_dir`, or None: it must be a new or empty folder, and
    neither the run's folder nor its base model's (`--out BASE` replaced the base the adapters were trained on):
    `base` (`--base`), else the one the adapter names."""
    out = Path(out_dir).expanduser().resolve()
    base = base or recorded_base(adapter_dir)
    for name, folder in (("LoRA run", adapter_dir), ("base model", base)):
        if folder and Path(folder).expanduser().exists():
            folder = Path(folder).expanduser().resolve()
            if out == folder or folder in out.parents:
                return f"--out {out_dir} is {'inside ' if out != folder else ''}the {name} folder {folder}: choose a new folder"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return f"--out {out_dir} already holds files: choose a new or empty folder (nothing was written)"
    return None


if __name__ == "__main__":
    main()
