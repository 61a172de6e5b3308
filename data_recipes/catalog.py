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

# The licence identifiers the Hub takes in a card's `license` field (https://huggingface.co/docs/hub/repositories-
# licenses); any other value is rejected by the Hub's metadata check. Terms that are none of these are `other`, with
# `license_name` and `license_link` (`data_recipes.card`).
HUB_LICENCE_IDS: frozenset[str] = frozenset({
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl",
    "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
})


def check_licence_id(value: object) -> None:
    """Refuse a `licence` parameter that is not a Hub licence id (`--set licence="CC BY 4.0"`), before the build: it
    was written into the card's metadata as given, which the Hub rejects."""
    if not isinstance(value, str) or value not in HUB_LICENCE_IDS:
        # The name as a licence's text spells it ("CC BY 4.0", "Apache 2.0") written the Hub's way.
        guess = "-".join(str(value).lower().replace(".", " ").split()).replace("-0", ".0")
        hint = f" (did you mean {guess}?)" if guess in HUB_LICENCE_IDS else ""
        raise ValueError(f"licence={value!r} is not a Hub licence id{hint}: give one the Hub lists (cc-by-4.0, "
                         "apache-2.0, ...: https://huggingface.co/docs/hub/repositories-licenses), or other for "
                         "terms that are none of them")

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
