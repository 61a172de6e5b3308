"""Mixed attention benchmark: what Croc's stage-1.5 mask costs over plain causal attention, and what building it costs.

(a) Forward+backward of a Llama language model (a `LlamaModel` built in code, random weights, `inputs_embeds`
    in, mean-square of the last hidden state as the loss) at 1K/2K/4K/8K tokens, batch 1, one 576-token image
    starting at position 35 (the LLaVA-1.5 `vicuna_v1` layout), for each attention backend and three masks:

    * mixed: `bidirectional_block_ids("image", ...)` + `build_mixed_attention_mask` (built inside the timed step);
    * causal (default): the 2D all-ones mask handed to the model, so transformers builds its default mask; for
      sdpa without padding that is *no* mask and the `is_causal` kernel path;
    * causal (materialised): `create_causal_mask(..., allow_is_causal_skip=False)`, the same 4D mask format as
      the mixed one with the bidirectional blocks left out (built inside the timed step).

    The three are timed in the same process, interleaved (the order rotates every repetition), and the ratios
    are ratios of medians. Peak memory is measured separately, once per configuration: on CPU as the peak RSS
    increase (`VmHWM` after resetting it through `/proc/self/clear_refs`, minus `VmRSS` before the step) of a
    forked child process running one step with one thread; on CUDA as `torch.cuda.max_memory_allocated` minus
    the memory allocated before the step.

(b) Mask building: ours (`bidirectional_block_ids` + `build_mixed_attention_mask`, spans "image" and "prompt",
    sdpa bool and eager float formats) against a reference written here from METHOD.md's description of the
    released code: a dense float B x 1 x L x L mask (vectorised causal + padding base, as transformers 4.37
    builds it) whose bidirectional block is then opened with Python loops, per token (one row slice per query
    token) and per element (one scalar write per query/key pair). Before timing, the benchmark asserts that
    ours and both references allow exactly the same (query, key) pairs on a small padded batch.

    python -m benchmarks.bench_attention [--device cpu|cuda] [--quick] [--tiny] [--out FILE]

Prints Markdown tables and writes JSON (default benchmarks/results/attention.json) in the runner's convention:
`{"title", "goal", "rows", "notes"}` for table (a), plus `"tables"` (table (b)) and the raw settings.

This file holds the questions; the profiles and inputs are in `attention_setup`, the loop references in
`attention_references`, the timing harness in `harness`, the peak-memory probes in `memory_probe` and the
report's notes and JSON in `attention_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaModel
from transformers.masking_utils import create_causal_mask

from benchmarks.attention_references import reference_blocks, reference_loop_mask
from benchmarks.attention_report import build_result, machine_summary
from benchmarks.attention_setup import (
    IGNORE_INDEX,
    Profile,
    llava_layout,
    mask_config,
    ours_mask,
    select_profile,
)
from benchmarks.harness import count_python_calls, median_ms, ratio, sync, time_interleaved
from benchmarks.memory_probe import cpu_peak_rss_mb, cuda_peak_mb
from modeling_croc.attention_mask import bidirectional_block_ids
from modeling_croc.split_attention import (
    SEGMENTS_KEY,
    SPLIT_ATTENTION,
    build_attention_segments,
    mask_placeholder,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "attention.json"
VARIANTS = ("mixed", "causal_default", "causal_materialised")


# --------------------------------------------------------------------------------------------------------------
# Equivalence: ours vs the loop references, checked before anything is timed
# --------------------------------------------------------------------------------------------------------------


def check_mask_equivalence(length: int = 96) -> dict[str, Any]:
    """Ours (sdpa bool, eager float) and both loop references must allow exactly the same (query, key) pairs.

    Batch of 2 at `length` tokens: row 0 has two images (two separate blocks for span "image"); row 1 has one
    image and 10 tokens of right padding. Raises AssertionError on any difference.
    """
    batch = 2
    image_token_mask = torch.zeros(batch, length, dtype=torch.bool)
    image_token_mask[0, 5:21] = True
    image_token_mask[0, 30:42] = True
    image_token_mask[1, 7:23] = True
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    labels[0, 50:] = 1
    labels[1, 35 : length - 10] = 1
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, length - 10 :] = 0
    layout = {"image_token_mask": image_token_mask, "labels": labels, "attention_mask": attention_mask}
    embeds = torch.zeros(batch, length, 8)
    checked = []
    for span in ("image", "prompt"):
        references = {
            f"loop_{kind}": reference_loop_mask(
                span, image_token_mask, labels, attention_mask, per_element=kind == "element"
            )[0]
            == 0
            for kind in ("element", "token")
        }
        ours = {
            "sdpa": ours_mask(mask_config("sdpa"), embeds, layout, span),
            "eager": ours_mask(mask_config("eager"), embeds, layout, span) == 0,
        }
        for name, allowed in {**ours, **references}.items():
            assert allowed.dtype == torch.bool and allowed.shape == (batch, 1, length, length), (span, name)
        base = references["loop_element"]
        for name, allowed in {**ours, "loop_token": references["loop_token"]}.items():
            differing = int((allowed != base).sum())
            assert differing == 0, (
                f"span {span!r}: {name} differs from the loop reference at {differing} pairs"
            )
            checked.append(f"{span}/{name}")
        # The mixed pattern must differ from plain causal, or the check would be vacuous.
        assert bool((base & ~torch.ones(length, length, dtype=torch.bool).tril()).any()), span
    return {"held": True, "length": length, "batch": batch, "compared_to_loop_element": checked}


# --------------------------------------------------------------------------------------------------------------
# (a) Forward + backward
# --------------------------------------------------------------------------------------------------------------


def _llama(profile: Profile, backend: str, device: torch.device) -> LlamaModel:
    """Same random weights for every backend (same seed), so only the attention path differs."""
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=profile.hidden,
        intermediate_size=profile.intermediate,
        num_hidden_layers=profile.layers,
        num_attention_heads=profile.heads,
        num_key_value_heads=4 if profile.name == "cuda-1b" else profile.heads,
        max_position_embeddings=max(profile.lengths),
        attention_dropout=0.0,
    )
    config._attn_implementation = backend
    torch.manual_seed(0)
    model = LlamaModel(config).to(device=device, dtype=getattr(torch, profile.dtype))
    return model.train()


def _step_fn(
    model: LlamaModel, variant: str, embeds: torch.Tensor, layout: dict[str, torch.Tensor]
) -> Callable[[], float]:
    """One training step's forward+backward with the mask of `variant`, mask building included.

    Returns the seconds spent building the 4D mask before the model call (0 for the default variants, whose
    mask, if any, transformers builds inside the forward).
    """
    config = model.config
    device = embeds.device

    def step() -> float:
        start = time.perf_counter()
        extra = {}
        if variant == "mixed" and config._attn_implementation == SPLIT_ATTENTION:
            # No mask: the query segments (built inside the timed step, like the masks of the other backends).
            block_ids = bidirectional_block_ids("image", layout["image_token_mask"], layout["labels"],
                                                layout["attention_mask"])
            extra[SEGMENTS_KEY] = build_attention_segments(embeds.shape[:2], block_ids, layout["attention_mask"])
            mask = mask_placeholder(embeds.shape[0], device)
        elif variant == "mixed":
            mask = ours_mask(config, embeds, layout, "image")
        elif variant == "causal_materialised":
            mask = create_causal_mask(
                config, embeds, layout["attention_mask"], None, allow_is_causal_skip=False
            )
        else:  # causal_default / causal_fa2: the 2D mask, transformers decides
            mask = layout["attention_mask"]
        sync(device)
        build = time.perf_counter() - start
        hidden = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **extra).last_hidden_state
        hidden.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        return build

    return step


def bench_forward_backward(
    profile: Profile,
    device: torch.device,
    measure_memory: bool,
    log: Callable[[str], None],
    backends: Sequence[str] = ("eager", "sdpa", "flex_attention", SPLIT_ATTENTION),
) -> list[dict[str, Any]]:
    """Table (a) rows: one per backend and length."""
    rows: list[dict[str, Any]] = []
    has_fa2 = device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
    for backend in backends:
        if backend == "flex_attention" and device.type != "cuda":
            rows.append(
                _empty_row(
                    backend, None, "n/a: no CPU backward (FlexAttention does not support backward on CPU)"
                )
            )
            continue
        try:
            model = _llama(profile, backend, device)
            fa2_model = None
            if backend == "flex_attention" and has_fa2:
                fa2_model = _llama(profile, "flash_attention_2", device)
        except Exception as error:  # a backend that cannot be set up is reported, not fatal
            rows.append(_empty_row(backend, None, f"n/a: {type(error).__name__}: {error}"))
            continue
        for index, length in enumerate(profile.lengths):
            if backend == "eager" and length > profile.eager_max_len:
                rows.append(
                    _empty_row(
                        backend,
                        length,
                        f"skipped: eager above {profile.eager_max_len} tokens "
                        "(L x L probabilities per head and layer: memory/time budget)",
                    )
                )
                continue
            layout = llava_layout(length, profile.image_tokens, device=device)
            torch.manual_seed(length)
            embeds = torch.randn(1, length, profile.hidden, device=device, dtype=model.dtype)
            fns = {variant: _step_fn(model, variant, embeds, layout) for variant in VARIANTS}
            if fa2_model is not None:
                fns["causal_fa2"] = _step_fn(fa2_model, "causal_fa2", embeds, layout)
            reps = profile.reps[length]
            try:
                # CPU: one warm-up round at the first length (kernel and allocator set-up); longer lengths reuse
                # it, and at 4K-8K a warm-up round would cost as much as the measurement. CUDA: every length, as
                # flex_attention compiles per shape and the round costs milliseconds there.
                warmup = 1 if index == 0 or device.type == "cuda" else 0
                times, builds = time_interleaved(fns, reps=reps, warmup=warmup, device=device)
            except Exception as error:
                rows.append(_empty_row(backend, length, f"failed: {type(error).__name__}: {error}"))
                continue
            memory: dict[str, float | None] = {}
            if measure_memory and device.type == "cuda":
                memory = {variant: cuda_peak_mb(fn, device) for variant, fn in fns.items()}
            elif measure_memory:
                # All variants at once: 2-3 one-thread children on 2 cores only share CPU time, not memory.
                memory = cpu_peak_rss_mb(fns, jobs=len(fns))
            medians = {variant: median_ms(values) for variant, values in times.items()}
            # The model proper without the masks' builds: what the mixed pattern costs inside attention,
            # independent of how many layers share the one mask built per step (32 in Vicuna-7B).
            model_ms = {
                variant: statistics.median(
                    total - build for total, build in zip(times[variant], builds[variant], strict=True)
                )
                * 1e3
                for variant in ("mixed", "causal_materialised")
            }
            row = {
                "backend": backend,
                "tokens": length,
                "mixed_ms": medians["mixed"],
                "causal_default_ms": medians["causal_default"],
                "causal_materialised_ms": medians["causal_materialised"],
                "ratio_vs_default": ratio(medians["mixed"], medians["causal_default"]),
                "ratio_vs_materialised": ratio(medians["mixed"], medians["causal_materialised"]),
                "ratio_vs_default_excl_build": ratio(model_ms["mixed"], medians["causal_default"]),
                "ratio_vs_materialised_excl_build": ratio(model_ms["mixed"], model_ms["causal_materialised"]),
                "mixed_build_ms": median_ms(builds["mixed"]),
                "materialised_build_ms": median_ms(builds["causal_materialised"]),
                "mixed_peak_mb": memory.get("mixed"),
                "causal_default_peak_mb": memory.get("causal_default"),
                "causal_materialised_peak_mb": memory.get("causal_materialised"),
                "reps": reps,
                "note": "" if not measure_memory or None not in memory.values() else "memory: a child failed",
            }
            if "causal_fa2" in medians:
                row["causal_fa2_ms"] = medians["causal_fa2"]
                row["ratio_vs_fa2"] = ratio(medians["mixed"], medians["causal_fa2"])
                row["causal_fa2_peak_mb"] = memory.get("causal_fa2")
            rows.append(row)
            log(
                f"  {backend:>14} {length:>5}: mixed {row['mixed_ms']:.0f} ms, causal default "
                f"{row['causal_default_ms']:.0f} ms, materialised {row['causal_materialised_ms']:.0f} ms "
                f"(x{row['ratio_vs_default']:.2f} / x{row['ratio_vs_materialised']:.2f})"
            )
        log(f"  {backend} done")
        del model, fa2_model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    add_ratio_to_sdpa_is_causal(rows)
    return rows


def add_ratio_to_sdpa_is_causal(rows: list[dict[str, Any]]) -> None:
    """On the flex_attention rows, mixed over sdpa's default causal path at the same length: stage 1.5 on flex
    against plain causal training on sdpa's `is_causal` kernel (FlashAttention in bf16 on a GPU)."""
    sdpa_causal = {row["tokens"]: row["causal_default_ms"] for row in rows if row["backend"] == "sdpa"}
    for row in rows:
        if row["backend"] in ("flex_attention", SPLIT_ATTENTION) and row["mixed_ms"] is not None:
            row["ratio_vs_sdpa_is_causal"] = ratio(row["mixed_ms"], sdpa_causal.get(row["tokens"]))


