"""Packing against padding, on rows drawn from the length distributions of the three stages' mixtures.

Two questions, side by side in one run:

(a) Padding avoided. For each stage, 20,000 rows are drawn from the stage's mixture (below), ordered by the
    trainer's `ModalityGroupedSampler` at the stage YAML's per-device batch on 8 processes, and every micro-batch is
    laid out padded and packed by `trainer.collator` (first-fit, the same budgets the trainer offers): tokens the
    model processes per real token, padding share, rows per micro-batch, and the attention work relative to the
    padded batch, for a kernel that computes every query-key pair of a row (sdpa / eager with a mask) and for one
    that skips the pairs across samples (flex_attention's BlockMask, FlashAttention varlen).

(b) Step time per real token. A few micro-batches of the same mixtures run as training steps (forward, backward,
    AdamW) of a small Croc model, padded and packed, interleaved in one process (`benchmarks.harness`); the stage's
    trainable parts and objectives are the trainer's (`trainer.stages`). On CUDA the 1B-class model of
    `croc_testing.tiny.ONE_B_SIZES` in bf16, at the YAML's per-device batch, and packed with a fixed budget also on
    flex_attention.

Where the row lengths come from: each stage's mixture is a list of sources with a row count and a text-length
distribution (lognormal, mean and coefficient of variation in tokens), plus the template's own tokens, measured by
rendering a row with `CrocSupervisedDataset` and the offline Llama tokenizer, and 576 image tokens for image rows.
The row counts are published (the recipes' catalog for stage 1.5, the LLaVA-1.5 paper's data table for mix665K).
Of the lengths only the ShareGPT4V caption mean is published (826 characters per caption in the ShareGPT4V paper's
table of caption datasets, converted to tokens at the characters per token the tokenizer gives a caption-style
paragraph in this file); every other mean and every spread is an assumption from the sources' formats, stated in
the length-model table of the output. The conclusions depend on them: with a real build, measure its lengths.

    python -m benchmarks.bench_packing [--device cpu|cuda] [--quick] [--tiny] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_step import train_step
from benchmarks.harness import median_ms, time_interleaved
from benchmarks.memory_probe import malloc_trim
from modeling_croc.constants import IGNORE_INDEX, IMAGE_TOKEN
from trainer.collator import CrocDataCollator, first_fit
from trainer.sampler import ModalityGroupedSampler
from trainer.stages import get_stage, parameter_group

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "packing.json"
CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"
IMAGE_TOKENS = 576  # CLIP ViT-L/14 at 336 px, the class token dropped
PROCESSES = 8  # the stage YAMLs' 8 GPUs
# (budget label, packing_max_length) as the trainer takes it: None = the micro-batch's longest sample, "max" = the
# stage's model_max_length, 0 = the whole micro-batch in one row.
BUDGETS = (("longest sample", None), ("model_max_length", "max"), ("one row", 0))
# A caption-style English paragraph, to measure characters per token for the published ShareGPT4V caption length.
CAPTION_SAMPLE = (
    "The image shows a busy street market on a sunny afternoon. In the foreground, a wooden stall is covered with "
    "crates of red apples, yellow bananas and green pears, and a hand-written price sign leans against the crates. "
    "A woman in a blue jacket is holding a paper bag while talking to the vendor, an older man wearing a white apron "
    "and a straw hat. Behind them, several people walk past colourful awnings, and a bicycle is parked next to a "
    "lamp post on the right. The buildings in the background have tall windows and balconies with potted plants, "
    "and the sky above is clear with a few thin clouds."
)


@dataclass(frozen=True)
class LengthSource:
    """One source of a stage's mixture: rows, modality and the tokens of its text (template excluded)."""

    name: str
    rows: int
    image: bool
    mean_tokens: float | None  # None: from `mean_chars` at the measured characters per token
    spread: float  # coefficient of variation of the lognormal
    origin: str
    mean_chars: float | None = None


