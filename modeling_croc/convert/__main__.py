"""`python -m modeling_croc.convert COMMAND ...`: checkpoint conversions into and out of Croc.

    from-original SRC OUT [--vision-tower CLIP_DIR] [--preset NAME] [--vocab-multiple N]
    from-llava    SRC OUT [--preset NAME]
    from-parts    VISION LLM OUT [--preset NAME] [--image-aspect-ratio square|pad] [--vocab-multiple N]
                  [--vision-feature-layer N] [--vision-feature-select-strategy default|full] [--base-model ID ...]
    from-victor   SRC OUT [--vision-tower SIGLIP_DIR] [--preset NAME] [--vocab-multiple N]
    to-llava      SRC OUT        (alias: to-plain, for every family)

Every command takes --overwrite; `python -m modeling_croc.convert COMMAND --help` says what each option does. OUT is
written in a hidden folder next to it (`.OUT.convert-partial`) and renamed into place once complete: an interrupted
conversion leaves no OUT (and, under --overwrite, the old one as it was).
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
from pathlib import Path

from ..conversion import (
    build_from_parts,
    clear_interrupted,
    convert_llava_folder,
    convert_original_checkpoint,
    written_whole,
)
from ..model_folders import hub_model_problem, model_folder_problem, nothing_at, overlong_name
from ..presets import CROC_PRESET_NAMES
from ..provenance import expand_home, is_hub_id
from ..write_failures import is_out_of_room, write_failure_reason
from .to_llava import export_llava_folder

OUT_HELP = "a new or empty folder to write (one that holds files needs --overwrite)"
# What a model folder holds at its top level (a conversion's, a Hub download's): --overwrite replaces a folder of
# these whole, and refuses one holding anything else (a training run's checkpoints and records, the user's notes).
MODEL_FOLDER_FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                      "pytorch_model*.bin", "pytorch_model.bin.index.json", "tokenizer*.json", "tekken.json", "*.model",
                      "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.tiktoken",
                      "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                      "chat_template.json", "chat_template.jinja", "README.md", "*.py", ".gitattributes")
DOWNLOAD_FOLDERS = (".cache",)  # `hf download --local-dir`'s metadata
# The folder arguments, as a message names them (the positional ones by their metavar in --help).
SOURCES = ("source", "vision_tower", "language_model")
LABELS = {"source": "SRC", "vision_tower": "VISION", "language_model": "LLM", "out": "OUT"}


def _preset(args) -> dict:
    return {"croc_preset": args.preset} if getattr(args, "preset", None) else {}


# `a.out` is the staging folder; `a.name` OUT's own name, which the card is titled with, and `a.command` the command
# run, which it names.
COMMANDS = {
    "from-original": lambda a: convert_original_checkpoint(a.source, a.out, vision_tower=a.vision_tower,
                                                           vocab_multiple=a.vocab_multiple, name=a.name,
                                                           command=a.command, **_preset(a)),
    "from-llava": lambda a: convert_llava_folder(a.source, a.out, name=a.name, **_preset(a)),
    "from-parts": lambda a: build_from_parts(a.vision_tower, a.language_model, a.out, vocab_multiple=a.vocab_multiple,
                                             image_aspect_ratio=a.image_aspect_ratio, base_models=a.base_model,
                                             vision_feature_layer=a.vision_feature_layer,
                                             vision_feature_select_strategy=a.vision_feature_select_strategy,
                                             **_preset(a)),
    # load_croc tells the two fork layouts apart by model_type (llava_qwen is ViCToR's).
    "from-victor": lambda a: convert_original_checkpoint(a.source, a.out, vision_tower=a.vision_tower,
                                                         vocab_multiple=a.vocab_multiple, name=a.name,
                                                         command=a.command, **_preset(a)),
    "to-llava": lambda a: export_llava_folder(a.source, a.out, name=a.name, command=a.command),
    "to-plain": lambda a: export_llava_folder(a.source, a.out, name=a.name, command=a.command),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling_croc.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    original = sub.add_parser("from-original", help="original LLaVA / released Croc (transformers 4.37 fork) layout")
    original.add_argument("source", metavar="SRC", help="the checkpoint's folder or Hub id")
    original.add_argument("out", metavar="OUT", help=OUT_HELP)
    original.add_argument("--vision-tower", help="local CLIP folder (default: the checkpoint's mm_vision_tower)")
    llava = sub.add_parser("from-llava", help="a transformers folder of any family (llava, qwen2_5_vl, gemma3, ...: "
                                              "docs/MODELS.md), initialised for stage 1.5")
    llava.add_argument("source", metavar="SRC", help="the parent model's folder (llava, qwen2_5_vl, gemma3, ...) or "
                                                     "Hub id")
    llava.add_argument("out", metavar="OUT", help=OUT_HELP)
    victor = sub.add_parser("from-victor", help="a released ViCToR checkpoint (LLaVA-NeXT fork layout, llava_qwen)")
    victor.add_argument("source", metavar="SRC", help="the checkpoint's folder or Hub id")
    victor.add_argument("out", metavar="OUT", help=OUT_HELP)
    victor.add_argument("--vision-tower", help="local SigLIP folder (default: the checkpoint's mm_vision_tower)")
    parts = sub.add_parser("from-parts", help="separate vision-tower (CLIP, SigLIP, SigLIP2) and causal-LM "
                                              "checkpoints, for stage 1")
    parts.add_argument("vision_tower", metavar="VISION", help="the vision tower's folder or Hub id")
    parts.add_argument("language_model", metavar="LLM", help="the causal LM's folder or Hub id")
    parts.add_argument("out", metavar="OUT", help=OUT_HELP)
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
    export.add_argument("source", metavar="SRC", help="the Croc folder to export")
    export.add_argument("out", metavar="OUT", help=OUT_HELP)
    for command in (original, llava, parts, victor, export):
        command.add_argument("--overwrite", action="store_true",
                             help="replace OUT when it is a model folder (a config.json, weights, tokenizer and "
                                  "processor files, a card, code; nothing else): the old folder is removed once the "
                                  "new one is complete")
    return parser


def _label(args, name: str) -> str:
    """How a message names the folder argument `name`: its metavar, or the option for the fork layouts' tower."""
    return "--vision-tower" if name == "vision_tower" and args.command != "from-parts" else LABELS[name]


