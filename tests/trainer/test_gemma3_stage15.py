"""A newcomer's path on Gemma 3, through the public CLIs: a saved plain Gemma 3 folder (laid out as the Hub's) ->
Croc's stage 1.5 with one command -> stage 2 from its output -> a plain Gemma 3 folder exported back, which the
parent class loads with the trained weights. Also what the runs feed the model: Gemma 3's chat format, each image as
the block `Gemma3Processor` expands `<start_of_image>` to, and `token_type_ids` marking the placeholders (Gemma 3's
own bidirectional image attention reads them)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from trainer_helpers import log_history, run_stage
from transformers import Gemma3ForConditionalGeneration, Gemma3Processor
from transformers.models.gemma3 import modeling_gemma3

from croc_testing.families import tiny_qwen2_5_vl_processor
from croc_testing.gemma3 import GEMMA3_TOKENS_PER_IMAGE, save_tiny_gemma3, tiny_gemma3_processor
from croc_testing.tiny import tiny_croc_processor
from modeling_croc import CrocGemma3ForConditionalGeneration, CrocGemma3Processor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from modeling_croc.convert.__main__ import main as convert_main
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset
from trainer.stages import parameter_group

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory):
    return save_tiny_gemma3(tmp_path_factory.mktemp("gemma3") / "plain")


def _image_rows(data_dir, count=2):
    rows = json.loads((data_dir / "detailed.json").read_text())
    return [row for row in rows if "image" in row][:count]


def test_the_processor_loads_without_torchvision(gemma_folder):
    processor = CrocGemma3Processor.from_pretrained(gemma_folder)
    assert type(processor.image_processor).__name__ == "Gemma3ImageProcessorPil"
    # The dataset's placeholder is Gemma 3's `<image_soft_token>` (the config's image_token_index), not the
    # `<start_of_image>` marker `Gemma3Processor` calls its image_token_id.
    config = json.loads((gemma_folder / "config.json").read_text())
    assert processor.image_token_id == config["image_token_index"] != processor.tokenizer.boi_token_id
    assert processor.num_image_tokens == config["mm_tokens_per_image"] == GEMMA3_TOKENS_PER_IMAGE
    processor.image_processor.do_pan_and_scan = True
    with pytest.raises(ValueError, match="pan-and-scan"):
        processor.num_image_tokens  # noqa: B018


def test_samples_are_in_gemma3s_own_format(gemma_folder, data_dir):
    processor = CrocGemma3Processor.from_pretrained(gemma_folder)
    tokenizer = processor.tokenizer
    dataset = CrocSupervisedDataset(_image_rows(data_dir), processor, template="gemma3", image_root=data_dir,
                                    model_max_length=512)
    # Every image row's length is known before its image is read (a fixed count per image).
    assert all(fit.verdict == "whole" for fit in dataset.fit_rows(_image_rows(data_dir)))
    samples = [dataset[0], dataset[1]]
    for sample, row in zip(samples, _image_rows(data_dir)):
        ids = sample["input_ids"].tolist()
        assert ids[0] == tokenizer.bos_token_id
        start = ids.index(tokenizer.boi_token_id)
        tokens = GEMMA3_TOKENS_PER_IMAGE
        assert ids[start + 1:start + 1 + tokens] == [processor.image_token_id] * tokens
        assert ids[start + 1 + tokens] == tokenizer.convert_tokens_to_ids("<end_of_image>")
        assert ids.count(processor.image_token_id) == tokens
        assert tokenizer.decode(ids).startswith("<bos><start_of_turn>user\n\n\n<start_of_image><image_soft_token>")
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != IGNORE_INDEX])
        assert supervised == row["conversations"][1]["value"] + "<end_of_turn>\n"
        assert sample["pixel_values"].shape == (3, 16, 16)

    # The template's chat template renders what Gemma 3's own renders for one image + text turn (BOS aside: the
    # tokenizer adds it), and the processor turns that prompt, answered, into the training sample's tokens and pixels.
    template = get_template("gemma3")
    own = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    processor.chat_template = template.chat_template(tokenizer.eos_token, processor.image_token)
    ours = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert own == tokenizer.bos_token + ours == ("<bos><start_of_turn>user\n<start_of_image>Describe the image."
                                                 "<end_of_turn>\n<start_of_turn>model\n")
    row = _image_rows(data_dir)[0]
    answered = ours + row["conversations"][1]["value"] + "<end_of_turn>\n"
    image = Image.open(data_dir / row["image"])
    inputs = processor(text=[answered], images=[image], return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == samples[0]["input_ids"].tolist()
    torch.testing.assert_close(inputs["pixel_values"][0], samples[0]["pixel_values"])

    # The collator pads and writes `token_type_ids` as the processor does: 1 at the placeholders, text rows too.
    text_row = json.loads((data_dir / "detailed.json").read_text())[-1]
    text_sample = CrocSupervisedDataset([text_row], processor, template="gemma3")[0]
    batch = build_collator(processor)([samples[0], text_sample, samples[1]])
    assert batch["pixel_values"].shape == (2, 3, 16, 16)
    assert torch.equal(batch["token_type_ids"], (batch["input_ids"] == processor.image_token_id).long())
    assert batch["token_type_ids"].sum() == 2 * GEMMA3_TOKENS_PER_IMAGE and not batch["token_type_ids"][1].any()
    width = inputs["token_type_ids"].shape[1]
    assert torch.equal(batch["token_type_ids"][0, :width], inputs["token_type_ids"][0])
    # Collators of processors that return no image token types write none (Qwen2.5-VL's are `mm_token_type_ids`).
    assert not build_collator(tiny_croc_processor()).token_type_ids
    assert not build_collator(tiny_qwen2_5_vl_processor()).token_type_ids


def test_every_gemma3_parameter_has_a_group(gemma_folder):
    model = Gemma3ForConditionalGeneration.from_pretrained(gemma_folder)
    groups = {name: parameter_group(name) for name, _ in model.named_parameters()}
    assert None not in groups.values()
    assert {group for name, group in groups.items() if "multi_modal_projector" in name} == {"projector"}
    assert {group for name, group in groups.items() if "vision_tower" in name} == {"vision_tower"}


def test_stage15_then_stage2_from_a_plain_folder_and_export_back(gemma_folder, data_dir, tmp_path, monkeypatch):
    # What reaches Gemma 3's own forward: the image placeholders' `token_type_ids` (their sum per call).
    seen = []
    parent_forward = modeling_gemma3.Gemma3Model.forward

    def spy(self, *args, **kwargs):
        types = kwargs.get("token_type_ids")
        seen.append(None if types is None else int(types.sum()))
        return parent_forward(self, *args, **kwargs)

    monkeypatch.setattr(modeling_gemma3.Gemma3Model, "forward", spy)
    out = tmp_path / "stage1_5"
    run_stage("stage1_5_gemma3.yaml", out, f"--model.name_or_path={gemma_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2")
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "croc_gemma3" and saved["prompt_pool_calibrated"]
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    croc = CrocGemma3ForConditionalGeneration.from_pretrained(out).eval()
    start = Gemma3ForConditionalGeneration.from_pretrained(gemma_folder)
    trained = croc.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(trained, start.model.language_model.layers[0].self_attn.q_proj.weight)
    # The saved processor prompts with Gemma 3's own image marker, which it expands to the trained block.
    processor = CrocGemma3Processor.from_pretrained(out)
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt == "<start_of_turn>user\n<start_of_image>Describe the image.<end_of_turn>\n<start_of_turn>model\n"

    # Stage 2 from the stage-1.5 folder: instruction tuning in the same format, Croc objectives off.
    stage2 = tmp_path / "stage2"
    run_stage("stage2.yaml", stage2, f"--model.name_or_path={out}",
              f"--data.path={data_dir / 'qa.json'}", "--max_steps=2")
    saved = json.loads((stage2 / "config.json").read_text())
    assert saved["model_type"] == "croc_gemma3" and not saved["croc_pretraining"]
    # No template named: the family's own chat format, not the stage's (Vicuna v1).
    assert json.loads((stage2 / "croc_run.json").read_text())["template"] == "gemma3"
    assert all(entry["loss"] > 0 for entry in log_history(stage2) if "loss" in entry)
    # Every training forward of both stages got the placeholders' types (4 image rows of 4 tokens a micro-batch at
    # most; text-only micro-batches carry zeros).
    assert seen and None not in seen and max(seen) > 0
    monkeypatch.undo()

    exported = tmp_path / "exported"
    convert_main(["to-plain", str(out), str(exported)])
    assert json.loads((exported / "config.json").read_text())["model_type"] == "gemma3"
    assert json.loads((exported / "processor_config.json").read_text())["processor_class"] == "Gemma3Processor"
    assert not list(exported.glob("*.py"))  # no remote code: the parent classes load it natively
    plain, info = Gemma3ForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    plain_processor = Gemma3Processor.from_pretrained(exported)
    assert type(plain_processor) is Gemma3Processor
    image = Image.open(data_dir / "images" / "000.png")
    inputs = plain_processor(text=["<start_of_image>Describe the image."], images=[image], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)


def test_tiny_processor_round_trips(tmp_path):
    processor = tiny_gemma3_processor()
    processor.save_pretrained(tmp_path)
    loaded = CrocGemma3Processor.from_pretrained(tmp_path)
    assert (loaded.image_token_id, loaded.num_image_tokens) == (processor.image_token_id, processor.num_image_tokens)