def _empty_row(backend: str, length: int | None, note: str) -> dict[str, Any]:
    return {
        "backend": backend,
        "tokens": length,
        "mixed_ms": None,
        "causal_default_ms": None,
        "causal_materialised_ms": None,
        "ratio_vs_default": None,
        "ratio_vs_materialised": None,
        "ratio_vs_default_excl_build": None,
        "ratio_vs_materialised_excl_build": None,
        "mixed_build_ms": None,
        "materialised_build_ms": None,
        "mixed_peak_mb": None,
        "causal_default_peak_mb": None,
        "causal_materialised_peak_mb": None,
        "reps": 0,
        "note": note,
    }


# --------------------------------------------------------------------------------------------------------------
# (b) Mask building
# --------------------------------------------------------------------------------------------------------------


def _reference_on(
    device: torch.device, span: str, layout: dict[str, torch.Tensor], per_element: bool
) -> torch.Tensor:
    return reference_loop_mask(span, **layout, per_element=per_element)[0].to(device)


def bench_mask_building(
    profile: Profile, device: torch.device, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Table (b) rows: one per length and span."""
    rows: list[dict[str, Any]] = []
    configs = {backend: mask_config(backend) for backend in ("sdpa", "eager")}
    for length in profile.lengths:
        layout = llava_layout(length, profile.image_tokens, device=device)
        cpu_layout = {key: value.cpu() for key, value in layout.items()}
        embeds = torch.zeros(1, length, 8, device=device, dtype=torch.float32)
        with_element = length <= profile.element_loop_max_len
        for span_index, span in enumerate(("image", "prompt")):
            fns: dict[str, Callable[[], object]] = {
                f"ours_{fmt}": partial(ours_mask, configs[fmt], embeds, layout, span) for fmt in configs
            }
            # The reference builds on the CPU with Python loops, as the released code does; on a GPU the copy of
            # its mask to the device is part of its cost.
            fns["loop_token"] = partial(_reference_on, device, span, cpu_layout, False)
            if with_element:
                fns["loop_element"] = partial(_reference_on, device, span, cpu_layout, True)
            if length == profile.lengths[0] and span_index == 0:
                for name in (
                    "ours_sdpa",
                    "ours_eager",
                    "loop_token",
                ):  # first use; the element loop is seconds
                    fns[name]()
            # The element loop takes seconds per call: two repetitions where it is timed.
            reps = min(profile.reps[length], 2) if with_element else profile.reps[length]
            times, _ = time_interleaved(fns, reps=reps, warmup=0, device=device)
            medians = {name: median_ms(values) for name, values in times.items()}
            block_tokens = sum(
                len(block) for row_blocks in reference_blocks(span, **cpu_layout) for block in row_blocks
            )
            row = {
                "tokens": length,
                "span": span,
                "block_tokens": block_tokens,
                "ours_sdpa_ms": medians["ours_sdpa"],
                "ours_eager_ms": medians["ours_eager"],
                "loop_token_ms": medians["loop_token"],
                "loop_element_ms": medians.get("loop_element"),
                "element_over_ours_eager": ratio(medians.get("loop_element"), medians["ours_eager"]),
                "token_over_ours_eager": ratio(medians["loop_token"], medians["ours_eager"]),
                "ours_python_calls": count_python_calls(fns["ours_eager"]),
                "loop_element_iterations": block_tokens**2 if with_element else None,
                "reps": len(times["ours_sdpa"]),
                "note": ""
                if with_element
                else f"element loop not timed above {profile.element_loop_max_len} tokens",
            }
            rows.append(row)
            element = "n/a" if row["loop_element_ms"] is None else f"{row['loop_element_ms']:.0f} ms"
            log(
                f"  mask {length:>5} {span:>6}: ours sdpa {row['ours_sdpa_ms']:.2f} ms, eager "
                f"{row['ours_eager_ms']:.2f} ms; loop/token {row['loop_token_ms']:.1f} ms, loop/element {element}"
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run both tables and write the JSON; takes `argv` so that the runner and the tests can call it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--quick", action="store_true", help="1K and 2K tokens only, fewer repetitions")
    parser.add_argument(
        "--tiny", action="store_true", help="2-layer width-64 model, 256/512 tokens (smoke test)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1 on CPU, see notes)"
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="token lengths (default: profile's)")
    parser.add_argument("--backends", nargs="+", default=["eager", "sdpa", "flex_attention", SPLIT_ATTENTION],
                        choices=["eager", "sdpa", "flex_attention", SPLIT_ATTENTION],
                        help="attention backends of table (a)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant (default: profile's)")
    parser.add_argument("--no-mask-building", action="store_true", help="skip table (b), the mask-building timings")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    profile = select_profile(device, args.quick, args.tiny, args.threads)
    if args.lengths or args.reps:
        lengths = tuple(args.lengths or profile.lengths)
        fallback = min(profile.reps.values())
        reps = {n: args.reps or profile.reps.get(n, fallback) for n in lengths}
        profile = dataclasses.replace(profile, lengths=lengths, reps=reps)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    # Apples to apples: refuse to time anything unless ours and the loop reference agree on the pattern.
    equivalence = check_mask_equivalence()
    log(f"mask equivalence held on {equivalence['batch']}x{equivalence['length']} ({profile.name} profile)")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    try:
        mask_rows = [] if args.no_mask_building else bench_mask_building(profile, device, log)
        log(f"mask building done at {time.perf_counter() - started:.0f} s")
        step_rows = bench_forward_backward(profile, device, measure_memory=not args.no_memory, log=log,
                                           backends=args.backends)
        machine = machine_summary(device)
    finally:
        torch.set_num_threads(previous_threads)  # the runner and the tests go on in this process
    elapsed = time.perf_counter() - started

    result = build_result(
        profile=profile,
        device=device,
        step_rows=step_rows,
        mask_rows=mask_rows,
        equivalence=equivalence,
        quick=args.quick,
        tiny=args.tiny,
        elapsed=elapsed,
        machine=machine,
    )
    from benchmarks.rendering import render_result

    print(render_result(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
