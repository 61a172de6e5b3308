"""Model cards that are true: licence and base models inherited from the stage-0 parts' cards and carried from stage
to stage, datasets from the data recipe's card, evaluation results from lmms-eval's results file, install
instructions that work, and the metadata checked against the Hub's rules offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, ModelCardData
from packaging.requirements import Requirement
from setuptools.config.setupcfg import read_configuration
from trainer_helpers import run_stage

from croc_testing.optional import needs_installed_project
from croc_testing.tiny import save_tiny_croc
from data_recipes import build_recipe
from modeling_croc.convert.from_parts import stage0_card
from modeling_croc.provenance import Provenance
from trainer.model_card import add_eval_results, check_card

BASES = ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def declared_requirement(name: str) -> Requirement:
    """The requirement setup.cfg declares for `name` (the source the card's install line must follow, whatever an
    installed copy's metadata says)."""
    lines = read_configuration(str(SETUP_CFG))["options"]["install_requires"]
    return next(Requirement(line) for line in lines if Requirement(line).name == name)


def _lmms_eval_results(path, scores: dict[str, dict[str, float]]):
    """A results file in lmms-eval's layout (`results` -> task -> `metric,filter` / `..._stderr,filter` / alias)."""
    results = {task: {"alias": task, **{f"{metric},none": value for metric, value in metrics.items()},
                      **{f"{metric}_stderr,none": "N/A" for metric in metrics}}
               for task, metrics in scores.items()}
    path.write_text(json.dumps({"results": results, "config": {"model": "croc"}}))
    return path


def test_cards_inherit_licence_base_models_and_datasets_through_the_stages(tmp_path, data_dir, monkeypatch):
    # Stage 0 from parts whose cards say what they are: the LM's licence is Llama 2's, CLIP's card states none.
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "README.md").write_text("---\nlicense: llama2\ninference: false\n---\n# Vicuna\n")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "README.md").write_text("---\ntags:\n- vision\n---\n# CLIP\n")
    stage0 = save_tiny_croc(tmp_path / "stage0")
    stage0_card(tmp_path / "clip", tmp_path / "lm", base_models=BASES).save(stage0 / "README.md")

    # Stage-1 data: a recipe build of a Hub source (its download replaced by the local file, no network).
    monkeypatch.setattr("data_recipes.hub.download_hub_file", lambda repo, filename: data_dir / filename)
    build = build_recipe("llava_json", data_dir, tmp_path / "build",
                         params={"annotation": "captions.json", "hub": "someone/captions"})
    assert build.card.data.source_datasets == ["someone/captions"]

    run_stage("stage1.yaml", tmp_path / "stage1", f"--data.path={tmp_path / 'build'}",
              f"--model.name_or_path={stage0}", "--max_steps=1")
    first = ModelCard.load(tmp_path / "stage1" / "README.md").data
    assert (first.license, first.base_model, first.datasets) == ("llama2", BASES, ["someone/captions"])

    # Stage 1.5 from the stage-1 folder: everything carried over, its own dataset added, evaluation results reported.
    results = _lmms_eval_results(tmp_path / "results.json", {"pope": {"pope_accuracy": 0.5}})
    run_stage("stage1_5.yaml", tmp_path / "stage1_5", f"--data.path={data_dir / 'detailed.json'}",
              f"--model.name_or_path={tmp_path / 'stage1'}", "--max_steps=1", "--hub_datasets=[Lin-Chen/ShareGPT4V]",
              f"--hub_eval_results=[{results}]")
    card = ModelCard.load(tmp_path / "stage1_5" / "README.md")
    data = card.data
    assert (data.license, data.base_model) == ("llama2", BASES)
    assert data.datasets == ["someone/captions", "Lin-Chen/ShareGPT4V"]
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in data.eval_results] == \
        [("pope", "pope_accuracy", 0.5)]
    assert data.croc_stage == "1.5" and data.pipeline_tag == "image-text-to-text"
    check_card(card)
    # Install instructions that work: the trust_remote_code route with the declared transformers range, and the
    # package from a clone (it is not on PyPI), never `pip install croc-transformers`.
    assert "trust_remote_code=True" in card.text and "pip install croc-transformers" not in card.text
    install = re.search(r'pip install "(transformers[^"]*)"', card.text)
    assert install and Requirement(install.group(1)) == declared_requirement("transformers")
    assert "clone" in card.text and "`llama2`" in card.text

    # Results of a later evaluation go into the saved card; earlier ones of other tasks stay.
    later = _lmms_eval_results(tmp_path / "later.json", {"mmbench_en_dev": {"gpt_eval_score": 61.25}})
    add_eval_results(tmp_path / "stage1_5", [later])
    updated = ModelCard.load(tmp_path / "stage1_5" / "README.md").data
    assert {(r.dataset_type, r.metric_value) for r in updated.eval_results} == {("pope", 0.5),
                                                                                ("mmbench_en_dev", 61.25)}


