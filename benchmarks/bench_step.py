"""Croc overhead: a training step of stage 1.5 (Croc objectives on) over the same step of stage 2 (off).

One tiny-ish Croc model (576 visual tokens per image: CLIP-style tower at 336 px / patch 14; Llama-style LM) and
one batch; per preset (`paper`: Hungarian matching, no head; `official`: nearest neighbour, VTR head) the same
model runs full steps (forward, backward, AdamW step) with the objectives on and off, interleaved, median time.
Then, in the same run, a few more stage-1.5 steps under `torch.profiler`, which reads the time spent in Croc's own
profiler regions (`modeling_croc.profiling`): masking, matching costs, assignment, mixed-attention mask building,
VTR head (forward) and VTR loss (forward).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` per mode; on the CPU the peak resident set of a fresh
process per mode (`resource.getrusage`), minus its resident set before the first step.

    python -m benchmarks.bench_step [--device cpu|cuda] [--quick] [--model small|1b] [--dtype float32|bfloat16]
                                    [--out benchmarks/results/step.json]

`--model 1b` is the 1B-class model of `croc_testing.tiny.ONE_B_SIZES` (TinyLlama-1.1B LM, CLIP ViT-L/14-336 tower),
meant for a GPU in bf16 (`benchmarks/gpu_check.sh` runs it so).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.harness import sync
from modeling_croc.constants import IGNORE_INDEX

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "step.json"
PIECES = ("masking", "costs", "assignment", "mask building", "VTR head", "VTR loss")


def model_spec(quick: bool, size: str = "small") -> dict:
    """The benchmark model: LLaVA's vocabulary and image geometry, a small LM and tower (or the 1B-class one)."""
    if size == "1b":
        from croc_testing.tiny import LLAVA_VOCAB, ONE_B_SIZES

        return {"vocab_size": LLAVA_VOCAB["vocab_size"], **ONE_B_SIZES, "prompt_pool_size": 2048}
    return {
        "vocab_size": 32002, "hidden_size": 128 if quick else 256, "num_layers": 1 if quick else 2,
        "num_heads": 8, "vision_hidden_size": 128, "vision_layers": 2, "image_size": 336, "patch_size": 14,
        "prompt_pool_size": 2048,
    }


def build(spec: dict, preset: str, device: torch.device, dtype: torch.dtype = torch.float32, attn: str = "sdpa"):
    from croc_testing.tiny import tiny_croc_config
    from modeling_croc import CrocForConditionalGeneration

    torch.manual_seed(0)
    config = tiny_croc_config(**spec, croc_preset=preset, croc_pretraining=True, attn_implementation=attn)
    with torch.device(device):  # a 1B-class model is initialised where it runs, not on the host first
        model = CrocForConditionalGeneration(config).to(dtype).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    return model, optimizer


