"""A newcomer's path on SmolVLM, through the public CLIs: a saved plain SmolVLM folder (laid out as the Hub's) -> Croc's
stage 1.5 with one command -> stage 2 from its output -> a plain SmolVLM folder exported back, which the parent class
loads with the trained weights. Also what the runs feed the model: SmolVLM's chat format, each image as the tiles and
global view (`<fake_token_around_image>`, `<row_r_col_c>`, `<global-img>`, placeholders) its processor writes, and a
batch's views padded as its processor pads them, `pixel_attention_mask` alike."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from trainer_helpers import log_history, run_stage
from transformers import SmolVLMForConditionalGeneration

from croc_testing.smolvlm import SMOLVLM_MAX_GRID, save_tiny_smolvlm
from modeling_croc import CrocSmolVLMForConditionalGeneration, CrocSmolVLMProcessor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from modeling_croc.convert.__main__ import main as convert_main
from trainer.calibration import first_images
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
VIEW_TOKENS = 4
PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


@pytest.fixture(scope="module")
def smolvlm_folder(tmp_path_factory):
    return save_tiny_smolvlm(tmp_path_factory.mktemp("smolvlm") / "plain")


def _rows(tmp_path):
    """Image rows on images of different shapes (so of different grids), and a text row."""
    sizes = {"wide.png": (64, 20), "square.png": (12, 12), "big.png": (40, 44)}
    for index, (name, size) in enumerate(sizes.items()):
        Image.new("RGB", size, (40 * index, 200, 90)).save(tmp_path / name)
    rows = [{"id": name, "image": name, "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image."},
        {"from": "gpt", "value": f"A picture {index}."}]} for index, name in enumerate(sizes)]
    rows.append({"id": "text", "conversations": [{"from": "human", "value": "Name a prime."},
                                                 {"from": "gpt", "value": "Seven."}]})
    return rows


def test_samples_are_the_processors_own(smolvlm_folder, tmp_path):
    config = json.loads((smolvlm_folder / "processor_config.json").read_text())
    assert config["processor_class"] == "SmolVLMProcessor" and not list(smolvlm_folder.glob("*.py"))
    processor = CrocSmolVLMProcessor.from_pretrained(smolvlm_folder)
    assert type(processor.image_processor).__name__ == "SmolVLMImageProcessorPil"
    assert processor.num_image_tokens == (SMOLVLM_MAX_GRID**2 + 1) * VIEW_TOKENS
    tokenizer = processor.tokenizer
    rows = _rows(tmp_path)
    dataset = CrocSupervisedDataset(rows, processor, template="smolvlm", image_root=tmp_path, model_max_length=512)

    # The template's chat template renders what SmolVLM's own renders (text turns too); answered, the processor turns it into the training sample's ids and views.
    template = get_template("smolvlm")
    own = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ours = template.chat_template(tokenizer.eos_token, processor.image_token)
    assert processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False,
                                         chat_template=ours) == own == PROMPT
    turns = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."},
             {"role": "user", "content": [{"type": "text", "text": "And another?"}]}]
    assert processor.apply_chat_template(turns, add_generation_prompt=True, tokenize=False, chat_template=ours) \
        == processor.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    # `SmolVLMProcessor`'s own call (`__call__`, `prepare_inputs_layout`, `replace_image_token` are inherited): the
    # parent class itself cannot be built here (its video processor needs torchvision, its `__init__` num2words).
    parent = processor
    assert all(name not in vars(CrocSmolVLMProcessor) for name in ("__call__", "replace_image_token",
                                                                    "prepare_inputs_layout"))
    model = CrocSmolVLMForConditionalGeneration.from_pretrained(smolvlm_folder)
    samples, views = [], []
    for index, row in enumerate(rows[:3]):
        sample = dataset[index]
        answered = own + " " + row["conversations"][1]["value"] + "<end_of_utterance>\n"
        image = Image.open(tmp_path / row["image"])
        inputs = parent(text=[answered], images=[image], return_tensors="pt")
        assert sample["input_ids"].tolist() == inputs["input_ids"][0].tolist()
        torch.testing.assert_close(sample["pixel_values"], inputs["pixel_values"][0])
        torch.testing.assert_close(sample["pixel_attention_mask"], inputs["pixel_attention_mask"][0])
        supervised = tokenizer.decode(sample["labels"][sample["labels"] != IGNORE_INDEX])
        assert supervised == " " + row["conversations"][1]["value"] + "<end_of_utterance>\n"
        count = int((sample["input_ids"] == processor.image_token_id).sum())
        assert count == VIEW_TOKENS * sample["pixel_values"].shape[0]
        # The model's per-image count, from the token layout alone, is the sample's.
        assert model.image_token_counts(sample["input_ids"][None], 1).tolist() == [count]
        samples.append(sample)
        views.append(sample["pixel_values"].shape[0])
    # A 1 x 2 split, then 2 x 2 ones (SmolVLM resizes every image to the longest edge first), each with its global view.
    assert views == [3, 5, 5]

    # The collator pads every image row to the most views with all-zero views (mask 0), as SmolVLM's processor pads
    # a batch; text rows add none.
    batch = build_collator(processor)([samples[0], dataset[3], samples[1], samples[2]])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values", "pixel_attention_mask"}
    assert batch["pixel_values"].shape == (3, max(views), 3, 16, 16)
    assert batch["pixel_attention_mask"].shape == (3, max(views), 16, 16)
    for row, sample in enumerate(samples):
        torch.testing.assert_close(batch["pixel_values"][row, :views[row]], sample["pixel_values"])
        assert not batch["pixel_values"][row, views[row]:].any()
        assert batch["pixel_attention_mask"][row, :views[row]].all()
        assert not batch["pixel_attention_mask"][row, views[row]:].any()
    # (SmolVLM's processor: a row's views after its own are all zero, their mask 0.)
    padded = parent(text=[PROMPT, PROMPT + PROMPT], images=[[Image.open(tmp_path / "wide.png")],
                                                            [Image.open(tmp_path / "wide.png"),
                                                             Image.open(tmp_path / "square.png")]],
                    padding=True, return_tensors="pt")
    assert padded["pixel_values"].shape[1] == views[0] + views[1]
    assert not padded["pixel_values"][0, views[0]:].any() and not padded["pixel_attention_mask"][0, views[0]:].any()
    counts = model.image_token_counts(batch["input_ids"], batch["pixel_values"].shape[0])
    assert counts.tolist() == [VIEW_TOKENS * count for count in views]
    # The pool calibration reads every view of the first images.
    images = first_images(dataset, 3)
    assert images["pixel_values"].shape == (3, max(views), 3, 16, 16)
    assert images["pixel_attention_mask"].shape == (3, max(views), 16, 16)


def test_stage15_then_stage2_from_a_plain_folder_and_export_back(smolvlm_folder, data_dir, tmp_path):
    out = tmp_path / "stage1_5"
    run_stage("stage1_5_smolvlm.yaml", out, f"--model.name_or_path={smolvlm_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2")
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "croc_smolvlm" and saved["prompt_pool_calibrated"]
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    croc = CrocSmolVLMForConditionalGeneration.from_pretrained(out).eval()
    start = SmolVLMForConditionalGeneration.from_pretrained(smolvlm_folder)
    trained = croc.model.text_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(trained, start.model.text_model.layers[0].self_attn.q_proj.weight)
    processor = CrocSmolVLMProcessor.from_pretrained(out)
    assert processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == PROMPT

    stage2 = tmp_path / "stage2"
    run_stage("stage2.yaml", stage2, f"--model.name_or_path={out}", f"--data.path={data_dir / 'qa.json'}",
              "--max_steps=2")
    saved = json.loads((stage2 / "config.json").read_text())
    assert saved["model_type"] == "croc_smolvlm" and not saved["croc_pretraining"]
    assert json.loads((stage2 / "croc_run.json").read_text())["template"] == "smolvlm"
    assert all(entry["loss"] > 0 for entry in log_history(stage2) if "loss" in entry)

    exported = tmp_path / "exported"
    convert_main(["to-plain", str(out), str(exported)])
    assert json.loads((exported / "config.json").read_text())["model_type"] == "smolvlm"
    assert json.loads((exported / "processor_config.json").read_text())["processor_class"] == "SmolVLMProcessor"
    assert not list(exported.glob("*.py"))  # no remote code: the parent classes load it natively
    plain, info = SmolVLMForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    plain_processor = CrocSmolVLMProcessor.from_pretrained(exported)  # the parent's needs num2words, torchvision
    image = Image.open(data_dir / "images" / "000.png")
    inputs = plain_processor(text=[PROMPT], images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape[1] > 1  # split
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)
