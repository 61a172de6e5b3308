"""`python -m croc_testing tiny-model FOLDER`: write the random tiny "stage 0" model the cpu_tiny configs start from;
`python -m croc_testing tiny-qwen2_5_vl FOLDER` (`tiny-qwen2_vl`, `tiny-llava_onevision1_5`, `tiny-qwen3_vl`,
`tiny-qwen3_vl_moe`, `tiny-qwen3_5`, `tiny-qwen3_5_moe`, `tiny-glm4v`, `tiny-glm46v`, `tiny-gemma3`, `tiny-gemma4`,
`tiny-paligemma`, `tiny-llava_next`, `tiny-internvl`, `tiny-mistral3`, `tiny-smolvlm`, `tiny-idefics3`): a random tiny plain folder of
that family, laid out as a Hub checkpoint is, which its cpu_tiny stage-1.5 config starts from."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from modeling_croc.provenance import STAGE0_TAG

from .families import save_tiny_llava_onevision1_5, save_tiny_qwen2_5_vl, save_tiny_qwen2_vl
from .gemma3 import save_tiny_gemma3
from .gemma4 import save_tiny_gemma4
from .glm4v import save_tiny_glm4v, save_tiny_glm46v
from .idefics3 import save_tiny_idefics3
from .internvl import save_tiny_internvl
from .llava_next import save_tiny_llava_next
from .mistral3 import save_tiny_mistral3
from .paligemma import save_tiny_paligemma
from .qwen3_vl import save_tiny_qwen3_5, save_tiny_qwen3_5_moe, save_tiny_qwen3_vl, save_tiny_qwen3_vl_moe
from .smolvlm import save_tiny_smolvlm
from .tiny import TINY_SIZES, save_tiny_croc

# Subcommand -> the writer of a tiny plain folder of that family.
PLAIN_FOLDERS = {"tiny-qwen2_5_vl": save_tiny_qwen2_5_vl, "tiny-qwen2_vl": save_tiny_qwen2_vl,
                 "tiny-llava_onevision1_5": save_tiny_llava_onevision1_5,
                 "tiny-qwen3_vl": save_tiny_qwen3_vl,
                 "tiny-qwen3_vl_moe": save_tiny_qwen3_vl_moe, "tiny-qwen3_5": save_tiny_qwen3_5,
                 "tiny-qwen3_5_moe": save_tiny_qwen3_5_moe, "tiny-glm4v": save_tiny_glm4v,
                 "tiny-glm46v": save_tiny_glm46v,
                 "tiny-gemma3": save_tiny_gemma3, "tiny-gemma4": save_tiny_gemma4,
                 "tiny-paligemma": save_tiny_paligemma,
                 "tiny-llava_next": save_tiny_llava_next,
                 "tiny-internvl": save_tiny_internvl, "tiny-mistral3": save_tiny_mistral3,
                 "tiny-smolvlm": save_tiny_smolvlm, "tiny-idefics3": save_tiny_idefics3}


FOLDER_HELP = "folder to write the model and its processor to (new, empty, or one these commands wrote before)"
# Left in every folder these commands write: a rerun may write such a folder again, any other non-empty folder is
# refused (a trained run's output_dir took random weights under its own card and run record).
MARKER = ".croc-testing-tiny"
# The tiny stage 0's card: tagged as a stage-0 folder, so a stage after 1 started from it says so.
TINY_CARD = (f"---\ntags:\n- croc\n- {STAGE0_TAG}\n---\n\n# Croc stage 0 (tiny, random)\n\nRandom weights of the "
             "tiny configs (`python -m croc_testing tiny-model`): the starting point of `trainer/configs/cpu_tiny/stage1.yaml`.\n")
SEED_HELP = "seed of the random weights (default 0)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m croc_testing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny-model", help="random tiny Croc model + offline processor (LLaVA vocabulary)")
    tiny.add_argument("folder", help=FOLDER_HELP)
    tiny.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    tiny.add_argument("--image-size", type=int, default=56, help="image side in pixels (default 56)")
    for name, value in TINY_SIZES.items():
        tiny.add_argument(f"--{name.replace('_', '-')}", type=int, default=value,
                          help=f"{name.replace('_', ' ')} of the tiny model (default {value})")
    for command in PLAIN_FOLDERS:
        family = command.removeprefix("tiny-")
        plain = commands.add_parser(command, help=f"random tiny plain {family} folder + offline processor")
        plain.add_argument("folder", help=FOLDER_HELP)
        plain.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    args = parser.parse_args(argv)
    folder = Path(args.folder).expanduser()
    if folder.exists() and not (folder.is_dir() and (not any(folder.iterdir()) or (folder / MARKER).is_file())):
        raise SystemExit(f"croc_testing: {args.folder} is not empty and was not written by this command (its files "
                         "would be replaced by random weights): choose a new or empty folder")
    # A new or empty folder is written beside it and renamed into place when whole (`written_whole`, as the
    # conversions): a full disk left a half-written folder without the marker, which every rerun refused. An earlier
    # folder of these commands is rewritten in place: its marker stays, so a rerun takes it again.
    fresh = not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
    if fresh:
        from modeling_croc.conversion import written_whole

        writing = written_whole(folder)
    else:
        writing = contextlib.nullcontext(folder)
    try:
        with writing as target:
            target.mkdir(parents=True, exist_ok=True)
            (target / MARKER).write_text(args.command + "\n", encoding="utf-8")
            if args.command in PLAIN_FOLDERS:
                PLAIN_FOLDERS[args.command](target, seed=args.seed)
            else:
                sizes = {name: getattr(args, name) for name in TINY_SIZES}
                save_tiny_croc(target, seed=args.seed, image_size=args.image_size, **sizes)
                (target / "README.md").write_text(TINY_CARD, encoding="utf-8")
    except ModuleNotFoundError as error:  # the offline tokenizers ship with packages of the `test` extra
        raise SystemExit(f"croc_testing: {error.name} is not installed; the tiny models' offline tokenizer comes from "
                         "the `test` extra: pip install -e \".[test]\"") from None
    except ValueError as error:  # a size the config refuses (CrocConfigError, transformers' own checks)
        raise SystemExit(f"croc_testing: {' '.join(str(error).split())}") from None
    except Exception as error:  # a full disk: OSError, safetensors' SafetensorError, tokenizers' plain Exception
        from modeling_croc.write_failures import is_write_failure, write_failure_reason

        if not is_write_failure(error):
            raise
        left = ("nothing was written there (the partial copy beside it was removed)" if fresh else
                "its files are partly rewritten (rerunning the same command writes it again)")
        raise SystemExit(f"croc_testing: could not write {args.folder}: {write_failure_reason(error)}; {left}: free "
                         "space there and rerun the same command") from None
    print(folder)


if __name__ == "__main__":
    main()
