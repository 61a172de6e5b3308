"""The dataset card and summary.json of a build, checked by value; and the (mocked) Hub push."""

from __future__ import annotations

import json

import datasets
import huggingface_hub
import pytest
from huggingface_hub import DatasetCard

from data_recipes import build_recipe
from data_recipes.card import size_category
from trainer.model_card import run_provenance
from trainer.script_args import DataArguments, ModelArguments

COUNTS = {"sharegpt4v": 4, "mathinstruct": 2, "alpaca": 2, "belle": 2, "open_platypus": 2, "code_alpaca": 2,
          "firefly": 2, "webqa": 5, "dolly": 2}


@pytest.fixture(scope="module")
def build(croc_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "out"
    result = build_recipe("croc1.5m", croc_root, out, seed=7, params={"counts": COUNTS})
    return result, out


def test_card_metadata(build):
    _, out = build
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == ["cc-by-4.0", "cc-by-nc-4.0", "cc-by-sa-3.0", "gpl-3.0", "unknown"]
    assert card.data.source_datasets == [
        "BelleGroup/train_0.5M_CN", "Lin-Chen/ShareGPT4V", "TIGER-Lab/MathInstruct", "YeungNLP/firefly-train-1.1M",
        "databricks/databricks-dolly-15k", "garage-bAInd/Open-Platypus", "sahil2801/CodeAlpaca-20k",
        "suolyer/webqa", "tatsu-lab/alpaca"]
    assert card.data.size_categories == ["n<1K"]
    assert card.data.pretty_name.startswith("Croc stage-1.5 mixture")


def test_card_body_lists_sources_counts_licences_seed_instruction(build):
    _, out = build
    text = DatasetCard.load(out / "README.md").text
    assert "with seed **7**" in text
    assert "| sharegpt4v | `Lin-Chen/ShareGPT4V` | CC BY-NC 4.0 | 4 | 6 | 4 | 4 | 0 |" in text
    assert "| webqa | `suolyer/webqa` | unstated | 5 | 3 | 3 | 3 | 0 |" in text
    assert "| dolly | `databricks/databricks-dolly-15k` | CC BY-SA 3.0 | 2 | 5 | 2 | 2 | 0 |" in text
    assert "| belle | `BelleGroup/train_0.5M_CN` | GPL-3.0 (on its card) |" in text
    assert "Shortfalls (asked for more rows than the source has; every row was taken): webqa: 2." in text
    assert '"instruction": "Please generate detailed descriptions of the given image."' in text
    assert "| missing_image | 0 |" in text
    assert "21 rows kept out of 21 read (0 rejected)" in text


def test_summary_json(build, croc_root):
    result, out = build
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["recipe"] == "croc1.5m" and summary["seed"] == 7 and summary["status"] == "ok"
    assert summary["image_root"] == str(croc_root) and summary["image_check"] is True
    assert summary["params"]["counts"] == COUNTS
    assert summary["params"]["instruction"] == "Please generate detailed descriptions of the given image."
    webqa = summary["sources"]["webqa"]
    assert {k: webqa[k] for k in ("requested", "available", "taken", "shortfall", "kept", "dropped")} == \
        {"requested": 5, "available": 3, "taken": 3, "shortfall": 2, "kept": 3, "dropped": 0}
    assert webqa["origin"] == str(croc_root / "text" / "webqa" / "train.json")
    assert summary["sources"]["alpaca"]["origin"] == str(croc_root / "text" / "alpaca")
    assert summary["sources"]["mathinstruct"]["sample_seed"] == 7
    assert summary["rows"] == {"read": 21, "kept": 21, "dropped": 0}
    assert (out / "rejects.jsonl").read_text() == ""


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 665_298, 1_501_000)] == \
        ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "1M<n<10M"]


def test_push_to_hub_is_routed_through_hub_module(lcs_root, tmp_path, monkeypatch):
    """`--push-to-hub` pushes the rows with their images embedded (a datasets.Image column) and the card that says so,
    in the shard count the local `--hub-folder` uses; the build folder keeps the paths."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the tests run offline; a push needs it on
    pushed = {}
    monkeypatch.setattr("data_recipes.hub.push_build",
                        lambda dataset, card, out_dir, repo_id, private=None, num_shards=None: pushed.update(
                            dataset=dataset, card=card, out_dir=out_dir, repo=repo_id, private=private,
                            num_shards=num_shards))
    result = build_recipe("lcs558k", lcs_root, tmp_path / "out", push_to_hub="me/lcs", private=True)
    assert {key: pushed[key] for key in ("out_dir", "repo", "private", "num_shards")} == \
        {"out_dir": tmp_path / "out", "repo": "me/lcs", "private": True, "num_shards": 1}
    assert len(pushed["dataset"]) == 6 and isinstance(pushed["dataset"].features["image"], datasets.Image)
    assert "bytes embedded" in pushed["card"].text and "datasets.Image" in pushed["card"].text
    assert result.dataset.features["image"] == datasets.Value("string")  # the local build: paths
    assert "Image paths are relative" in result.card.text
    assert result.summary["hub"] == {"repo": "me/lcs", "folder": None, "image_storage": "embedded", "private": True}
    # A model trained on a private push does not name its repository on its card, which goes up public by default.
    assert run_provenance(ModelArguments(name_or_path="org/base"), DataArguments(path=str(tmp_path / "out"))).datasets == \
        ["liuhaotian/LLaVA-Pretrain"]

    pushed.clear()
    build_recipe("lcs558k", lcs_root, tmp_path / "paths", push_to_hub="me/lcs", image_storage="path")
    assert pushed["dataset"].features["image"] == datasets.Value("string")
    assert run_provenance(ModelArguments(name_or_path="org/base"), DataArguments(path=str(tmp_path / "paths"))).datasets == \
        ["liuhaotian/LLaVA-Pretrain", "me/lcs"]