def argument_problem(args) -> str | None:
    """Why the folder arguments cannot be converted from, or None: one that is empty (`"$OUT"` with OUT unset named
    the current folder, and --overwrite replaced its files), a name the file system cannot take (every look at it
    raised "File name too long"), a source that is no local folder and no Hub model to be had here (the Hub client's
    "couldn't connect" for what is most often a folder not made yet). All before anything loads."""
    names = [name for name in (*SOURCES, "out") if getattr(args, name, None) is not None]
    for name in names:
        if not getattr(args, name).strip():
            return f"{_label(args, name)} is empty (an unset variable in the command?); name a folder"
    for name in names:
        problem = overlong_name(getattr(args, name))
        if problem is not None:
            return f"{_label(args, name)}: {problem}"
    problems = []  # every source at once: from-parts with both parts not downloaded yet named only the first
    for name in names[:-1]:
        source = getattr(args, name)
        if Path(source).is_dir() and model_folder_problem(source):
            # A LoRA adapter folder or no model at all: every source is read by its config.json (to-llava's was
            # transformers' "Unrecognized model ... Should have a `model_type` key" about a file that is not there).
            problems.append(f"{_label(args, name)} {model_folder_problem(source)}")
            continue
        if Path(source).exists():
            continue
        if not is_hub_id(source):
            problems.append(f"{_label(args, name)} {source}: no such folder (and not a Hub repository id)")
            continue
        why = hub_model_problem(source)
        if why is not None:
            problems.append(f"{_label(args, name)} {source} is no local folder ({nothing_at(source)}) and, as a "
                            f"Hub id, {why}")
    return "; ".join(problems) or None


