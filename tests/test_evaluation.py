"""Evaluation of every checkpoint, normalised ones included: `lmms-eval --model croc` (found through the package's
entry point) and the VLMEvalKit wrapper, on a tiny saved `official`-preset model and a local two-question task.
References are computed here without the integration code: the prompt spelled out as the Vicuna v1 string, then
`generate` and the model's own loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from croc_testing.optional import needs_lmms_eval
from croc_testing.tiny import save_tiny_croc
from modeling_croc import CrocForConditionalGeneration, CrocProcessor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import VICUNA_V1_SYSTEM

QUESTIONS = ["What colour is it?", "Is the square blue?"]
SHORT = "\nAnswer the question using a single word or phrase."
CHOICES = ["yes", "no"]
MAX_NEW_TOKENS = 5


def _vicuna_prompt(text: str) -> str:
    return f"{VICUNA_V1_SYSTEM} USER: <image>\n{text} ASSISTANT:"


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (60, 40), (200, 30, 30)), Image.new("RGB", (50, 50), (20, 40, 220))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A saved tiny Croc model with normalised visual tokens, and what it answers, computed directly."""
    folder = save_tiny_croc(tmp_path_factory.mktemp("croc") / "model", croc_preset="official")
    model = CrocForConditionalGeneration.from_pretrained(folder).eval()
    processor = CrocProcessor.from_pretrained(folder)
    assert model.config.normalize_visual_tokens  # the kind of checkpoint llava_hf cannot evaluate
    answers, nlls = [], []
    for image, question in zip(_images(), QUESTIONS):
        inputs = processor(images=[image], text=[_vicuna_prompt(question + SHORT)], return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                    pad_token_id=processor.tokenizer.pad_token_id)
        answers.append(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
        per_choice = []
        for choice in CHOICES:
            prompt = _vicuna_prompt(question)
            full = processor(images=[image], text=[f"{prompt} {choice}</s>"], return_tensors="pt")
            prompt_length = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
            labels = full["input_ids"].clone()
            labels[:, :prompt_length] = IGNORE_INDEX
            with torch.no_grad():
                loss = model(**full, labels=labels).loss  # mean over the answer tokens (and </s>)
            per_choice.append(float(loss) * int((labels != IGNORE_INDEX).sum()))
        nlls.append(per_choice)
    return {"folder": folder, "answers": answers, "nlls": nlls}


def _task_folder(root: Path, answers: list[str], choice_targets: list[int]) -> Path:
    """A local lmms-eval task folder: the two questions as a Parquet dataset with an Image column, a generation task
    scored by exact match and a multiple-choice task scored by accuracy."""
    rows = datasets.Dataset.from_dict(
        {"question_id": ["q0", "q1"], "image": _images(), "question": QUESTIONS, "answer": answers,
         "choice_target": choice_targets},
        features=datasets.Features({"question_id": datasets.Value("string"), "image": datasets.Image(),
                                    "question": datasets.Value("string"), "answer": datasets.Value("string"),
                                    "choice_target": datasets.Value("int64")}),
    )
    (root / "data" / "data").mkdir(parents=True)
    rows.to_parquet(str(root / "data" / "data" / "test-00000-of-00001.parquet"))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(
        "def doc_to_visual(doc):\n    return [doc['image'].convert('RGB')]\n\n\n"
        "def doc_to_text(doc, lmms_eval_specific_kwargs=None):\n"
        "    return doc['question'] + (lmms_eval_specific_kwargs or {}).get('post_prompt', '')\n"
    )
    common = (f"dataset_path: {root / 'data'}\ntest_split: test\n"
              "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n")
    (tasks / "croc_test_short.yaml").write_text(
        "task: croc_test_short\n" + common + "output_type: generate_until\ndoc_to_target: answer\n"
        f"generation_kwargs:\n  max_new_tokens: {MAX_NEW_TOKENS}\n  temperature: 0\n  top_p: 1.0\n  num_beams: 1\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "lmms_eval_specific_kwargs:\n  default:\n    post_prompt: \"" + SHORT.replace("\n", "\\n") + "\"\n"
    )
    (tasks / "croc_test_choice.yaml").write_text(
        "task: croc_test_choice\n" + common + f"output_type: multiple_choice\ndoc_to_choice: {CHOICES}\n"
        "doc_to_target: choice_target\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return tasks


@needs_lmms_eval
def test_lmms_eval_cli_evaluates_a_normalised_checkpoint(reference, tmp_path):
    """`lmms-eval --model croc` in a fresh process: the answers are the model's, word for word, the multiple-choice
    scores are its negative log-likelihoods, and the metrics follow (one right, one wrong in each task)."""
    nlls = reference["nlls"]
    picks = [min(range(len(CHOICES)), key=lambda c: row[c]) for row in nlls]
    # Question 0's reference answer is the model's own; question 1's is a word it did not say.
    assert reference["answers"][1] != "zebra"
    tasks = _task_folder(tmp_path, [reference["answers"][0], "zebra"], [picks[0], 1 - picks[1]])
    lmms_eval = Path(sys.executable).parent / "lmms-eval"
    command = [str(lmms_eval), "--model", "croc", "--model_args",
               f"pretrained={reference['folder']},device=cpu,dtype=float32", "--tasks",
               "croc_test_short,croc_test_choice", "--include_path", str(tasks), "--batch_size", "2",
               "--output_path", str(tmp_path / "out"), "--log_samples"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    [results_file] = (tmp_path / "out").glob("*/*_results.json")
    results = json.loads(results_file.read_text())["results"]
    assert results["croc_test_short"]["exact_match,none"] == pytest.approx(0.5)
    assert results["croc_test_choice"]["acc,none"] == pytest.approx(0.5)
    [short_samples] = (tmp_path / "out").glob("*/*_samples_croc_test_short.jsonl")
    responses = {json.loads(line)["doc_id"]: json.loads(line)["filtered_resps"] for line in short_samples.open()}
    assert [responses[0], responses[1]] == reference["answers"]
    [choice_samples] = (tmp_path / "out").glob("*/*_samples_croc_test_choice.jsonl")
    for line in choice_samples.open():
        sample = json.loads(line)
        scores = [float(pair[0]) for pair in sample["filtered_resps"]]
        assert scores == pytest.approx(nlls[sample["doc_id"]], rel=1e-4, abs=1e-4)
    # What the results file carries is what a model card's evaluation results are read from.
    from trainer.eval_results import eval_results_from_lmms_eval

    card_results = {(r.dataset_type, r.metric_type): r.metric_value for r in eval_results_from_lmms_eval(results_file)}
    assert card_results == {("croc_test_short", "exact_match"): pytest.approx(0.5),
                            ("croc_test_choice", "acc"): pytest.approx(0.5)}


@needs_lmms_eval
@pytest.mark.parametrize("batch_size", ["auto", "auto:4", "0", "-2", "eight"])
def test_a_batch_size_the_croc_model_cannot_take_is_refused_before_it_loads(batch_size, tmp_path, monkeypatch):
    """lmms-eval's `--batch_size auto` was taken as 1 without a word."""
    from modeling_croc import evaluation
    from modeling_croc.evaluation.lmms_eval_model import Croc

    monkeypatch.setattr(evaluation, "load_for_evaluation", lambda *args, **kwargs: pytest.fail("loaded"))
    with pytest.raises(ValueError, match=rf"^batch_size '{batch_size}': the croc model takes a whole number of "
                                         r"requests per batch \(lmms-eval's auto search is not implemented here\)"):
        Croc(pretrained=str(tmp_path), batch_size=batch_size)


def test_a_model_folder_that_is_not_there_is_said_to_be_so(tmp_path, monkeypatch):
    """A mistyped or moved folder reached huggingface_hub as a repository id: "Repo id must be in the form ..."."""
    from modeling_croc.evaluation import load_for_evaluation

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny_out" / "stage2").mkdir(parents=True)
    for given in (tmp_path / "tiny_out" / "stag2", "tiny_out/stag2"):  # the second reads as a Hub id, but tiny_out is here
        with pytest.raises(FileNotFoundError, match=rf"^pretrained={given}: nothing at {tmp_path / 'tiny_out' / 'stag2'}"):
            load_for_evaluation(given)


@needs_lmms_eval
def test_lmms_eval_generation_settings():
    from modeling_croc.evaluation.lmms_eval_model import cut_at_stops, generation_settings

    greedy, stops = generation_settings({"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1,
                                         "until": "\n\n"}, "</s>")
    assert greedy == {"max_new_tokens": 16, "num_beams": 1, "do_sample": False} and stops == ["\n\n"]
    sampled, stops = generation_settings({"temperature": 0.7, "top_p": 0.9}, "</s>")
    assert sampled == {"max_new_tokens": 1024, "top_p": 0.9, "do_sample": True, "temperature": 0.7}
    assert stops == ["</s>"]
    assert cut_at_stops("A red square.\n\nUSER: more", ["\n\n"]) == "A red square."


def _vlmevalkit_stand_in(monkeypatch) -> None:
    """STAND-IN for VLMEvalKit, which is not on PyPI: the two pieces of its interface the wrapper relies on, written
    here from VLMEvalKit's documented behaviour (no code of it): `BaseModel` (`generate` checks a message of
    `{"type", "value"}` items and hands it to `generate_inner`; `dump_image` asks the function the runner set) and
    `vlmeval.dataset.DATASET_TYPE` (the dataset's type: `MCQ`, `Y/N`, `VQA`, ...)."""

    class BaseModel:
        def __init__(self):
            self.dump_image_func = None

        def set_dump_image(self, function):
            self.dump_image_func = function

        def dump_image(self, line, dataset):
            return self.dump_image_func(line)

        def generate(self, message, dataset=None):
            assert all(item["type"] in ("text", "image") and "value" in item for item in message)
            return self.generate_inner(message, dataset)

    types_by_dataset = {"MMBench_DEV_EN": "MCQ", "POPE": "Y/N", "TextVQA_VAL": "VQA"}
    package = types.ModuleType("vlmeval")
    vlm = types.ModuleType("vlmeval.vlm")
    base = types.ModuleType("vlmeval.vlm.base")
    dataset = types.ModuleType("vlmeval.dataset")
    base.BaseModel = BaseModel
    dataset.DATASET_TYPE = types_by_dataset.__getitem__
    for name, module in {"vlmeval": package, "vlmeval.vlm": vlm, "vlmeval.vlm.base": base,
                         "vlmeval.dataset": dataset}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "modeling_croc.evaluation.vlmevalkit", raising=False)


def test_vlmevalkit_wrapper_answers_with_llava_prompts(reference, tmp_path, monkeypatch):
    """A VLMEvalKit-style run (custom prompt when the wrapper asks for it, then `generate`) on a multiple-choice and a
    yes/no row: the answers are the model's answers to LLaVA-1.5's prompts, spelled out here."""
    _vlmevalkit_stand_in(monkeypatch)
    from modeling_croc.evaluation.vlmevalkit import croc_models

    models = croc_models({"croc-tiny": str(reference["folder"])}, device="cpu", max_new_tokens=MAX_NEW_TOKENS)
    model = models["croc-tiny"]()
    paths = []
    for index, image in enumerate(_images()):
        paths.append(tmp_path / f"{index}.png")
        image.save(paths[-1])
    model.set_dump_image(lambda line: [str(paths[line["index"]])])
    rows = {"MMBench_DEV_EN": {"index": 0, "question": "Which colour?", "A": "red", "B": "blue",
                               "C": float("nan"), "hint": float("nan")},
            "POPE": {"index": 1, "question": "Is there a square in the image?"}}
    assert not model.use_custom_prompt("TextVQA_VAL")  # open questions keep the dataset's own prompt
    expected_text = {
        "MMBench_DEV_EN": "Which colour?\nA. red\nB. blue\nAnswer with the option's letter from the given choices "
                          "directly.",
        "POPE": "Is there a square in the image?\nAnswer the question using a single word or phrase.",
    }
    checked = CrocForConditionalGeneration.from_pretrained(reference["folder"]).eval()
    processor = CrocProcessor.from_pretrained(reference["folder"])
    for dataset, line in rows.items():
        assert model.use_custom_prompt(dataset)
        message = model.build_prompt(line, dataset)
        assert message == [{"type": "image", "value": str(paths[line["index"]])},
                           {"type": "text", "value": expected_text[dataset]}]
        inputs = processor(images=[Image.open(paths[line["index"]]).convert("RGB")],
                           text=[_vicuna_prompt(expected_text[dataset])], return_tensors="pt")
        with torch.no_grad():
            output = checked.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                      pad_token_id=processor.tokenizer.pad_token_id)
        expected = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert model.generate(message=message, dataset=dataset) == expected
