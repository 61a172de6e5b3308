"""What the trainer feeds SmolVLM (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain folder,
is one case of `test_family_training.py`): SmolVLM's chat format, each image as the tiles and global view
(`<fake_token_around_image>`, `<row_r_col_c>`, `<global-img>`, placeholders) its processor writes, and a batch's
views padded as its processor pads them, `pixel_attention_mask` alike."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from trainer_helpers import shaped_image_rows

from croc_testing.smolvlm import SMOLVLM_MAX_GRID, save_tiny_smolvlm
from modeling_croc import CrocSmolVLMForConditionalGeneration, CrocSmolVLMProcessor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from trainer.calibration import first_images
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
VIEW_TOKENS = 4
PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


@pytest.fixture(scope="module")
def smolvlm_folder(tmp_path_factory):
    return save_tiny_smolvlm(tmp_path_factory.mktemp("smolvlm") / "plain")


SIZES = {"wide.png": (64, 20), "square.png": (12, 12), "big.png": (40, 44)}  # (width, height): different shapes, so different grids


def test_samples_are_the_processors_own(smolvlm_folder, tmp_path):
    processor = CrocSmolVLMProcessor.from_pretrained(smolvlm_folder)
    assert type(processor.image_processor).__name__ == "SmolVLMImageProcessorPil"
    assert processor.num_image_tokens == (SMOLVLM_MAX_GRID**2 + 1) * VIEW_TOKENS
    tokenizer = processor.tokenizer
    rows = shaped_image_rows(tmp_path, SIZES)
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


def test_a_bos_the_template_writes_is_not_added_twice(smolvlm_folder, tmp_path):
    """SmolVLM's format opens every conversation with `<|im_start|>`; a tokenizer that also names it its BOS (as a
    checkpoint's may) must not give a sample that starts with it twice."""
    processor = CrocSmolVLMProcessor.from_pretrained(smolvlm_folder)
    processor.tokenizer.bos_token = "<|im_start|>"
    start = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert processor.tokenizer.bos_token_id == start
    rows = shaped_image_rows(tmp_path, {"square.png": (12, 12)})
    sample = CrocSupervisedDataset(rows, processor, template="smolvlm", image_root=tmp_path, model_max_length=512)[0]
    assert sample["input_ids"][0] == start and sample["input_ids"][1] != start
