"""What the trainer feeds Idefics3 beyond SmolVLM's path (`test_smolvlm_stage15.py`; its end-to-end path, plain
folder -> stage 1.5 -> stage 2 -> exported plain folder, is one case of `test_family_training.py`): its checkpoint's
chat format (SmolVLM's opened by Llama 3's BOS, which the template writes once) and the samples of transformers' own
`Idefics3Processor`, which, without a video processor, is built here as it is."""

from __future__ import annotations

import pytest
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


def test_a_smolvlm_run_on_an_idefics3_folder_trains_on_the_ids_the_chat_path_feeds(tmp_path):
    """SmolVLM-Instruct's case: an idefics3 folder trained with `template: smolvlm`, whose chat template writes no
    BOS. The rows began with the tokenizer's BOS whether or not it adds one, and the chat path (and transformers'
    `apply_chat_template(tokenize=True)`) puts it only where the tokenizer adds it: with one that adds none, every
    row had a BOS that inference never sees. Both tokenizers now give the chat path's ids up to the answer."""
    from modeling_croc.chat import _special_tokens, user_turn

    processor = CrocIdefics3Processor.from_pretrained(save_tiny_idefics3(tmp_path / "plain"))
    tokenizer = processor.tokenizer
    processor.chat_template = get_template("smolvlm").chat_template(tokenizer.eos_token, processor.image_token)
    rows = shaped_image_rows(tmp_path, {"wide.png": (64, 20)})
    for adds_bos in (False, True):
        tokenizer.add_bos_token = adds_bos
        dataset = CrocSupervisedDataset(rows, processor, template="smolvlm", image_root=tmp_path, model_max_length=512)
        for index, row in enumerate(rows):
            sample = dataset[index]
            answer_start = int((sample["labels"] != IGNORE_INDEX).nonzero()[0])
            images = [Image.open(tmp_path / row["image"]).convert("RGB")] if "image" in row else []
            text = row["conversations"][0]["value"].replace("<image>\n", "")
            prompt = processor.apply_chat_template([user_turn(images, text)], add_generation_prompt=True)
            inputs = processor(images=[images] if images else None, text=[prompt], return_tensors="pt",
                               **_special_tokens(tokenizer, [prompt]))
            assert sample["input_ids"][:answer_start].tolist() == inputs["input_ids"][0].tolist(), (adds_bos, index)


def test_a_template_whose_special_tokens_the_tokenizer_lacks_is_refused_before_the_run(tmp_path):
    """SmolVLM-Instruct / -Base / -500M are idefics3 folders with SmolVLM's tokenizer, which has no
    `<|begin_of_text|>`: a run that left `template` at the family's default (idefics3) trained every row, and saved a
    chat template, opening with that marker as 16 tokens of text. Refused in one line before the model loads; the
    SmolVLM template the docs name trains."""
    import json

    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from croc_testing.idefics3 import tiny_croc_idefics3_config
    from croc_testing.smolvlm import (
        SMOLVLM_MAX_GRID,
        SMOLVLM_VIEW_SIZE,
        save_tiny_smolvlm,
        smolvlm_bpe_tokenizer,
    )
    from trainer.cli import ConfigError
    from trainer.resolve import resolve_config

    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": SMOLVLM_MAX_GRID * SMOLVLM_VIEW_SIZE},
                                                max_image_size={"longest_edge": SMOLVLM_VIEW_SIZE})
    processor = CrocIdefics3Processor(image_processor=image_processor, tokenizer=smolvlm_bpe_tokenizer(),
                                      image_seq_len=tiny_croc_idefics3_config().view_tokens())
    folder = save_tiny_smolvlm(tmp_path / "smolvlm_instruct", processor=processor, plain_config_class=Idefics3Config,
                               plain_model_class=Idefics3ForConditionalGeneration)
    (tmp_path / "data.json").write_text(json.dumps(shaped_image_rows(tmp_path, {"square.png": (12, 12)})))
    argv = ["trainer/configs/cpu_tiny/stage1_5_idefics3.yaml", f"--model.name_or_path={folder}",
            f"--data.path={tmp_path / 'data.json'}", f"--output_dir={tmp_path / 'out'}"]
    with pytest.raises(ConfigError, match=r"the idefics3 template writes <\|begin_of_text\|>, which the model's "
                                          r"tokenizer does not have .*template: smolvlm") as refusal:
        resolve_config(argv)
    assert "\n" not in str(refusal.value)
    assert resolve_config([*argv, "--template=smolvlm"]).training.template == "smolvlm"
