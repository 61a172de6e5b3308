"""The dataset card and summary.json of a build, checked by value; and the (mocked) Hub push."""

from __future__ import annotations

import json

import datasets
import huggingface_hub
import pytest
from huggingface_hub import CommitInfo, DatasetCard

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

    def push_build(dataset, card, out_dir, repo_id, private=None, num_shards=None, image_root=None):
        pushed.update(dataset=dataset, card=card, out_dir=out_dir, repo=repo_id, private=private, num_shards=num_shards)
        return CommitInfo(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{'0' * 40}",
                          commit_message="", commit_description="", oid="0" * 40)

    monkeypatch.setattr("data_recipes.hub.push_build", push_build)
    monkeypatch.setattr("data_recipes.hub.repo_is_private", lambda repo_id: False)  # as the Hub would answer
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


def test_card_states_what_the_code_does(build, tmp_path):
    """The card said every rejected row is in `rejects.jsonl` (never uploaded), put `<image>` in the first human turn
    (a later one is valid), had no citation, and kept the terms a licence id cannot carry only in a table cell."""
    from data_recipes.card import build_card

    result, out = build
    local = DatasetCard.load(out / "README.md").text
    assert "Every rejected row is in `rejects.jsonl` with its reason." in local
    pushed = build_card(result.summary, pretty_name="mix", licence_ids=["cc-by-4.0"], hub_ids=[],
                        image_storage="embedded", published=True).text
    assert "Every rejected row" not in pushed
    assert ("in `rejects.jsonl` of the local build folder, which stays with the build and is not uploaded."
            in pushed)
    for text in (local, pushed):
        assert "in the first human turn" not in text
        assert "exactly one `<image>` marker, in a human turn (any one, not necessarily the first)" in text
        assert "`(source, id)` does not" in text and "`id`, `image` and `conversations` together identify" in text
        assert "## Citation" in text and "eprint={2410.14332}" in text
        assert "title={Croc: Pretraining Large Multimodal Models with Cross-Modal Comprehension}" in text
        assert "- `belle`: GPL-3.0 (on its card)" in text


def test_a_later_human_turn_may_hold_the_image_marker():
    """What the card's schema says, checked against the validator it describes."""
    from data_recipes.validation import conversation_problem

    turns = [{"from": "human", "value": "Hello."}, {"from": "gpt", "value": "Hi."},
             {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]
    assert conversation_problem(turns, True)[0] is None


def test_licence_other_gets_a_name_and_a_link_and_every_source_s_terms_are_stated(lcs_root, tmp_path):
    """`license: other` alone (lcs558k) is incomplete for the Hub; `CC BY 4.0 + OpenAI terms of use` reduced to
    `cc-by-4.0` lost the OpenAI terms, which the prose now states."""
    card = build_recipe("lcs558k", lcs_root, tmp_path / "lcs").card
    assert (card.data.license, card.data.license_name, card.data.license_link) == \
        ("other", "lcs558k-terms", "README.md#licences")
    assert "- `lcs558k`: research use only, CC-3M / BLIP terms" in card.text
    from data_recipes.card import build_card

    summary = json.loads((tmp_path / "lcs" / "summary.json").read_text())
    summary["sources"] = {"llava665k": {**summary["sources"]["lcs558k"], "licence": "CC BY 4.0 + OpenAI terms of use",
                                        "licence_id": "cc-by-4.0"}}
    mixed = build_card(summary, pretty_name="mix", licence_ids=["cc-by-4.0"], hub_ids=[])
    assert mixed.data.license == "cc-by-4.0" and "license_name" not in mixed.data.to_dict()
    assert "- `llava665k`: CC BY 4.0 + OpenAI terms of use" in mixed.text


@pytest.mark.parametrize("licence", ["CC BY 4.0", "cc-by-4", "", 4])
def test_a_licence_that_is_not_a_hub_id_is_refused_before_the_build(licence, lcs_root, tmp_path, monkeypatch):
    from data_recipes import registry

    def read_sources(*args, **kwargs):
        raise AssertionError("the sources were read before the error")

    monkeypatch.setattr(registry.Recipe, "__call__", read_sources)
    with pytest.raises(ValueError, match=r"^licence=.* is not a Hub licence id") as error:
        build_recipe("llava_json", lcs_root, tmp_path / "out",
                     params={"annotation": "blip_laion_cc_sbu_558k.json", "licence": licence})
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
    if licence == "CC BY 4.0":
        assert "(did you mean cc-by-4.0?)" in str(error.value)
