"""Command line: `python -m data_recipes {list,build,synth} ...`.

    python -m data_recipes list [-v]
    python -m data_recipes build NAME --data-root DIR --out DIR [--seed S] [--strict] [--skip-image-check]
        [--num-proc N] [--set key=value ...] [--no-jsonl] [--overwrite] [--push-to-hub REPO [--private]]
        [--hub-folder DIR] [--image-storage embedded|path]
    python -m data_recipes synth --out DIR [--num-images N] [--seed S] [--image-size PX] [--test-fraction F]
                                   [--val-fraction F] [--num-text N]
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from modeling_croc.provenance import expand_home
from modeling_croc.write_failures import NO_ROOM_ERRNOS, write_failure_reason

from .build import DEFAULT_SEED, BuildWriteError, build_recipe, unfinished_build
from .publish import IMAGE_STORAGES
from .registry import RECIPES, get_recipe, list_recipes
from .synthetic_scenes import generate_synthetic_scenes, writable_scenes_folder
from .validation import RejectedRowsError


def parse_value(raw: str) -> Any:
    """Parse a `--set` value as YAML when it is a number, bool, null, list or `{...}` mapping
    (`10`, `null`, `true`, `[a, b]`); any other text stays the exact string given."""
    text = raw.strip()
    if text in ("None", "null", "~"):
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        if (text.startswith("[") and text.endswith("]")) or (text.startswith("{") and text.endswith("}")):
            # Meant as a list or mapping (DATA.md's instruction pool): kept as text, it was written verbatim into
            # every prompt of the build.
            problem = " ".join(str(getattr(error, "problem", None) or "invalid YAML").split())
            raise ValueError(f"{raw!r} does not parse as a YAML list or mapping ({problem}): quote the items that "
                             "hold `?`, `: `, `#` or a comma, e.g. --set 'instruction=[\"What is in the image?\", "
                             "Describe it.]', or quote the whole value to keep it as one text") from None
        return raw
    # Strings stay verbatim: YAML would strip a trailing "# comment" or fold a "key: value" into a mapping.
    if value is None or isinstance(value, str) or (isinstance(value, dict) and not text.startswith("{")):
        return raw
    return value


def parse_set_args(items: Sequence[str]) -> dict[str, Any]:
    """Turn `["counts.alpaca=100", "instruction=Describe it."]` into `{"counts": {"alpaca": 100}, ...}`."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        *parents, leaf = key.strip().split(".")
        node = params
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {parent!r} was already given a value")
        try:
            node[leaf] = parse_value(raw)
        except ValueError as error:
            raise ValueError(f"--set {key.strip()}: {error}") from None
    return params


