"""`python -m croc_testing tiny-model FOLDER`: write the random tiny "stage 0" model the cpu_tiny configs start from;
`python -m croc_testing tiny-qwen2_5_vl FOLDER` (`tiny-qwen2_vl`, `tiny-llava_onevision1_5`, `tiny-qwen3_vl`,
`tiny-qwen3_vl_moe`, `tiny-qwen3_5`, `tiny-qwen3_5_moe`, `tiny-glm4v`, `tiny-glm46v`, `tiny-gemma3`, `tiny-gemma4`,
`tiny-paligemma`, `tiny-llava_next`, `tiny-internvl`, `tiny-mistral3`, `tiny-smolvlm`, `tiny-idefics3`): a random tiny plain folder of
that family, laid out as a Hub checkpoint is, which its cpu_tiny stage-1.5 config starts from."""

from __future__ import annotations

import argparse

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


FOLDER_HELP = "folder to write the model and its processor to"
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
    if args.command in PLAIN_FOLDERS:
        print(PLAIN_FOLDERS[args.command](args.folder, seed=args.seed))
        return
    sizes = {name: getattr(args, name) for name in TINY_SIZES}
    print(save_tiny_croc(args.folder, seed=args.seed, image_size=args.image_size, **sizes))


if __name__ == "__main__":
    main()