def make_batch(config, batch: int, text_tokens: int, device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    """`batch` samples: BOS, 576 image tokens, then `text_tokens` of text whose second half is supervised."""
    generator = torch.Generator().manual_seed(1)
    image_tokens = config.image_seq_length
    length = 1 + image_tokens + text_tokens
    input_ids = torch.randint(3, 31000, (batch, length), generator=generator)
    input_ids[:, 0] = 1
    input_ids[:, 1:1 + image_tokens] = config.image_token_id
    labels = input_ids.clone()
    labels[:, : length - text_tokens // 2] = IGNORE_INDEX
    size = config.vision_config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).to(dtype)
    return {name: tensor.to(device) for name, tensor in {
        "input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values}.items()}


def train_step(model, optimizer, batch: dict, croc: bool, step: int, device: torch.device) -> float:
    """One optimiser step; seconds, device work included."""
    sync(device)
    start = time.perf_counter()
    output = model(**batch, croc_objectives=croc, croc_generator=torch.Generator().manual_seed(step))
    output.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def piece_times_ms(model, optimizer, inputs, device: torch.device, steps: int, first_step: int) -> dict[str, float]:
    """Mean time per step inside each of Croc's profiler regions (`modeling_croc.profiling.CROC_REGIONS`), read from
    `torch.profiler` over `steps` stage-1.5 training steps. The model is not touched: the regions are its own."""
    from torch.profiler import ProfilerActivity, profile

    from modeling_croc.profiling import CROC_REGIONS

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for step in range(steps):
            train_step(model, optimizer, inputs, True, first_step + step, device)
    events = {event.key: event for event in prof.key_averages()}
    times = {}
    for piece in PIECES:
        event = events.get(CROC_REGIONS[piece])
        if event is None:
            continue
        # A region's CPU time is its wall time on the host; on CUDA its kernels' time is what the step waits for.
        total_us = event.device_time_total if device.type == "cuda" else event.cpu_time_total
        times[piece] = total_us / steps / 1e3
    return times


def _memory_worker(spec: dict, preset: str, croc: bool, batch: int, text: int, steps: int, dtype, queue,
                   attn: str = "sdpa") -> None:
    torch.set_num_threads(torch.get_num_threads())
    device = torch.device("cpu")
    model, optimizer = build(spec, preset, device, dtype, attn)
    inputs = make_batch(model.config, batch, text, device, dtype)
    with open("/proc/self/statm") as statm:
        before_kib = int(statm.read().split()[1]) * resource.getpagesize() // 1024
    for step in range(steps):
        train_step(model, optimizer, inputs, croc, step, device)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((peak_kib / 1024, (peak_kib - before_kib) / 1024))


def peak_memory_mib(spec, preset, croc, batch, text, steps, device, model=None, optimizer=None, inputs=None,
                    dtype=torch.float32, attn: str = "sdpa"):
    """(peak MiB, MiB above the pre-step level) of `steps` training steps in one mode."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for step in range(steps):
            train_step(model, optimizer, inputs, croc, step, device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak / 2**20, (peak - before) / 2**20
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_worker, args=(spec, preset, croc, batch, text, steps, dtype, queue,
                                                           attn))
    process.start()
    result = queue.get()
    process.join()
    return result


def bench_preset(preset: str, spec: dict, args, device: torch.device) -> tuple[dict, dict]:
    dtype = getattr(torch, args.dtype)
    model, optimizer = build(spec, preset, device, dtype, args.attn)
    inputs = make_batch(model.config, args.batch, args.text_tokens, device, dtype)
    for step in range(args.warmup):
        for croc in (True, False):
            train_step(model, optimizer, inputs, croc, step, device)
    times = {True: [], False: []}
    for step in range(args.repeats):  # interleaved, so machine noise hits both modes alike
        for croc in (True, False):
            times[croc].append(train_step(model, optimizer, inputs, croc, 100 + step, device))
    pieces = piece_times_ms(model, optimizer, inputs, device, args.breakdown_steps, first_step=200)
    on, off = (statistics.median(times[mode]) * 1e3 for mode in (True, False))
    memory = {croc: peak_memory_mib(spec, preset, croc, args.batch, args.text_tokens, args.memory_steps, device,
                                    model, optimizer, inputs, dtype, args.attn) for croc in (True, False)}
    row = {"preset": preset, "attention": args.attn, "matching": model.config.token_matching,
           "stage 1.5 step (ms)": on, "stage 2 step (ms)": off, "overhead ratio": on / off,
           "peak 1.5 (MiB)": memory[True][0], "peak 2 (MiB)": memory[False][0],
           "step mem 1.5 (MiB)": memory[True][1], "step mem 2 (MiB)": memory[False][1]}
    breakdown = {"preset": preset, "step (ms)": on}
    for piece in PIECES:
        breakdown[f"{piece} (ms)"] = pieces.get(piece)
    croc_total = sum(v for k, v in breakdown.items() if k.endswith("(ms)") and k != "step (ms)" and v)
    breakdown["pieces / step"] = croc_total / on
    return row, breakdown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="smaller LM, fewer repetitions")
    parser.add_argument("--model", default="small", choices=["small", "1b"],
                        help="small: the CPU model; 1b: croc_testing.tiny.ONE_B_SIZES (for a GPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "croc_split"],
                        help="attention of both stages: sdpa (stage 1.5 with its 4D mixed mask, stage 2 sdpa's causal "
                        "kernel) or croc_split (query segments in both; modeling_croc.split_attention)")
    parser.add_argument("--presets", nargs="+", default=["paper", "official"], choices=["paper", "official"])
    parser.add_argument("--batch", type=int, default=4, help="samples (= images) per step")
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens per sample after the image")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per mode (default 5, quick 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--breakdown-steps", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device visible", file=sys.stderr)
        return 1
    args.repeats = args.repeats or (3 if args.quick else 5)
    device = torch.device(args.device)
    spec = model_spec(args.quick, args.model)
    rows, breakdowns = [], []
    for preset in args.presets:
        row, breakdown = bench_preset(preset, spec, args, device)
        rows.append(row)
        breakdowns.append(breakdown)
    result = {
        "title": "Croc overhead: stage-1.5 step / stage-2 step (same model, same batch)",
        "goal": "Cost of the Croc objectives (masking, matching, mixed attention, VTR) per training step.",
        "rows": rows,
        "tables": [{"title": "Where the stage-1.5 extra time goes (per step, timed inside real steps)",
                    "rows": breakdowns,
                    "notes": ["Forward-pass pieces only; their backward is part of the step's backward."]}],
        "notes": [
            f"device {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}; model: "
            + ", ".join(f"{k}={v}" for k, v in spec.items())
            + f"; batch {args.batch} samples x (1 + 576 image + {args.text_tokens} text) tokens; AdamW step included",
            f"median of {args.repeats} interleaved steps per mode after {args.warmup} warm-up step(s)",
            "peak memory: CUDA max_memory_allocated per mode; on CPU the peak RSS of a fresh process per mode and "
            "its rise above the pre-step RSS (allocator caching makes the CPU numbers approximate)",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    from benchmarks.rendering import render_result

    print(render_result(result, "step"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