def _whole_number(minimum: int) -> Any:
    """An argparse type: a whole number >= `minimum`, refused in the parser (with the option's name), before any source
    is read: `--num-proc 0` ran with one process without a word, `--seed -1` failed in numpy after the reading."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


# The smallest --image-size the synthetic scenes draw as their records say (`synthetic_scenes.make_scene`): from 12
# px (4-px grid cells) up, the largest object's radius, at least 2 px, fits in its cell, so every position answer holds;
# below, the generator failed (-5: "broadcast shape must be non-negative", 0: "cannot write empty image") or drew
# objects across their cells. The three object sizes draw as three radii from 26 px up (2, 3, 4 px).
MIN_SCENE_IMAGE_SIZE = 12

# The longest file or folder name most file systems take, in bytes.
_NAME_MAX = 255


def _long_name(path: str) -> str | None:
    """The first part of `path` longer than a file name may be, or None."""
    return next((part for part in Path(path).parts if len(os.fsencode(part)) > _NAME_MAX), None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_recipes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list the recipes and their parameters")
    p_list.add_argument("-v", "--verbose", action="store_true", help="print each recipe's full documentation")

    p_build = sub.add_parser("build", help="build a recipe into a dataset folder")
    p_build.add_argument("name", help="recipe name (see `list`)")
    p_build.add_argument("--data-root", required=True, help="folder holding the downloads (see the recipe's layout)")
    p_build.add_argument("--out", required=True, help="output folder")
    p_build.add_argument("--seed", type=_whole_number(0), default=DEFAULT_SEED,
                         help=f"sampling seed, >= 0 (default {DEFAULT_SEED})")
    p_build.add_argument("--strict", action="store_true", help="fail if any row is rejected")
    p_build.add_argument("--skip-image-check", action="store_true", help="do not open image files (text checks only)")
    p_build.add_argument("--num-proc", type=_whole_number(1), default=1,
                         help="processes for the image checks (default 1)")
    p_build.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                         help="recipe parameter, dotted keys for per-source values (e.g. counts.alpaca=100)")
    p_build.add_argument("--no-jsonl", action="store_true", help="skip the data.jsonl export")
    p_build.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    p_build.add_argument("--push-to-hub", metavar="REPO",
                         help="push the dataset (Parquet shards, images embedded) and its card to this Hub repo, after "
                         "checking them for tokens and local paths; summary.json and rejects.jsonl stay local")
    p_build.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    p_build.add_argument("--hub-folder", metavar="DIR",
                         help="write what --push-to-hub uploads (Parquet shards + card) into DIR, a new or empty "
                         "folder (or an earlier --hub-folder) outside --out and --data-root; no network")
    p_build.add_argument("--image-storage", choices=IMAGE_STORAGES, default="embedded",
                         help="how pushed rows hold images: embedded (datasets.Image, the default) or path; the build "
                         "folder always keeps the paths")

    p_synth = sub.add_parser("synth", help="write the synthetic-scenes folder")
    p_synth.add_argument("--out", required=True, help="output folder (LLaVA format)")
    p_synth.add_argument("--num-images", type=int, default=200, help="scenes to draw (default 200)")
    p_synth.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p_synth.add_argument("--image-size", type=_whole_number(MIN_SCENE_IMAGE_SIZE), default=336,
                         help=f"square image side in pixels, >= {MIN_SCENE_IMAGE_SIZE} (the smallest that holds every "
                         "shape in its 3x3 grid cell; small, medium and large differ from 26 up) (default 336)")
    p_synth.add_argument("--test-fraction", type=float, default=0.2,
                         help="share of images held out for qa_test.json (default 0.2)")
    p_synth.add_argument("--val-fraction", type=float, default=0.0,
                         help="share of images held out for qa_val.json, for choosing settings (default 0: none)")
    p_synth.add_argument("--num-text", type=int, default=None, help="text-only rows (default: --num-images)")
    return parser


def _cmd_list(verbose: bool) -> int:
    for name in list_recipes():
        recipe = RECIPES[name]
        print(f"{name}: {recipe.summary}")
        if verbose:
            print("\n".join("    " + line for line in recipe.doc.splitlines()[1:]).rstrip())
        else:
            params = ", ".join(f"{k}={v!r}" for k, v in recipe.parameters().items())
            print(f"    parameters: {params or '(none)'}")
        print()
    return 0


def _print_report(summary: dict[str, Any]) -> None:
    rows = summary["rows"]
    print(f"{summary['recipe']}: kept {rows['kept']:,} of {rows['read']:,} rows ({rows['dropped']:,} rejected)")
    print(f"  {'source':<20} {'requested':>10} {'taken':>10} {'kept':>10} {'dropped':>8}  shortfall")
    for name, s in summary["sources"].items():
        requested = "all" if s["requested"] is None else s["requested"]
        print(f"  {name:<20} {requested:>10} {s['taken']:>10} {s['kept']:>10} {s['dropped']:>8}  {s['shortfall']}")
    for reason, n in summary["dropped_by_reason"].items():
        if n:
            print(f"  rejected {reason}: {n}")
    notices = summary.get("notices", {})
    for name, n in notices.get("counts", {}).items():
        if n:
            examples = ", ".join(notices.get("examples", {}).get(name, []))
            print(f"  kept, but {name}: {n} ({notices['meaning'][name]}; e.g. {examples})")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 usage/input error, including a data file that does not read
    as rows, 2 rows rejected under --strict, every row rejected, or a source that kept none of its rows; 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "list":
        return _cmd_list(args.verbose)
    unknown_home = expand_home(args, ("out", "data_root", "hub_folder"))
    if unknown_home:
        print(f"error: {unknown_home}", file=sys.stderr)
        return 1
    if args.command == "synth":
        # As `build`: `~` is the home folder (a quoted '~/x' wrote ./~/x), and a bad value or an --out that cannot be
        # a folder is one line, not a traceback.
        if not writable_scenes_folder(Path(args.out).expanduser()):
            print(f"error: --out {args.out} is not empty and no earlier synth wrote it (no scenes.json): its files "
                  "would be replaced; choose a new or empty folder (nothing was written)", file=sys.stderr)
            return 1
        out = Path(args.out).expanduser()
        if out.exists() and not out.is_dir():  # the bare "[Errno 20] Not a directory" did not say which path
            print(f"error: --out {args.out} is a file (Not a directory): give a new or empty folder (nothing was "
                  "written)", file=sys.stderr)
            return 1
        fresh = not out.is_dir() or not any(out.iterdir())
        try:
            made = generate_synthetic_scenes(out, num_images=args.num_images, seed=args.seed,
                                             image_size=args.image_size, test_fraction=args.test_fraction,
                                             val_fraction=args.val_fraction, num_text=args.num_text, progress=True)
        except OSError as err:
            if err.errno not in NO_ROOM_ERRNOS:  # an --out that cannot be a folder
                print(f"error: {err}", file=sys.stderr)
                return 1
            left = ("nothing was written there (the partial copy beside it was removed)" if fresh else
                    "its files are partly rewritten (rerunning the same command writes it again)")
            print(f"error: could not write the synthetic scenes to --out {args.out}: {write_failure_reason(err)}; {left}: "
                  "free space there (or make it writable) and rerun the same command", file=sys.stderr)
            return 1
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"wrote {made.out_dir}: " + ", ".join(f"{k}={v}" for k, v in made.counts.items()))
        return 0
    too_long = _long_name(args.out)
    if too_long:
        print(f"error: --out {args.out}: the name {too_long[:40]}... is {len(os.fsencode(too_long))} bytes, longer than "
              f"a file system takes ({_NAME_MAX}); choose a shorter name (nothing was read or written)", file=sys.stderr)
        return 1
    try:
        recipe = get_recipe(args.name)
        params = parse_set_args(args.sets)
        if args.private and not args.push_to_hub:
            raise ValueError("--private applies to the repo --push-to-hub creates; add --push-to-hub REPO or drop it")
        unknown = sorted(set(params) - set(recipe.parameters()))
        if unknown:
            raise ValueError(f"recipe {recipe.name!r} has no parameter(s) {unknown}; "
                             f"it takes: {', '.join(recipe.parameters())}")
        result = build_recipe(
            args.name, args.data_root, args.out, seed=args.seed, params=params, strict=args.strict,
            check_images=not args.skip_image_check, num_proc=args.num_proc, export_jsonl=not args.no_jsonl,
            overwrite=args.overwrite, push_to_hub=args.push_to_hub, private=args.private or None,
            hub_folder=args.hub_folder, image_storage=args.image_storage,
            command=shlex.join(["python", "-m", "data_recipes", *argv]),
        )
    except KeyboardInterrupt:
        # Ctrl-C: one line, the shell's status for SIGINT, not a traceback with status 1.
        left = ("it is marked as an unfinished build (summary.json status \"building\"), which the trainer refuses: "
                "rerun the same command with --overwrite" if unfinished_build(Path(args.out).expanduser())
                else "nothing in it was changed")
        print(f"error: interrupted; --out {args.out}: {left}", file=sys.stderr)
        return 130
    except RejectedRowsError as err:  # rows rejected under --strict, or every row rejected
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) and err.args else err}", file=sys.stderr)
        return 1
    except BuildWriteError as err:  # a full disk: one line, not OSError tracebacks (two, from `datasets`)
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    _print_report(result.summary)
    print(f"wrote {result.out_dir}")
    return 0