def _stage_mixtures() -> dict[str, tuple[LengthSource, ...]]:
    from data_recipes.catalog import CROC_1_5M_COUNTS

    assumed_text = {  # stage-1.5 text sets: (mean tokens, spread, format) -- all assumed
        "mathinstruct": (250, 0.8, "chain/program-of-thought solutions"),
        "alpaca": (110, 0.7, "short instructions and answers"),
        "belle": (200, 0.8, "Chinese instructions (about a token per character)"),
        "open_platypus": (320, 0.8, "STEM and logic answers"),
        "code_alpaca": (130, 0.7, "short code answers"),
        "firefly": (180, 0.8, "Chinese task prompts"),
        "webqa": (120, 0.6, "question + passage answers"),
        "dolly": (200, 0.9, "open QA, brainstorming, summaries"),
    }
    stage_1_5 = [LengthSource("ShareGPT4V-PT captions", CROC_1_5M_COUNTS["sharegpt4v"], True, None, 0.35,
                              "mean 826 characters (ShareGPT4V paper, ShareGPT4V-PT); spread assumed",
                              mean_chars=826)]
    stage_1_5 += [LengthSource(name, CROC_1_5M_COUNTS[name], False, mean, spread, f"assumed: {what}")
                  for name, (mean, spread, what) in assumed_text.items()]
    # mix665K: row counts from the LLaVA-1.5 paper's data table (they add up to the 665K rows of the file); the
    # academic VQA sets are merged per image into multi-turn rows with one-word answers. Lengths assumed.
    mix665k = (
        ("LLaVA-Instruct", 158_000, True, 260, 0.6, "GPT-4 conversations, detailed descriptions, reasoning"),
        ("ShareGPT", 40_000, False, 900, 0.9, "long multi-turn chats"),
        ("VQAv2", 83_000, True, 140, 0.5, "several short QA per image"),
        ("GQA", 72_000, True, 160, 0.5, "several short QA per image"),
        ("OKVQA", 9_000, True, 60, 0.4, "short QA"),
        ("OCRVQA", 80_000, True, 110, 0.4, "several short QA per image"),
        ("A-OKVQA", 66_000, True, 80, 0.4, "multiple choice"),
        ("TextCaps", 22_000, True, 40, 0.3, "one short caption"),
        ("RefCOCO", 48_000, True, 220, 0.6, "region QA with boxes, multi-turn"),
        ("VG", 86_000, True, 240, 0.6, "region descriptions, multi-turn"),
    )
    return {
        "1": (LengthSource("LCS-558K BLIP captions", 558_128, True, 13, 0.4,
                           "assumed: one short BLIP sentence (about 10 words)"),),
        "1.5": tuple(stage_1_5),
        "2": tuple(LengthSource(name, rows, image, mean, spread, f"rows: LLaVA-1.5 paper; length assumed: {what}")
                   for name, rows, image, mean, spread, what in mix665k),
    }


@dataclass(frozen=True)
class StageSetting:
    """What the stage YAML says about batching, and the template tokens of a row."""

    stage: str
    per_device: int
    accumulation: int
    model_max_length: int
    template: str
    overhead: int  # tokens of a row besides its image and its text (BOS, system prompt, roles, EOS)
    image_offset: int  # tokens before the image in an image row


def _yaml(stage: str) -> dict[str, Any]:
    import yaml

    name = {"1": "stage1.yaml", "1.5": "stage1_5.yaml", "2": "stage2.yaml"}[stage]
    return yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))


def measure_template(template: str, question: str) -> tuple[int, int, float]:
    """(template tokens of an image row, tokens before its image, characters per token of CAPTION_SAMPLE), by
    rendering a row with `CrocSupervisedDataset` and the offline Llama tokenizer."""
    import tempfile

    from PIL import Image

    from croc_testing.tiny import tiny_croc_processor
    from trainer.data import CrocSupervisedDataset

    processor = tiny_croc_processor()
    tokenizer = processor.tokenizer
    answer = "Yes."
    with tempfile.TemporaryDirectory() as folder:
        Image.new("RGB", (56, 56)).save(Path(folder) / "image.png")
        row = {"id": "measure", "image": "image.png", "source": "bench", "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": answer}]}
        sample = CrocSupervisedDataset([row], processor, template, image_root=folder, model_max_length=4096)[0]
    is_image = sample["input_ids"] == processor.image_token_id
    answer_tokens = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    overhead = len(sample["input_ids"]) - int(is_image.sum()) - answer_tokens
    image_offset = int(is_image.nonzero()[0, 0])
    chars_per_token = len(CAPTION_SAMPLE) / len(tokenizer(CAPTION_SAMPLE, add_special_tokens=False)["input_ids"])
    return overhead, image_offset, chars_per_token