def output_problem(args) -> str | None:
    """Why the conversion must not write `args.out`, or None. OUT is replaced as a whole once the conversion is
    complete: a trained stage folder given as OUT (or a folder converted into itself, or a folder that holds the
    source) would lose its files, so a folder that holds any needs --overwrite, and the source's is refused."""
    out = Path(args.out).expanduser().resolve()
    if not out.name:
        return f"OUT {args.out} is the root folder: choose a new folder"
    for name in SOURCES:
        source = getattr(args, name, None)
        if not source or not Path(source).expanduser().exists():
            continue
        source_folder = Path(source).expanduser().resolve()
        if source_folder == out:
            return f"OUT {args.out} is the {name.replace('_', ' ')} folder itself: choose a new folder"
        if out in source_folder.parents:
            return (f"OUT {args.out} holds the {name.replace('_', ' ')} folder {source}, which replacing OUT would "
                    "delete: choose a new folder")
    if out.exists() and not out.is_dir():
        return f"OUT {args.out} is a file"
    held = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    shown = f"{', '.join(held[:4])}{', ...' if len(held) > 4 else ''}"
    if held and not args.overwrite:
        return (f"OUT {args.out} already holds files ({shown}): the conversion would replace them; choose a new or "
                "empty folder, or pass --overwrite")
    if held and not (out / "config.json").is_file():
        # --overwrite replaces a model folder, an earlier conversion's: a folder of other files is not one.
        return (f"OUT {args.out} holds files ({shown}) but no config.json, so no model folder that --overwrite may "
                "replace whole: choose a new or empty folder")
    others = [name for name in (_not_of_a_model_folder(out / name) for name in held) if name]
    if others:
        listed = f"{', '.join(others[:4])}{', ...' if len(others) > 4 else ''}"
        return (f"OUT {args.out} holds {listed} besides a model, which replacing OUT would delete: --overwrite "
                "replaces only a model folder whole; move them out or choose a new folder")
    return None


def _not_of_a_model_folder(path: Path) -> str | None:
    """`path`'s name as a message shows it (a folder's with `/`) when no model folder holds it, else None."""
    if path.is_dir() and not path.is_symlink():
        return None if path.name in DOWNLOAD_FOLDERS else f"{path.name}/"
    return None if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in MODEL_FOLDER_FILES) else path.name


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    problem = expand_home(args, (*SOURCES, "out")) or argument_problem(args)
    if not problem:
        clear_interrupted(args.out)  # what a killed conversion left next to OUT: checked as OUT was before it
        problem = output_problem(args)
    if problem:
        sys.exit(f"convert error: {problem}")
    try:
        # Written whole or not at all: the command writes a staging folder, renamed to OUT once it is complete.
        with written_whole(args.out) as staging:
            COMMANDS[args.command](argparse.Namespace(**{**vars(args), "out": str(staging),
                                                           "name": Path(args.out).expanduser().resolve().name}))
    except Exception as error:
        if is_out_of_room(error):  # written_whole removed the staging folder
            sys.exit(f"convert error: could not write OUT {args.out}: {write_failure_reason(error)}; nothing was written to OUT, which is as "
                     "it was (the partial copy beside it was removed): free space there and rerun the same command")
        if not isinstance(error, (ValueError, OSError)):
            raise
        # A refused or unreadable source: one line, not a traceback.
        sys.exit(f"convert error: {' '.join(str(error).split())}")
    except KeyboardInterrupt:
        print(f"convert error: interrupted (Ctrl-C): nothing was written to OUT {args.out}, which is as it was",
              file=sys.stderr)
        sys.exit(130)
    logging.getLogger("modeling_croc.convert").info("wrote %s", args.out)  # not "__main__"


if __name__ == "__main__":
    main()
