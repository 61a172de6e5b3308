"""What is known about each upstream set: where it lives on the Hub, its local file, its licence.

The facts come from `docs/DATA.md`. `local_path` is relative to a recipe's `--data-root` and
mirrors what `hf download <hub_id> --repo-type dataset --local-dir <data-root>/<folder>` produces,
so a user who downloads the sets as the Hub ships them needs no path flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceInfo:
    """One upstream set.

    Attributes:
        name: short name used in `source` columns, `--set counts.NAME=...` keys and summaries.
        hub_id: the Hub dataset repository (None for local-only sets).
        hub_file: file inside the Hub repository (None: let `datasets.load_dataset` find the data files).
        local_path: default location under the data root (a file, or a folder of parquet/json files).
        licence: licence as the upstream card states it (free text, for the dataset card).
        licence_id: the Hub licence identifier for card metadata ("other"/"unknown" when not a standard one).
    """

    name: str
    hub_id: str | None
    hub_file: str | None
    local_path: str
    licence: str
    licence_id: str


_ALL = [
    # Stage 1.
    SourceInfo("lcs558k", "liuhaotian/LLaVA-Pretrain", "blip_laion_cc_sbu_558k.json",
               "blip_laion_cc_sbu_558k.json", "research use only, CC-3M / BLIP terms", "other"),
    # Stage 1.5, detailed captions.
    SourceInfo("sharegpt4v", "Lin-Chen/ShareGPT4V", "share-captioner_coco_lcs_sam_1246k_1107.json",
               "share-captioner_coco_lcs_sam_1246k_1107.json", "CC BY-NC 4.0", "cc-by-nc-4.0"),
    # ViCToR's stage 1.5: ~3M CC3M images re-captioned in detail (Hub parquet shards with the images embedded).
    SourceInfo("recap_cc3m", "lmms-lab/LLaVA-ReCap-CC3M", None, "data",
               "as its Hub card states (not read here); CC-3M image terms", "unknown"),
    # Stage 1.5, the eight text-only sets (local copies under `text/<hub repo name>/`).
    SourceInfo("mathinstruct", "TIGER-Lab/MathInstruct", "MathInstruct.json",
               "text/MathInstruct/MathInstruct.json", "mixed (per upstream subset)", "unknown"),
    SourceInfo("alpaca", "tatsu-lab/alpaca", None, "text/alpaca", "CC BY-NC 4.0", "cc-by-nc-4.0"),
    SourceInfo("belle", "BelleGroup/train_0.5M_CN", "Belle_open_source_0.5M.json",
               "text/train_0.5M_CN/Belle_open_source_0.5M.json", "GPL-3.0 (on its card)", "gpl-3.0"),
    SourceInfo("open_platypus", "garage-bAInd/Open-Platypus", None, "text/Open-Platypus",
               "mixed (per upstream subset)", "unknown"),
    SourceInfo("code_alpaca", "sahil2801/CodeAlpaca-20k", "code_alpaca_20k.json",
               "text/CodeAlpaca-20k/code_alpaca_20k.json", "CC BY 4.0", "cc-by-4.0"),
    SourceInfo("firefly", "YeungNLP/firefly-train-1.1M", "firefly-train-1.1M.jsonl",
               "text/firefly-train-1.1M/firefly-train-1.1M.jsonl", "unstated", "unknown"),
    SourceInfo("webqa", "suolyer/webqa", "train.json", "text/webqa/train.json", "unstated", "unknown"),
    SourceInfo("dolly", "databricks/databricks-dolly-15k", "databricks-dolly-15k.jsonl",
               "text/databricks-dolly-15k/databricks-dolly-15k.jsonl", "CC BY-SA 3.0", "cc-by-sa-3.0"),
    # Stage 2.
    SourceInfo("llava665k", "liuhaotian/LLaVA-Instruct-150K", "llava_v1_5_mix665k.json",
               "llava_v1_5_mix665k.json", "CC BY 4.0 + OpenAI terms of use", "cc-by-4.0"),
    # Stage 2, 802K extension: InternVL-Chat-V1-2-SFT-Data's LLaVA-format jsonl files.
    SourceInfo("docvqa", "OpenGVLab/InternVL-Chat-V1-2-SFT-Data", "opensource/docvqa_train_10k.jsonl",
               "opensource/docvqa_train_10k.jsonl", "unstated", "unknown"),
    SourceInfo("chartqa", "OpenGVLab/InternVL-Chat-V1-2-SFT-Data", "opensource/chartqa_train_18k.jsonl",
               "opensource/chartqa_train_18k.jsonl", "unstated", "unknown"),
    SourceInfo("ai2d", "OpenGVLab/InternVL-Chat-V1-2-SFT-Data", "opensource/ai2d_train_12k.jsonl",
               "opensource/ai2d_train_12k.jsonl", "unstated", "unknown"),
    SourceInfo("synthdog_en", "OpenGVLab/InternVL-Chat-V1-2-SFT-Data", "opensource/synthdog_en.jsonl",
               "opensource/synthdog_en.jsonl", "unstated", "unknown"),
    SourceInfo("dvqa", "OpenGVLab/InternVL-Chat-V1-2-SFT-Data", "opensource/dvqa_train_200k.jsonl",
               "opensource/dvqa_train_200k.jsonl", "unstated", "unknown"),
]

CATALOG: dict[str, SourceInfo] = {s.name: s for s in _ALL}

# The paper's appendix counts for stage 1.5 (they sum to 1.2M + 301K; the paper rounds to "300K").
CROC_1_5M_COUNTS: dict[str, int] = {
    "sharegpt4v": 1_200_000,
    "mathinstruct": 124_000,
    "alpaca": 52_000,
    "belle": 30_000,
    "open_platypus": 25_000,
    "code_alpaca": 20_000,
    "firefly": 25_000,
    "webqa": 15_000,
    "dolly": 10_000,
}

TEXT_SOURCE_NAMES: tuple[str, ...] = tuple(n for n in CROC_1_5M_COUNTS if n != "sharegpt4v")


def source_info(name: str) -> SourceInfo:
    """Look a source up by name, with a helpful error."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(CATALOG))}") from None
