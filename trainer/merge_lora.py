"""Merge a LoRA run into a plain Croc folder.

    python -m trainer.merge_lora ADAPTER_DIR --out MERGED_DIR [--dtype float32|bfloat16|float16]

ADAPTER_DIR is the output folder (or a checkpoint) of a LoRA run: adapters, the `modules_to_save` copies of the
projector / pool / head, the processor, and `base_config/config.json` (the base's Croc config for that stage).
MERGED_DIR gets the run's model card too (base models, licences, datasets), saying it is a model folder.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from modeling_croc.constants import MODEL_DTYPES
from modeling_croc.loading import load_croc_config, load_pretrained_croc, load_processor

from .croc_trainer import BASE_CONFIG_DIR
from .model_card import merged_card

logger = logging.getLogger(__name__)


def merge_lora(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Load the base model, apply the adapters of `adapter_dir`, merge them and save a full folder to `out_dir`."""
    from peft import PeftModel

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_config = adapter_dir / "adapter_config.json"
    if not adapter_config.is_file():
        raise FileNotFoundError(f"{adapter_dir} has no adapter_config.json: not a LoRA run folder")
    base_path = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base_path:
        raise ValueError(
            f"{adapter_dir}: the adapter config names no base model folder, so the base cannot be "
            "rebuilt; train LoRA on top of a saved stage folder"
        )
    config_dir = adapter_dir / BASE_CONFIG_DIR
    config = load_croc_config(config_dir if config_dir.is_dir() else base_path)  # LLaVA-1.5 or OneVision family
    base = load_pretrained_croc(base_path, config, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
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
    parser.add_argument("adapter_dir")
    parser.add_argument("--out", required=True, help="folder for the merged model")
    parser.add_argument("--dtype", choices=MODEL_DTYPES, default="float32")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    problem = merge_output_problem(args.adapter_dir, args.out)
    if problem:
        raise SystemExit(f"merge error: {problem}")
    try:
        merge_lora(args.adapter_dir, args.out, args.dtype)
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


def merge_output_problem(adapter_dir: str | Path, out_dir: str | Path) -> str | None:
    """Why the CLI must not write the merged model into `out_dir`, or None: it must be a new or empty folder, and
    neither the run's folder nor its base model's (`--out BASE` replaced the base the adapters were trained on)."""
    out = Path(out_dir).expanduser().resolve()
    try:
        base = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
        base = base.get("base_model_name_or_path") if isinstance(base, dict) else None
    except (OSError, ValueError):
        base = None
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