def test_licences_combine_and_cards_are_checked():
    assert Provenance(licenses=["llama2", "llama2"]).license_metadata() == {"license": "llama2"}
    assert Provenance().license_metadata() == {"license": "unknown"}
    mixed = Provenance(licenses=["llama2", "mit"]).license_metadata()
    assert mixed["license"] == "other" and mixed["license_name"] == "llama2-and-mit" and mixed["license_link"]

    def card(metadata: str) -> ModelCard:
        return ModelCard(f"---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n{metadata}---\n# x\n")

    check_card(card("license: llama2\nbase_model:\n- lmsys/vicuna-7b-v1.5\n"))
    with pytest.raises(ValueError, match="base_model entry '/home/me/vicuna' is not a Hub id"):
        check_card(card("license: llama2\nbase_model:\n- /home/me/vicuna\n"))
    with pytest.raises(ValueError, match="license: other needs license_name and license_link"):
        check_card(card("license: other\n"))
    with pytest.raises(ValueError, match="not a licence id"):
        check_card(card("license: Apache 2\n"))


@pytest.mark.parametrize("installed", [pytest.param(True, marks=needs_installed_project, id="installed"),
                                       pytest.param(False, id="checkout on PYTHONPATH")])
def test_the_install_line_names_the_declared_transformers_range(installed, monkeypatch):
    """A card written from a checkout that is not installed (gpu_check.sh's wheelhouse route: no distribution
    metadata) names the range setup.cfg declares, as an installed package does, not the running version as a floor."""
    import importlib.metadata

    from trainer import model_card

    if not installed:
        def not_installed(name):
            raise importlib.metadata.PackageNotFoundError(name)

        monkeypatch.setattr(model_card.importlib.metadata, "requires", not_installed)
    install = re.search(r'pip install "(transformers[^"]*)"', model_card.install_instructions())
    assert install and Requirement(install.group(1)) == declared_requirement("transformers")


def test_card_states_the_architecture_it_was_trained_on(tmp_path):
    """A Qwen2.5-VL-family run's card names that family's class and parts, not LLaVA-1.5's CLIP + Llama."""
    from types import SimpleNamespace

    from croc_testing.families import save_tiny_qwen2_5_vl
    from modeling_croc.loading import read_croc_config
    from trainer.model_card import build_model_card
    from trainer.stages import get_stage

    config = read_croc_config(save_tiny_qwen2_5_vl(tmp_path / "qwen"))
    args = SimpleNamespace(stage_spec=get_stage("1.5"), group_learning_rates={"projector": 1e-4}, adam_beta1=0.9,
                           adam_beta2=0.999, weight_decay=0.0, lr_scheduler_type="cosine", warmup_steps=0,
                           num_train_epochs=1, per_device_train_batch_size=1, gradient_accumulation_steps=1,
                           world_size=1, model_max_length=2048, template="qwen2_vl", image_aspect_ratio="square",
                           seed=0, hub_datasets=None, hub_license="apache-2.0", output_dir=str(tmp_path / "out"),
                           hub_eval_results=None, trainable_parts=["projector"])
    trainer = SimpleNamespace(args=args, croc_model=SimpleNamespace(config=config),
                              state=SimpleNamespace(log_history=[]), provenance=Provenance())
    body = str(build_model_card(trainer)).split("\n---\n", 1)[1]
    assert "CrocQwen2_5_VLForConditionalGeneration" in body
    assert "CLIP" not in body and "Llama" not in body and "LLaVA-1.5" not in body
    # Qwen2.5-VL's processor never resizes or pads to a square: the card does not claim it did.
    assert "image_aspect_ratio" not in body


