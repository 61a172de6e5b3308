"""save_pretrained / from_pretrained round trips, llava checkpoints and the Auto classes (trust_remote_code through
every Auto class: tests/test_transformers_contract.py)."""

import json

import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, LlavaForConditionalGeneration

from croc_testing.batches import make_batch
from modeling_croc import CrocConfig, CrocForConditionalGeneration, CrocModel
from modeling_croc.convert import croc_config_to_llava


def _model(config):
    torch.manual_seed(0)
    return CrocForConditionalGeneration(config).eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_round_trip_has_no_missing_or_unexpected_keys(make_config, tmp_path):
    croc = _model(make_config(croc_preset="official"))
    croc.save_pretrained(tmp_path)
    loaded, info = CrocForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in croc.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert loaded.config.croc_preset == "official" and loaded.config.vtr_head_layers == 1


def test_auto_classes_resolve_croc(make_config, tmp_path):
    config = make_config()
    _model(config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CrocConfig)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), CrocForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(tmp_path), CrocModel)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "croc"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocForConditionalGeneration")


def test_loading_a_llava_checkpoint_reports_zero_missing_keys(make_config, tmp_path):
    config = make_config()
    torch.manual_seed(1)
    llava = LlavaForConditionalGeneration(croc_config_to_llava(config)).eval()
    llava.save_pretrained(tmp_path)
    croc, info = CrocForConditionalGeneration.from_pretrained(
        tmp_path, config=config, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = make_batch(config)
    # The llava reference runs sdpa and Croc eager here: equal to float tolerance, not bit for bit.
    torch.testing.assert_close(_logits(croc.eval(), batch), _logits(llava, batch), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(croc.lm_head.weight, llava.lm_head.weight)


def test_processor_round_trip_keeps_llava_settings_and_template(tmp_path, sp_tokenizer):
    from PIL import Image
    from transformers import AutoProcessor

    from croc_testing.tiny import tiny_croc_processor
    from modeling_croc import CrocProcessor

    processor = tiny_croc_processor(tokenizer=sp_tokenizer)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, CrocProcessor)
    assert (loaded.patch_size, loaded.num_additional_image_tokens, loaded.num_image_tokens) == (14, 1, 16)
    assert loaded.chat_template == processor.chat_template
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = loaded.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.endswith("USER: <image>\nWhat is it? ASSISTANT:")
    inputs = loaded(images=[Image.new("RGB", (90, 60), "red")], text=[prompt], return_tensors="pt")
    assert int((inputs["input_ids"] == 32000).sum()) == 16
    assert inputs["pixel_values"].shape == (1, 3, 56, 56)