@functools.cache
def stage_setting(stage: str) -> tuple[StageSetting, float]:
    """The stage's batching and template tokens, and the measured characters per token."""
    from data_recipes.recipes.croc1_5m import DEFAULT_CAPTION_INSTRUCTION

    config = _yaml(stage)
    spec = get_stage(stage)
    per_device = int(config["per_device_train_batch_size"])
    accumulation = int(config["global_batch_size"]) // (per_device * PROCESSES)
    # Stage 1.5's question is the recipe's caption instruction; in stage 2 the questions are in the text lengths.
    question = DEFAULT_CAPTION_INSTRUCTION if stage == "1.5" else ""
    overhead, image_offset, chars_per_token = measure_template(spec.template, question)
    return StageSetting(stage, per_device, accumulation, int(config["model_max_length"]), spec.template, overhead,
                        image_offset), chars_per_token


def draw_rows(stage: str, setting: StageSetting, chars_per_token: float, count: int, seed: int):
    """`count` rows of the stage's mixture: (token lengths, image flags), and the length-model table rows."""
    sources = _stage_mixtures()[stage]
    rng = np.random.default_rng([seed, int(float(stage) * 10)])
    shares = np.array([source.rows for source in sources], dtype=float)
    picks = rng.choice(len(sources), size=count, p=shares / shares.sum())
    lengths = np.empty(count, dtype=np.int64)
    images = np.zeros(count, dtype=bool)
    table = []
    for index, source in enumerate(sources):
        mean = source.mean_tokens if source.mean_tokens is not None else source.mean_chars / chars_per_token
        sigma = math.sqrt(math.log1p(source.spread**2))
        chosen = picks == index
        text = np.maximum(1, np.round(rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, chosen.sum())))
        image = IMAGE_TOKENS if source.image else 0
        # The dataset cuts a row's text to fit model_max_length; image tokens are never cut.
        lengths[chosen] = np.minimum(setting.overhead + image + text, setting.model_max_length)
        images[chosen] = source.image
        table.append({"stage": stage, "source": source.name, "rows": source.rows, "image": source.image,
                      "mean text tokens": mean, "spread (CV)": source.spread, "origin": source.origin,
                      "drawn": int(chosen.sum()), "drawn mean row tokens": float(lengths[chosen].mean())
                      if chosen.any() else None})
    return lengths, images, table


def micro_batches(lengths: np.ndarray, images: np.ndarray, per_device: int, world: int, seed: int) -> list[list[int]]:
    """The micro-batches the trainer would form: the modality-grouped order over `world` device batches per step."""
    signed = np.where(images, lengths, -lengths)
    sampler = ModalityGroupedSampler(signed.tolist(), batch_size=per_device, world_size=world,
                                     generator=torch.Generator().manual_seed(seed))
    order = list(sampler)
    return [order[i:i + per_device] for i in range(0, len(order), per_device)]


def _budget(value, setting: StageSetting) -> int | None:
    return setting.model_max_length if value == "max" else value


def account(lengths: np.ndarray, batches: list[list[int]], setting: StageSetting) -> list[dict[str, Any]]:
    """Table (a): tokens processed, padding and attention work, padded and for each packing budget."""
    real = int(sum(lengths[i] for batch in batches for i in batch))
    pairs_real = sum(int(lengths[i]) ** 2 for batch in batches for i in batch)
    padded_tokens = sum(len(batch) * int(max(lengths[i] for i in batch)) for batch in batches)
    padded_pairs = sum(len(batch) * int(max(lengths[i] for i in batch)) ** 2 for batch in batches)
    rows = [{"stage": setting.stage, "layout": "padded", "micro-batch": setting.per_device,
             "rows / micro-batch": float(setting.per_device), "tokens / real token": padded_tokens / real,
             "padding share": 1 - real / padded_tokens, "padding avoided": 0.0,
             "dense attention vs padded": 1.0, "block-skipping attention vs padded": pairs_real / padded_pairs}]
    for label, value in BUDGETS:
        collator = CrocDataCollator(pad_token_id=0, packing=True, packing_max_length=_budget(value, setting))
        tokens = pairs = packed_rows = 0
        for batch in batches:
            sizes = [int(lengths[i]) for i in batch]
            packed = first_fit(sizes, collator.packing_budget(sizes))
            width = max(sum(sizes[i] for i in row) for row in packed)
            tokens += len(packed) * width
            pairs += len(packed) * width**2
            packed_rows += len(packed)
        rows.append({"stage": setting.stage, "layout": f"packed, budget: {label}", "micro-batch": setting.per_device,
                     "rows / micro-batch": packed_rows / len(batches), "tokens / real token": tokens / real,
                     "padding share": 1 - real / tokens, "padding avoided": 1 - tokens / padded_tokens,
                     "dense attention vs padded": pairs / padded_pairs,
                     "block-skipping attention vs padded": pairs_real / padded_pairs})
    return rows