def test_card_states_image_aspect_ratio_only_where_the_processor_applies_it(tmp_path):
    """A OneVision run (the victor YAMLs say `image_aspect_ratio: pad`) prepares AnyRes crops: its card said `pad`,
    a preparation that never ran; LLaVA-1.5's processor pads, and its card says so."""
    from croc_testing.tiny import save_tiny_croc, save_tiny_croc_onevision
    from modeling_croc.loading import read_croc_config
    from trainer.model_card import applies_image_aspect_ratio

    assert applies_image_aspect_ratio(read_croc_config(save_tiny_croc(tmp_path / "llava")))
    assert not applies_image_aspect_ratio(read_croc_config(save_tiny_croc_onevision(tmp_path / "onevision")))


def test_a_part_under_an_other_licence_carries_its_name_and_link(tmp_path):
    """A part whose card says `license: other` with `license_name` / `license_link` (Qwen2.5-3B-Instruct's
    qwen-research) was carried as a bare `other`, which the card check refused after training, with a ValueError
    traceback (found by a hostile tester). Its name and link are carried, into the next stage's card too."""
    from trainer.model_card import check_card

    link = "https://huggingface.co/Qwen/Qwen2.5-3B-Instruct/blob/main/LICENSE"
    (tmp_path / "README.md").write_text(f"---\nlicense: other\nlicense_name: qwen-research\nlicense_link: {link}\n"
                                        "---\n# a model\n")
    expected = {"license": "other", "license_name": "qwen-research", "license_link": link}
    part = Provenance.of_model_folder(tmp_path, hub_id="Qwen/Qwen2.5-3B-Instruct")
    assert part.license_metadata() == expected
    metadata = "".join(f"{key}: {value}\n" for key, value in expected.items())
    stage = ModelCard(f"---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n{metadata}---\n# x\n")
    check_card(stage)
    (tmp_path / "stage").mkdir()
    stage.save(tmp_path / "stage" / "README.md")
    assert Provenance.of_model_folder(tmp_path / "stage").license_metadata() == expected  # the next stage's card
    mixed = Provenance().merged(part, Provenance(licenses=["apache-2.0"])).license_metadata()
    assert mixed["license"] == "other" and mixed["license_name"] == "qwen-research-and-apache-2.0"


def test_local_paths_a_parts_card_lists_as_base_model_or_datasets_are_not_carried(tmp_path):
    """A local fine-tune's card (written by another tool) may name its base model and data by local path: carried
    into the next card, they were this machine's paths on their way to the Hub, and the card check refused them with
    a ValueError traceback after training. Only the Hub ids are carried."""
    from trainer.model_card import check_card

    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\nbase_model:\n- /srv/team/llama-base\n- "
                                        "meta-llama/Llama-2-7b-hf\ndatasets:\n- /srv/team/sft/rows.json\n- "
                                        "C:\\\\data\\\\rows.json\n- liuhaotian/LLaVA-Instruct-150K\n---\n# a local fine-tune\n")
    found = Provenance.of_model_folder(tmp_path)
    assert found.base_models == ["meta-llama/Llama-2-7b-hf"]
    assert found.datasets == ["liuhaotian/LLaVA-Instruct-150K"]
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "README.md").write_text("---\nsource_datasets:\n- /srv/team/raw\n- lmms-lab/COCO\n---\n")
    assert Provenance.of_dataset_folder(tmp_path / "build").datasets == ["lmms-lab/COCO"]
    data = ModelCardData(license="apache-2.0", library_name="transformers", pipeline_tag="image-text-to-text",
                         base_model=found.base_models, datasets=found.datasets)
    check_card(ModelCard(f"---\n{data.to_yaml()}\n---\n# x\n"))


