"""`python -m demo`: the whole Croc comparison on a laptop CPU, offline, in about ten minutes.

Builds the synthetic-scenes data, a small random-init Croc model, trains Croc (stage 1 -> 1.5 -> 2) and the
LLaVA-1.5* baseline (stage 1 with the detailed captions added -> 2) at an equal number of optimiser steps through
`trainer.train` with `trainer/configs/demo/*.yaml`, evaluates both on held-out questions and writes
`<out>/report/report.md` with its figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .settings import PRESETS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the first training seed")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every arm with seeds S..S+N-1 on the same data; the report gives mean and std")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and a few steps (seconds; checks the pipeline, learns nothing)")
    parser.add_argument("--ablations", action="store_true",
                        help="also run the stage-1.5 ablations: nearest-neighbour matching, causal attention, "
                             "brief captions, the caption loss alone and the VTR variants (each a stage 1.5 + stage 2 "
                             "from the Croc stage-1 model)")
    parser.add_argument("--ablation-arms", nargs="+", default=None, metavar="ARM",
                        help="with --ablations: only these ablation arms (e.g. the VTR variants vtr_cosine ...)")
    parser.add_argument("--eval-splits", nargs="+", choices=["val", "test"], default=["val", "test"],
                        help="held-out splits to evaluate (default both). Choose settings with `--eval-splits val`, "
                             "so the test split is read once, for the report")
    parser.add_argument("--run-seeds", nargs="+", type=int, default=None,
                        help="train and evaluate only these of the seeds (for several processes in parallel on the "
                             "same --out); the others are read back from --out")
    parser.add_argument("--no-report", action="store_true",
                        help="train and evaluate, but write no report (a process of a parallel run)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: assemble the report from what earlier runs left in --out")
    parser.add_argument("--resume", action="store_true",
                        help="after a killed run: keep what finished in --out (stage 0, training runs, probes, "
                             "evaluations) and do the rest; resume with the same options")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, >= 1 (default 1: on a shared 2-core machine two threads contend and "
                             "run several times slower; the numbers are reproducible for a fixed thread count)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    # Checked here, before the data is built: torch refused 0 and -1 in `run_demo` (no "all cores" value: the thread
    # count is fixed for reproducible numbers).
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    # A seed outside --seed..--seed+--seeds-1 was neither trained nor found: a traceback after the data was built.
    seeds = range(args.seed, args.seed + args.seeds)
    outside = [seed for seed in args.run_seeds or [] if seed not in seeds]
    if outside:
        parser.error(f"--run-seeds {outside[0]} is not one of the seeds {seeds[0]}..{seeds[-1]} "
                     f"(--seed {args.seed} --seeds {args.seeds})")
    if args.report_only and not args.out.is_dir():  # else the run would make the folder it then finds empty
        parser.error(f"--report-only: --out {args.out} is not a folder: give the --out of an earlier run")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: every input is built here
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("demo").setLevel(logging.INFO)

    from .pipeline import DemoOptions, MissingDemoFiles, run_demo
    from .report import summary_line

    options = DemoOptions(out=args.out, seed=args.seed, seeds=args.seeds, ablations=args.ablations,
                          threads=args.threads, settings=PRESETS["quick" if args.quick else "full"],
                          eval_splits=tuple(args.eval_splits),
                          run_seeds=tuple(args.run_seeds) if args.run_seeds else None,
                          ablation_arms=tuple(args.ablation_arms) if args.ablation_arms else None,
                          report_only=args.report_only, write_report=not args.no_report,
                          resume=args.resume)
    try:
        state = run_demo(options)
    except MissingDemoFiles as err:  # what --report-only/--run-seeds expected in --out: the options' mistake
        print(f"python -m demo: error: {err}", file=sys.stderr)
        return 2
    if options.write_report:
        print(summary_line(state), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