# --------------------------------------------------------------------------------------------------------------
# (b) step time per real token
# --------------------------------------------------------------------------------------------------------------


def model_spec(device: torch.device, tiny: bool) -> dict[str, Any]:
    """CPU: a 2-layer width-256 LM with a 512-token vocabulary (so the LM head's share of the work stays near a 7B
    model's) behind a 1-layer width-64 tower at 336 px; CUDA: the 1B-class model. `tiny`: for the smoke test."""
    if device.type == "cuda" and not tiny:
        from croc_testing.tiny import LLAVA_VOCAB, ONE_B_SIZES

        return {"vocab_size": LLAVA_VOCAB["vocab_size"], **ONE_B_SIZES, "prompt_pool_size": 2048}
    if tiny:
        return {"vocab_size": 512, "hidden_size": 64, "num_layers": 1, "num_heads": 4, "vision_hidden_size": 32,
                "vision_layers": 1, "image_size": 56, "patch_size": 14, "prompt_pool_size": 64}
    return {"vocab_size": 512, "hidden_size": 256, "num_layers": 2, "num_heads": 8, "vision_hidden_size": 64,
            "vision_layers": 1, "image_size": 336, "patch_size": 14, "prompt_pool_size": 2048}


def build_model(spec: dict[str, Any], attn: str, device: torch.device, dtype: torch.dtype):
    from croc_testing.tiny import tiny_croc_config
    from modeling_croc import CrocForConditionalGeneration

    torch.manual_seed(0)
    config = tiny_croc_config(**spec, croc_preset="paper", croc_pretraining=True, attn_implementation=attn)
    with torch.device(device):
        return CrocForConditionalGeneration(config).to(dtype).train()


def set_stage(model, stage: str) -> torch.optim.Optimizer:
    """The stage's trainable parts (the trainer's groups), and a fresh AdamW over them."""
    parts = set(get_stage(stage).trainable_parts)
    for name, param in model.named_parameters():
        param.requires_grad_(parameter_group(name) in parts)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)