def test_the_cli_stops_in_one_line_on_the_mistakes_made_first(tmp_path, capsys):
    """`python -m trainer.model_card FOLDER --eval-results ...` (docs/EVALUATION.md) on a folder with no card, a
    shell glob that matched nothing, or a JSON file that is not lmms-eval's results file: one line, the card as it
    was, no traceback."""
    from trainer.model_card import main

    folder = tmp_path / "model"
    folder.mkdir()
    card = folder / "README.md"
    text = "---\nlicense: apache-2.0\npipeline_tag: image-text-to-text\nlibrary_name: transformers\n---\n# a model\n"
    card.write_text(text)
    not_results = tmp_path / "samples.json"
    not_results.write_text(json.dumps({"doc_id": 0}))
    broken = tmp_path / "broken_results.json"
    broken.write_text("{")
    rows = tmp_path / "rows.json"  # a JSON list: AttributeError on `.get`
    rows.write_text(json.dumps([{"doc_id": 0}]))
    flat = tmp_path / "flat_results.json"  # a score per task, not a mapping of metrics: AttributeError on `.items`
    flat.write_text(json.dumps({"results": {"pope": 0.5}}))
    cases = [
        ([str(tmp_path / "nothing"), "--eval-results", str(not_results)], "has no README.md"),
        ([str(folder), "--eval-results", str(tmp_path / "eval_out" / "*" / "*_results.json")],
         "does not exist (a shell pattern that matched nothing?)"),
        ([str(folder), "--eval-results", str(not_results)], "not an lmms-eval results file"),
        ([str(folder), "--eval-results", str(broken)], "model card error"),
        ([str(folder), "--eval-results", str(rows)], "not an lmms-eval results file"),
        ([str(folder), "--eval-results", str(flat)], "not an lmms-eval results file"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        message = str(stop.value.code)
        assert message.startswith("model card error: ") and expected in message and "\n" not in message, message
    assert card.read_text() == text
    main([str(folder), "--eval-results", str(_lmms_eval_results(tmp_path / "r_results.json", {"pope": {"f1": 0.5}}))])
    assert "1 evaluation results" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["limit", "fraction", "offset", "fewer samples", "predict only"])
def test_results_that_score_no_whole_benchmark_are_refused_by_the_cli_and_at_the_start(case, tmp_path, monkeypatch):
    """`--limit 2` on a task of 8 samples and `--predict_only` (its `bypass` placeholder 999) went on the card as the
    model's scores: refused in one line by `python -m trainer.model_card` and, for hub_eval_results, before the run
    trains. The results files are as lmms-eval writes them (`config.limit`, `n-samples`)."""
    from trainer import validation
    from trainer.model_card import main

    data = {"results": {"t_choice": {"alias": "t_choice", "acc,none": 0.5, "acc_stderr,none": 0.2}},
            "n-samples": {"t_choice": {"original": 8, "effective": 8}},
            "config": {"model": "croc", "model_args": "pretrained=model", "limit": None, "offset": 0}}
    expected = {"limit": "scored 2 of the 8 samples of t_choice", "fraction": "was run with --limit 0.25",
                "offset": "was run with --offset 4", "fewer samples": "scored 2 of the 8 samples of t_choice",
                "predict only": "holds no score for t_choice: `bypass` is lmms-eval's placeholder of --predict_only"}[case]
    if case in ("limit", "fraction"):
        data["config"]["limit"] = 2 if case == "limit" else 0.25
        data["n-samples"]["t_choice"]["effective"] = 2
        if case == "fraction":  # a file without sample counts: its limit says it
            del data["n-samples"]
    elif case == "offset":
        data["config"]["offset"] = 4
    elif case == "fewer samples":
        data["n-samples"]["t_choice"]["effective"] = 2
    elif case == "predict only":
        data["results"]["t_choice"] = {"alias": "t_choice", "bypass,none": 999, "bypass_stderr,none": "N/A"}
    folder = tmp_path / "model"
    folder.mkdir()
    text = "---\nlicense: apache-2.0\npipeline_tag: image-text-to-text\nlibrary_name: transformers\n---\n# model\n"
    (folder / "README.md").write_text(text)
    results = tmp_path / "eval_out" / "model" / "20261207_results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as stop:
        main([str(folder), "--eval-results", str(results), "--same-model"])
    assert str(stop.value.code).startswith(f"model card error: {results}") and expected in str(stop.value.code)
    assert (folder / "README.md").read_text() == text
    with pytest.raises(validation.ConfigError, match=re.escape(expected)):
        validation.check_hub({"output_dir": str(folder), "hub_eval_results": [str(results)]})
    # The same file scoring every sample is taken: `--limit -1` ("all samples", lmms-eval writes effective -1) and a
    # limit past the task's size included; a metric that is not a finite number is left off, the others kept.
    if case in ("limit", "offset", "fewer samples"):
        data["config"].update(limit={"limit": -1.0, "offset": None}.get(case, 100_000), offset=0)
        data["n-samples"]["t_choice"]["effective"] = -1 if case == "limit" else 8
        data["results"]["t_choice"]["perplexity,none"] = float("inf")
        results.write_text(json.dumps(data))
        main([str(folder), "--eval-results", str(results), "--same-model"])
        card = (folder / "README.md").read_text()
        assert "| t_choice | acc | 0.5000 |" in card and "perplexity" not in card


def test_added_eval_results_replace_the_cards_table_and_keep_filters_apart(tmp_path):
    """`python -m trainer.model_card FOLDER --eval-results` on a card whose training run reported POPE: the text's
    table was left as training wrote it (the replaced 0.5 next to the metadata's 0.75), and a task scored under two
    lmms-eval filters gave two `exact_match` results that nothing told apart."""
    from huggingface_hub import EvalResult, ModelCardData

    from trainer.model_card import PIPELINE_TAG, main

    trained = [EvalResult(task_type=PIPELINE_TAG, dataset_type="pope", dataset_name="pope",
                          metric_type="pope_accuracy", metric_value=0.5)]
    data = ModelCardData(license="llama2", library_name="transformers", pipeline_tag=PIPELINE_TAG,
                         model_name="stage2", eval_results=trained)
    folder = tmp_path / "stage2"
    folder.mkdir()
    body = ("# stage2\n\n## Evaluation (lmms-eval)\n\n| task | metric | value |\n|---|---|---|\n"
            "| pope | pope_accuracy | 0.5000 |\n\n## Later notes\n\nkept\n")  # as build_model_card writes it
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(folder / "README.md")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"results": {
        "pope": {"alias": "pope", "pope_accuracy,none": 0.75},
        "textvqa_val": {"alias": "textvqa_val", "exact_match,strict-match": 0.4, "exact_match,flexible-extract": 0.55}}}))
    main([str(folder), "--eval-results", str(results)])
    card = ModelCard.load(folder / "README.md")
    expected = {("pope", "pope_accuracy"): 0.75, ("textvqa_val", "exact_match,strict-match"): 0.4,
                ("textvqa_val", "exact_match,flexible-extract"): 0.55}
    assert {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results} == expected
    rows = [line for line in card.text.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    assert rows == [f"| {task} | {metric} | {value:.4f} |" for (task, metric), value in expected.items()]
    assert card.text.count("## Evaluation (lmms-eval)") == 1 and "kept" in card.text


def test_added_filtered_eval_results_replace_those_an_earlier_version_wrote_without_the_filter(tmp_path):
    """A card whose lmms-eval results were added before the filter stayed in the metric's name holds each filter's
    value as `exact_match`; adding a re-evaluation kept those stale scores beside the new ones, in the metadata and
    the table (found by a hostile reviewer)."""
    from huggingface_hub import EvalResult, ModelCardData

    from trainer.model_card import PIPELINE_TAG

    earlier = [EvalResult(task_type=PIPELINE_TAG, dataset_type="textvqa_val", dataset_name="textvqa_val",
                          metric_type="exact_match", metric_value=value) for value in (0.4, 0.55)]
    data = ModelCardData(license="llama2", library_name="transformers", pipeline_tag=PIPELINE_TAG,
                         model_name="stage2", eval_results=earlier)
    folder = tmp_path / "stage2"
    folder.mkdir()
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n# stage2\n").save(folder / "README.md")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"results": {"textvqa_val": {
        "alias": "textvqa_val", "exact_match,strict-match": 0.6, "exact_match,flexible-extract": 0.65}}}))
    card = add_eval_results(folder, [results])
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        ("exact_match,strict-match", 0.6), ("exact_match,flexible-extract", 0.65)}
    assert "| textvqa_val | exact_match |" not in card.text


