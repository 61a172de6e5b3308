"""`python -m croc_testing tiny-model FOLDER`: write the random tiny "stage 0" model the cpu_tiny configs start from;
`python -m croc_testing tiny-qwen2_5_vl FOLDER`: a random tiny plain Qwen2.5-VL folder (stage 1.5 starts from it)."""

from __future__ import annotations

import argparse

from .families import save_tiny_qwen2_5_vl
from .tiny import TINY_SIZES, save_tiny_croc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m croc_testing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny-model", help="random tiny Croc model + offline processor (LLaVA vocabulary)")
    tiny.add_argument("folder")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--image-size", type=int, default=56)
    for name, value in TINY_SIZES.items():
        tiny.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    qwen = commands.add_parser("tiny-qwen2_5_vl", help="random tiny plain Qwen2.5-VL folder + offline processor")
    qwen.add_argument("folder")
    qwen.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "tiny-qwen2_5_vl":
        print(save_tiny_qwen2_5_vl(args.folder, seed=args.seed))
        return
    sizes = {name: getattr(args, name) for name in TINY_SIZES}
    print(save_tiny_croc(args.folder, seed=args.seed, image_size=args.image_size, **sizes))


if __name__ == "__main__":
    main()