def features(lengths: Sequence[int], images: Sequence[bool], setting: StageSetting, config, seed: int) -> list[dict]:
    """Samples of these lengths in the dataset's layout: BOS and template tokens, the image where the template puts
    it, text; the text after the image (or the second half of a text row) supervised."""
    generator = torch.Generator().manual_seed(seed)
    image_tokens = config.image_seq_length
    size = config.vision_config.image_size
    out = []
    for length, image in zip(lengths, images):
        length = int(length) - (IMAGE_TOKENS - image_tokens if image else 0)  # a smaller tower's image (smoke test)
        ids = torch.randint(3, config.text_config.vocab_size - 2, (length,), generator=generator)
        ids[0] = 1
        labels = torch.full((length,), IGNORE_INDEX)
        if image:
            ids[setting.image_offset:setting.image_offset + image_tokens] = config.image_token_id
            first_target = setting.image_offset + image_tokens + 1
        else:
            first_target = max(1, length // 2)
        labels[first_target:] = ids[first_target:]
        pixels = torch.randn(3, size, size, generator=generator) if image else None
        out.append({"input_ids": ids, "labels": labels, "pixel_values": pixels})
    return out


def _to(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    return {key: value.to(device, dtype) if key == "pixel_values" else value.to(device) for key, value in batch.items()}


def time_stage(stage: str, setting: StageSetting, lengths, images, models: dict, args, device, dtype) -> list[dict]:
    """Table (b) rows: for each modality of the stage, its first micro-batch in the sampler's order as training
    steps, padded and packed, interleaved; then the stage's estimate, the modalities weighted by their real tokens."""
    batch_size = setting.per_device if device.type == "cuda" and not args.tiny else args.cpu_batch
    order = micro_batches(lengths, images, batch_size, PROCESSES, args.seed)
    config = next(iter(models.values())).config
    pad = config.text_config.pad_token_id
    third = ("packed, one row", "flex_attention", 0, "0 (one row)") if "flex_attention" in models else (
        "packed, fixed budget", "sdpa", setting.model_max_length, f"model_max_length = {setting.model_max_length}")
    layouts = {  # name: (attention backend, collator, budget as the trainer names it)
        "padded": ("sdpa", CrocDataCollator(pad_token_id=pad), "—"),
        "packed": ("sdpa", CrocDataCollator(pad_token_id=pad, packing=True), "longest sample (default)"),
        third[0]: (third[1], CrocDataCollator(pad_token_id=pad, packing=True, packing_max_length=third[2]), third[3]),
    }
    optimizers = {attn: set_stage(model, stage) for attn, model in models.items()}
    croc = get_stage(stage).croc_pretraining
    steps = iter(range(10**9))
    rows, per_modality = [], {}
    for modality, is_image in (("image rows", True), ("text rows", False)):
        batch = next((b for b in order if bool(images[b[0]]) == is_image), None)
        if batch is None:
            continue
        group = features(lengths[batch], images[batch], setting, config, args.seed)
        collated = {name: _to(collator(group), device, dtype) for name, (_, collator, _) in layouts.items()}

        def runner(name: str, batch: dict):
            attn = layouts[name][0]

            def run() -> None:
                train_step(models[attn], optimizers[attn], batch, croc, next(steps), device)
                # Every step starts from the same heap: otherwise the step after a long-row layout reuses the pages
                # that one left and runs faster than the same step after a short one (seen: same tensors, 0.66x).
                malloc_trim()
            return run

        times, _ = time_interleaved({name: runner(name, collated[name]) for name in layouts}, reps=args.reps,
                                    warmup=1, device=device)
        real = sum(len(sample["input_ids"]) for sample in group)
        medians = {name: median_ms(values) / real * 1000 for name, values in times.items()}
        per_modality[modality] = (int(lengths[images == is_image].sum()), medians)
        for name, (attn, _, budget) in layouts.items():
            shape = collated[name]["input_ids"].shape
            rows.append({"stage": stage, "micro-batch": f"{modality}, {len(batch)} samples", "layout": name,
                         "attention": attn, "budget": budget, "rows x width": f"{shape[0]}x{shape[1]}",
                         "tokens / real token": shape[0] * shape[1] / real,
                         "ms / 1K real tokens": medians[name], "time vs padded": medians[name] / medians["padded"]})
    total = sum(tokens for tokens, _ in per_modality.values())
    if len(per_modality) > 1:
        for name, (attn, _, budget) in layouts.items():
            estimate = sum(tokens / total * medians[name] for tokens, medians in per_modality.values())
            padded = sum(tokens / total * medians["padded"] for tokens, medians in per_modality.values())
            rows.append({"stage": stage, "micro-batch": "stage estimate (weighted by real tokens)", "layout": name,
                         "attention": attn, "budget": budget, "ms / 1K real tokens": estimate,
                         "time vs padded": estimate / padded})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--quick", action="store_true", help="fewer rows and repetitions")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few rows (smoke test)")
    parser.add_argument("--stages", nargs="+", default=["1", "1.5", "2"], choices=["1", "1.5", "2"])
    parser.add_argument("--rows", type=int, default=None, help="rows drawn per stage (default 20000)")
    parser.add_argument("--cpu-batch", type=int, default=8, help="samples per timed micro-batch on CPU")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3, --quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (see benchmarks/README.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    args.rows = args.rows or (400 if args.tiny else 5000 if args.quick else 20000)
    args.reps = args.reps or (1 if args.tiny or args.quick else 3)
    dtype = torch.bfloat16 if device.type == "cuda" and not args.tiny else torch.float32

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    spec = model_spec(device, args.tiny)
    accounting, timing, length_model = [], [], []
    try:
        attns = ["sdpa"] + (["flex_attention"] if device.type == "cuda" else [])
        models = {attn: build_model(spec, attn, device, dtype) for attn in attns}
        for stage in args.stages:
            setting, chars_per_token = stage_setting(stage)
            lengths, images, table = draw_rows(stage, setting, chars_per_token, args.rows, args.seed)
            length_model += table
            batches = micro_batches(lengths, images, setting.per_device, PROCESSES * setting.accumulation, args.seed)
            accounting += account(lengths, batches, setting)
            timing += time_stage(stage, setting, lengths, images, models, args, device, dtype)
            print(f"  stage {stage} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        models.clear()
    finally:
        torch.set_num_threads(previous_threads)  # the runner and the tests go on in this process
        gc.collect()
    elapsed = time.perf_counter() - started
    # Where the default packing left a micro-batch as it was (same rows and width as padded), the two timings differ
    # by noise alone: the spread of those ratios is the noise level of this run.
    unchanged = [row["time vs padded"] for row in timing if row["layout"] == "packed" and "rows x width" in row
                 and row["rows x width"] == next(other["rows x width"] for other in timing if other["stage"] ==
                                                 row["stage"] and other["micro-batch"] == row["micro-batch"]
                                                 and other["layout"] == "padded")]
    noise = (f"Noise: where the default packing left the micro-batch's shape unchanged ({len(unchanged)} case(s)), "
             f"packed/padded measured {', '.join(f'{value:.2f}' for value in unchanged)} (ideally 1.00)."
             if unchanged else "")
    result = {
        "title": "Packing against padding: tokens per real token (stage YAML micro-batches, 8 processes)",
        "goal": "Padding avoided, and step time per real token, packed against padded",
        "rows": accounting,
        "notes": [
            f"{args.rows} rows per stage drawn from the length model below (seed {args.seed}); micro-batches formed "
            "by ModalityGroupedSampler at the YAML's per-device batch, world = 8 processes x accumulation; each laid "
            "out by trainer.collator (first-fit).",
            "padding avoided = 1 - tokens packed / tokens padded. Dense attention: every query-key pair of a row "
            "(sdpa/eager with a mask), summed rows x width^2, relative to the padded batch; block-skipping: only "
            "pairs within a sample (flex_attention BlockMask, FlashAttention varlen), the same for every layout.",
            f"characters per token of a caption-style paragraph with the offline Llama tokenizer: "
            f"{chars_per_token:.2f} (converts ShareGPT4V's published 826-character mean).",
        ],
        "tables": [
            {"title": f"Step time per real token ({device.type}, {dtype}): padded vs packed, same micro-batches",
             "rows": timing,
             "notes": [
                 "Forward, backward and AdamW step of the stage's trainable parts (stage 1.5 with the Croc "
                 "objectives: pool, Hungarian matching, mixed mask, VTR), the layouts interleaved in one process "
                 f"(order rotated), median of {args.reps} repetitions after a warm-up; per modality the first "
                 "micro-batch of that modality in the stage's sampler order; ms per 1K real tokens. The stage "
                 "estimate weighs the modalities by their share of the drawn rows' real tokens.",
                 "model: " + ", ".join(f"{k}={v}" for k, v in spec.items())
                 + (f"; {args.cpu_batch} samples per micro-batch (the YAMLs' 16-32 do not fit a CPU time budget), "
                    f"{args.threads} torch thread(s)" if device.type == "cpu" or args.tiny else
                    "; the YAML's per-device batch"),
                 "packed: budget = the micro-batch's longest sample (the trainer's default). On CPU the third "
                 "layout is a fixed budget (model_max_length) on sdpa, whose dense mask costs a row's length "
                 "squared; on CUDA it is the whole micro-batch in one row on flex_attention, whose BlockMask skips "
                 "the blocks between samples (flex has no CPU backward).",
                 "The CPU model is narrow (width 256), so attention weighs far more in its step than in a 7B model's "
                 "at these lengths (attention/linear work grows as length / width): CPU times penalise long packed "
                 "rows more than a real model would; the GPU check runs the 1B-class model.",
                 noise,
             ]},
            {"title": "Length model (what each stage's rows are drawn from)", "rows": length_model,
             "notes": ["Text tokens exclude the template's (measured: BOS, system prompt, roles, EOS) and the 576 "
                       "image tokens of an image row; rows are cut at model_max_length as the dataset cuts them."]},
        ],
        "settings": {"device": str(device), "dtype": str(dtype), "stages": args.stages, "rows": args.rows,
                     "seed": args.seed, "elapsed_s": elapsed,
                     "stage_settings": [asdict(stage_setting(stage)[0]) for stage in args.stages]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    from benchmarks.rendering import render_result

    print(render_result(result, "packing"))
    print(f"wrote {args.out} ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