def test_a_publishing_rerun_keeps_the_scores_added_to_the_card(tmp_path, data_dir, stage1_dir):
    """Evaluate a finished run, add the scores to its card (`python -m trainer.model_card`), then rerun the same
    command to publish it: the rerun trains nothing (it resumes from the last step's checkpoint) and writes the card
    again, which dropped the scores from the card in output_dir and from what the push uploads."""
    out, dry = tmp_path / "stage2", tmp_path / "to_upload"
    command = ("stage2.yaml", out, f"--data.path={data_dir / 'qa.json'}", f"--model.name_or_path={stage1_dir}",
               "--max_steps=1", "--save_strategy=steps", "--save_steps=1")
    run_stage(*command)
    add_eval_results(out, [_lmms_eval_results(tmp_path / "results.json", {"pope": {"pope_accuracy": 0.5}})])
    later = _lmms_eval_results(tmp_path / "later.json", {"mme": {"mme_perception_score": 1200.0}})
    # It scored this folder (the start check confirms it by path): a rerun that trains nothing takes it.
    later.write_text(json.dumps({**json.loads(later.read_text()),
                                 "config": {"model": "croc", "model_args": f"pretrained={out}"}}))
    run_stage(*command, f"--hub_dry_run={dry}", "--hub_model_id=someone/croc-tiny-stage2",
              f"--hub_eval_results=[{later}]")
    for card in (ModelCard.load(out / "README.md"), ModelCard.load(dry / "README.md")):
        assert {(r.dataset_type, r.metric_value) for r in card.data.eval_results} == {("pope", 0.5), ("mme", 1200.0)}
        assert "| pope | pope_accuracy | 0.5000 |" in card.text
        check_card(card)

    # A run that trained further is another model: the scores of the earlier weights are not carried onto it.
    other = tmp_path / "other"
    run_stage("stage2.yaml", other, *command[2:4], "--max_steps=2", "--save_strategy=no")
    (other / "README.md").write_text((out / "README.md").read_text())
    run_stage("stage2.yaml", other, *command[2:4], "--max_steps=2", "--save_strategy=no",
              f"--hub_dry_run={tmp_path / 'other_upload'}", "--hub_model_id=someone/other")
    assert not ModelCard.load(other / "README.md").data.eval_results


