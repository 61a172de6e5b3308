"""`python -m modeling_croc.convert COMMAND ...`: checkpoint conversions into and out of Croc.

    from-original SRC OUT [--vision-tower CLIP_DIR] [--preset NAME] [--vocab-multiple N]
    from-llava    SRC OUT [--preset NAME]
    from-parts    TOWER_DIR LM_DIR OUT [--preset NAME] [--image-aspect-ratio square|pad] [--vocab-multiple N]
                  [--vision-feature-layer N] [--vision-feature-select-strategy default|full] [--base-model ID ...]
    from-victor   SRC OUT [--vision-tower SIGLIP_DIR] [--preset NAME] [--vocab-multiple N]
    to-llava      SRC OUT        (alias: to-plain, for every family)

Every command takes --overwrite; `python -m modeling_croc.convert COMMAND --help` says what each option does.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..conversion import build_from_parts, convert_llava_folder, convert_original_checkpoint
from ..presets import CROC_PRESET_NAMES
from ..provenance import expand_home, is_hub_id
from .to_llava import export_llava_folder

OUT_HELP = "a new or empty folder to write (one that holds files needs --overwrite)"


def _preset(args) -> dict:
    return {"croc_preset": args.preset} if getattr(args, "preset", None) else {}


COMMANDS = {
    "from-original": lambda a: convert_original_checkpoint(a.source, a.out, vision_tower=a.vision_tower,
                                                           vocab_multiple=a.vocab_multiple, **_preset(a)),
    "from-llava": lambda a: convert_llava_folder(a.source, a.out, **_preset(a)),
    "from-parts": lambda a: build_from_parts(a.vision_tower, a.language_model, a.out, vocab_multiple=a.vocab_multiple,
                                             image_aspect_ratio=a.image_aspect_ratio, base_models=a.base_model,
                                             vision_feature_layer=a.vision_feature_layer,
                                             vision_feature_select_strategy=a.vision_feature_select_strategy,
                                             **_preset(a)),
    # load_croc tells the two fork layouts apart by model_type (llava_qwen is ViCToR's).
    "from-victor": lambda a: convert_original_checkpoint(a.source, a.out, vision_tower=a.vision_tower,
                                                         vocab_multiple=a.vocab_multiple, **_preset(a)),
    "to-llava": lambda a: export_llava_folder(a.source, a.out),
    "to-plain": lambda a: export_llava_folder(a.source, a.out),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling_croc.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    original = sub.add_parser("from-original", help="original LLaVA / released Croc (transformers 4.37 fork) layout")
    original.add_argument("source", help="the checkpoint's folder or Hub id")
    original.add_argument("out", help=OUT_HELP)
    original.add_argument("--vision-tower", help="local CLIP folder (default: the checkpoint's mm_vision_tower)")
    llava = sub.add_parser("from-llava", help="a transformers llava folder, initialised for stage 1.5")
    llava.add_argument("source", help="the llava folder or Hub id")
    llava.add_argument("out", help=OUT_HELP)
    victor = sub.add_parser("from-victor", help="a released ViCToR checkpoint (LLaVA-NeXT fork layout, llava_qwen)")
    victor.add_argument("source", help="the checkpoint's folder or Hub id")
    victor.add_argument("out", help=OUT_HELP)
    victor.add_argument("--vision-tower", help="local SigLIP folder (default: the checkpoint's mm_vision_tower)")
    parts = sub.add_parser("from-parts", help="separate vision-tower (CLIP, SigLIP, SigLIP2) and causal-LM "
                                              "checkpoints, for stage 1")
    parts.add_argument("vision_tower", help="the vision tower's folder or Hub id")
    parts.add_argument("language_model", help="the causal LM's folder or Hub id")
    parts.add_argument("out", help=OUT_HELP)
    parts.add_argument("--image-aspect-ratio", choices=["square", "pad"], default="square",
                       help="how images are prepared: square, the tower's own resize and crop (default); pad, padded "
                            "to a square with the image-mean colour first, as LLaVA-1.5's `pad`")
    parts.add_argument("--base-model", action="append", metavar="HUB_ID",
                       help="Hub id of a part given as a local folder, for the card (repeat for each part)")
    parts.add_argument("--vision-feature-layer", type=int, default=-2,
                       help="tower layer LLaVA reads (default -2, as LLaVA-1.5, LLaVA-OneVision and ViCToR)")
    parts.add_argument("--vision-feature-select-strategy", choices=["default", "full"],
                       help="drop the class token (default) or keep every token (full); default: by tower "
                            "(CLIP: default, SigLIP/SigLIP2: full)")
    # The default differs by command, so the help says which one applies (TRAINING.md's presets table).
    for command, default in ((original, "the one the checkpoint's model_type was released with"),
                             (victor, "the one the checkpoint's model_type was released with: victor"),
                             (llava, "paper"), (parts, "paper")):
        command.add_argument("--preset", choices=list(CROC_PRESET_NAMES),
                             help=f"the Croc preset the folder is written with (default: {default})")
    for command in (original, parts, victor):
        command.add_argument(
            "--vocab-multiple", type=int, default=64,
            help="pad the vocabulary (grown by <image> and <pad>) to a multiple of this with rows equal to the mean "
                 "embedding (default 64, as LLaVA-1.5's conversions: 32064 for Vicuna). The padding rows take a little "
                 "softmax mass the source model never had: at most log(V_padded / V) nats, about 0.002 for Vicuna. "
                 "1 adds only <image> and <pad>.")
    export = sub.add_parser("to-llava", aliases=["to-plain"],
                            help="export to a plain folder of the parent family (llava, llava_onevision, qwen2_5_vl, "
                                 "...: no pool, no head)")
    export.add_argument("source", help="the Croc folder to export")
    export.add_argument("out", help=OUT_HELP)
    for command in (original, llava, parts, victor, export):
        command.add_argument("--overwrite", action="store_true",
                             help="write into OUT even when it already holds files (a model there is replaced)")
    return parser


def output_problem(args) -> str | None:
    """Why the conversion must not write into `args.out`, or None. OUT is written file by file over whatever is
    there: a trained stage folder given as OUT (or a conversion of a folder into itself) would keep its run record
    and model card and hold other weights, with nothing to say so."""
    out = Path(args.out).expanduser()
    for name in ("source", "vision_tower", "language_model"):
        source = getattr(args, name, None)
        if source and not Path(source).expanduser().exists() and not is_hub_id(str(source)):
            return f"{source}: no such folder (and not a Hub repository id)"
    for name in ("source", "vision_tower", "language_model"):
        source = getattr(args, name, None)
        if source and Path(source).expanduser().exists() and Path(source).expanduser().resolve() == out.resolve():
            return f"OUT {args.out} is the {name.replace('_', ' ')} folder itself: choose a new folder"
    if out.exists() and not out.is_dir():
        return f"OUT {args.out} is a file"
    if out.is_dir() and not args.overwrite and any(out.iterdir()):
        held = sorted(path.name for path in out.iterdir())
        return (f"OUT {args.out} already holds files ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}): "
                "the conversion would overwrite them; choose a new or empty folder, or pass --overwrite")
    return None


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    unknown_home = expand_home(args, ("source", "out", "vision_tower", "language_model"))
    if unknown_home:
        sys.exit(f"convert error: {unknown_home}")
    problem = output_problem(args)
    if problem:
        sys.exit(f"convert error: {problem}")
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError) as error:  # a refused or unreadable source: one line, not a traceback
        sys.exit(f"convert error: {error}")
    logging.getLogger(__name__).info("wrote %s", args.out)


if __name__ == "__main__":
    main()
