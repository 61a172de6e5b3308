"""What the trainer feeds Gemma 3 (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain folder,
is one case of `test_family_training.py`): Gemma 3's chat format, each image as the block `Gemma3Processor` expands
`<start_of_image>` to, and `token_type_ids` marking the placeholders (Gemma 3's own bidirectional image attention
reads them)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import Gemma3ForConditionalGeneration

from croc_testing.families import tiny_qwen2_5_vl_processor
from croc_testing.gemma3 import GEMMA3_TOKENS_PER_IMAGE, save_tiny_gemma3, tiny_gemma3_processor
from croc_testing.optional import image_processor_backend
from croc_testing.tiny import tiny_croc_processor
from modeling_croc import CrocGemma3Processor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
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


def test_the_processor_loads_with_or_without_torchvision(gemma_folder):
    processor = CrocGemma3Processor.from_pretrained(gemma_folder)
    assert type(processor.image_processor).__name__ == image_processor_backend("Gemma3ImageProcessor")
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




def test_tiny_processor_round_trips(tmp_path):
    processor = tiny_gemma3_processor()
    processor.save_pretrained(tmp_path)
    loaded = CrocGemma3Processor.from_pretrained(tmp_path)
    assert (loaded.image_token_id, loaded.num_image_tokens) == (processor.image_token_id, processor.num_image_tokens)


def test_a_folder_with_pan_and_scan_on_is_one_line_before_the_model_loads(gemma_folder, data_dir, tmp_path):
    """A Gemma 3 folder whose processor has pan-and-scan on cannot train (its crops' blocks are not rendered by the
    training template): the run stops with one configuration line, not a traceback from the length check."""
    import shutil

    from trainer_helpers import run_stage

    from trainer.cli import ConfigError

    folder = tmp_path / "pan_and_scan"
    shutil.copytree(gemma_folder, folder)
    config_file = next(path for path in (folder / "processor_config.json", folder / "preprocessor_config.json")
                       if path.is_file())
    settings = json.loads(config_file.read_text())
    (settings.get("image_processor", settings))["do_pan_and_scan"] = True
    config_file.write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match="processor cannot train: pan-and-scan"):
        run_stage("stage1_5_gemma3.yaml", tmp_path / "out", f"--model.name_or_path={folder}",
                  f"--data.path={data_dir / 'detailed.json'}", "--max_steps=1")


def test_packing_is_one_line_before_the_model_loads(gemma_folder, data_dir, tmp_path, monkeypatch):
    """Gemma 3's model refuses packed rows (its sliding layers read the image blocks at the sample's positions): the
    trainer refuses `--packing=true` with that one line before the model loads, in both stages; it ended the first
    packed forward in a ValueError traceback, after the model loaded."""
    from trainer_helpers import run_stage

    from trainer import train as train_module
    from trainer.cli import ConfigError

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(train_module, "load_model_and_processor", never)
    for config, data in (("stage1_5_gemma3.yaml", "detailed.json"), ("stage2.yaml", "qa.json")):
        with pytest.raises(ConfigError, match="^packing=true: Gemma 3's sliding layers") as refused:
            run_stage(config, tmp_path / config, f"--model.name_or_path={gemma_folder}",
                      f"--data.path={data_dir / data}", "--packing=true", "--max_steps=1")
        assert "\n" not in str(refused.value)


def test_the_official_preset_trains_with_its_bert_head(gemma_folder, data_dir, tmp_path):
    """Gemma 3's images have a fixed token count, so the released head (`vtr_head='bert'`, the `official` preset) is
    not refused: its position embedding has one row per image token (`mm_tokens_per_image`; a Gemma 3 config has no
    `image_seq_length`, which the head read: an AttributeError traceback from the argument checks)."""
    from trainer_helpers import log_history, run_stage

    from modeling_croc import CrocGemma3ForConditionalGeneration

    out = tmp_path / "official"
    run_stage("stage1_5_gemma3.yaml", out, f"--model.name_or_path={gemma_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--croc_preset=official", "--max_steps=2")
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(entry["vtr_loss"])) for entry in logged)
    model = CrocGemma3ForConditionalGeneration.from_pretrained(out)
    assert model.config.vtr_head == "bert"
    assert model.vtr_head.position_embedding.num_embeddings == GEMMA3_TOKENS_PER_IMAGE