def test_a_card_whose_yaml_does_not_parse_is_written_anew(tmp_path):
    """A finished run's card hand-edited into YAML that does not parse: the rerun that writes the card again read it
    for the scores to keep and ended in a yaml traceback after training; it carries none and writes the card anew
    (found by a hostile reviewer)."""
    from trainer.model_card import _earlier_eval_results

    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags: [croc, llava\n---\n# my notes\n")
    assert _earlier_eval_results(tmp_path, "2", {}, {}, []) == []
    assert Provenance.of_model_folder(tmp_path) == Provenance()  # a stage started from it: nothing stated


def test_a_stage_started_from_a_tilde_folder_inherits_its_card(tmp_path, monkeypatch):
    """`--model.name_or_path=~/stage1` (no shell expands a `~` after `=`) loads the folder, but its card was read at
    `./~/stage1`: the next stage's card lost the licence, base models and datasets without a word."""
    from trainer.model_card import run_provenance
    from trainer.script_args import ModelArguments

    home = tmp_path / "home"
    (home / "stage1").mkdir(parents=True)
    (home / "stage1" / "README.md").write_text("---\nlicense: apache-2.0\nbase_model:\n- org/base-lm\ndatasets:\n"
                                               "- org/captions\n---\n# stage 1\n")
    monkeypatch.setenv("HOME", str(home))
    found = run_provenance(ModelArguments(name_or_path="~/stage1"))
    assert found == run_provenance(ModelArguments(name_or_path=str(home / "stage1")))
    assert found.licenses == ["apache-2.0"] and found.base_models == ["org/base-lm"]
    assert found.datasets == ["org/captions"]


@pytest.mark.parametrize("case", ["missing", "folder", "unreadable", "not JSON"])
def test_the_cli_names_a_results_file_it_cannot_read_in_a_sentence(case, tmp_path, monkeypatch):
    """A results path that was not there ended in Python's `[Errno 2] No such file or directory: '...'`."""
    from trainer.model_card import main

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a model\n")
    results = tmp_path / "eval_out" / "nope.json"
    if case == "folder":
        results.mkdir(parents=True)
    elif case in ("unreadable", "not JSON"):
        results.parent.mkdir()
        results.write_text("{")
    if case == "unreadable":  # chmod does not stop root, who runs some of these tests
        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "read_text", refuse)
    expected = {
        "missing": f"eval results file {results} does not exist: give an lmms-eval *_results.json file",
        "folder": f"eval results file {results} is a folder: give the *_results.json file in it (lmms-eval writes "
                  "OUTPUT/<model>/<date>_results.json)",
        "unreadable": f"eval results file {results} cannot be read (Permission denied)",
        "not JSON": f"eval results file {results}:1:2: not valid JSON (Expecting property name enclosed in double "
                    "quotes)",
    }[case]
    with pytest.raises(SystemExit) as stop:
        main([str(folder), "--eval-results", str(results)])
    assert str(stop.value.code) == f"model card error: {expected}"


