"""What the trainer feeds Idefics3 beyond SmolVLM's path (`test_smolvlm_stage15.py`; its end-to-end path, plain
folder -> stage 1.5 -> stage 2 -> exported plain folder, is one case of `test_family_training.py`): its checkpoint's
chat format (SmolVLM's opened by Llama 3's BOS, which the template writes once) and the samples of transformers' own
`Idefics3Processor`, which, without a video processor, is built here as it is."""

from __future__ import annotations

import torch
from PIL import Image
from trainer_helpers import shaped_image_rows
from transformers import Idefics3Processor

from croc_testing.idefics3 import IDEFICS3_BOS, save_tiny_idefics3
from modeling_croc import CrocIdefics3Processor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
PROMPT = "<|begin_of_text|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


def _text(value: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": value}]


def test_samples_are_the_checkpoints_chat_format_and_the_processors_own(tmp_path):
    folder = save_tiny_idefics3(tmp_path / "plain")
    processor = CrocIdefics3Processor.from_pretrained(folder)
    parent = Idefics3Processor.from_pretrained(folder)  # the checkpoint's chat template (`idefics3_chat_template`)
    ours = get_template("idefics3").chat_template(processor.tokenizer.eos_token, processor.image_token)
    system = [{"role": "system", "content": _text("Be brief.")}]
    turns = [{"role": "user", "content": _text("Name a prime.")}, {"role": "assistant", "content": _text("Seven.")},
             {"role": "user", "content": _text("And another?")}]
    for messages in (MESSAGES, turns, system + MESSAGES):
        assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             chat_template=ours) \
            == parent.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert parent.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == PROMPT

    rows = shaped_image_rows(tmp_path, {"wide.png": (64, 20), "square.png": (12, 12)})
    dataset = CrocSupervisedDataset(rows, processor, template="idefics3", image_root=tmp_path, model_max_length=512)
    bos = processor.tokenizer.convert_tokens_to_ids(IDEFICS3_BOS)
    assert processor.tokenizer.bos_token_id == bos
    for index, row in enumerate(rows[:2]):
        sample = dataset[index]
        answer = " " + row["conversations"][1]["value"] + "<end_of_utterance>\n"
        inputs = parent(text=[PROMPT + answer], images=[Image.open(tmp_path / row["image"])], return_tensors="pt")
        # The BOS the template writes, once; then the ids and views `Idefics3Processor` gives the answered prompt.
        assert sample["input_ids"][0] == bos and sample["input_ids"][1] != bos
        assert sample["input_ids"].tolist() == inputs["input_ids"][0].tolist()
        torch.testing.assert_close(sample["pixel_values"], inputs["pixel_values"][0])
        assert processor.tokenizer.decode(sample["labels"][sample["labels"] != IGNORE_INDEX]) == answer