@pytest.mark.parametrize(("strategy", "state_steps", "said"), [
    ("steps", 5, "(`logging_steps` = 5 step(s)) ending at the step shown"),
    ("epoch", 0, "(an epoch; the run's last may be shorter)"),
    ("no", 0, "The run logged no window (`logging_strategy` = no)"),
])
def test_the_card_says_what_its_final_losses_are_means_of(strategy, state_steps, said):
    """The final losses are the last logging window's: the card says which window (a tester of today's changes found
    `logging_strategy=no` described as 1-step windows, and an epoch's last, shorter window as an epoch)."""
    from types import SimpleNamespace

    from trainer.model_card import _final_losses_sentence

    trainer = SimpleNamespace(args=SimpleNamespace(logging_strategy=strategy, logging_steps=0.1),
                              state=SimpleNamespace(logging_steps=state_steps))
    assert said in _final_losses_sentence(trainer)


def test_a_checkpoint_carries_the_provenance_of_its_runs_card(tmp_path):
    """A stage started from `stage1_5/checkpoint-2` (a Trainer checkpoint holds no card) wrote `license: unknown` and
    no base models or datasets on its own card (from a hostile tester of chained stages): the checkpoint's are its
    run's, read from the card of the output folder that holds it. A folder of another name holding no card has none."""
    import yaml

    from modeling_croc.provenance import Provenance

    run = tmp_path / "stage1_5"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "not-a-checkpoint").mkdir()
    metadata = {"license": "llama2", "base_model": ["lmsys/vicuna-7b-v1.5"], "datasets": ["liuhaotian/LLaVA-Pretrain"]}
    (run / "README.md").write_text(f"---\n{yaml.safe_dump(metadata)}---\n# stage1_5\n")
    found = Provenance.of_model_folder(run / "checkpoint-2")
    assert (found.licenses, found.base_models, found.datasets) == (
        ["llama2"], ["lmsys/vicuna-7b-v1.5"], ["liuhaotian/LLaVA-Pretrain"])
    assert Provenance.of_model_folder(run / "not-a-checkpoint") == Provenance()
