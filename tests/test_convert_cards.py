"""What a converted folder says about itself and what a conversion says about a folder that is no model: every
conversion's card is titled with OUT's name (not the hidden staging folder's), names the command run and holds no
local path; a LoRA adapter folder given as a model is said to be one, with the command that merges it."""

import pytest
import torch
from huggingface_hub import ModelCard

from croc_testing.tiny import tiny_croc_config
from modeling_croc import CrocForConditionalGeneration
from modeling_croc.convert.__main__ import main


@pytest.fixture
def croc_folder(tmp_path):
    torch.manual_seed(0)
    CrocForConditionalGeneration(tiny_croc_config(vocab_size=32064, image_token_id=32000, pad_token_id=32001)
                                 ).save_pretrained(tmp_path / "src")
    return tmp_path / "src"


def _card(folder):
    text = (folder / "README.md").read_text()
    assert ".convert-partial" not in text and str(folder.parent) not in text, text  # no staging name, no local path
    return ModelCard.load(folder / "README.md")


@pytest.mark.parametrize("command", ["to-llava", "to-plain"])
def test_an_export_and_its_conversion_back_are_carded_with_outs_name_and_the_command_run(command, croc_folder,
                                                                                          tmp_path):
    """The card was headed `# .lic-llava.convert-partial` (the staging folder's name) and the to-llava one said it
    came from `to-plain` (found by a hostile tester)."""
    (croc_folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a stage\n")
    main([command, str(croc_folder), str(tmp_path / "plain")])
    card = _card(tmp_path / "plain")
    assert card.text.lstrip().startswith("# plain\n\n`src` exported to its plain parent layout, `llava` "
                                         f"(`python -m modeling_croc.convert {command}`)"), card.text
    assert card.data.license == "apache-2.0"
    main(["from-llava", str(tmp_path / "plain"), str(tmp_path / "back")])
    card = _card(tmp_path / "back")
    assert card.text.lstrip().startswith("# back\n\n`plain` converted to the Croc layout "
                                         "(`python -m modeling_croc.convert from-llava`)"), card.text
    assert card.data.license == "apache-2.0"


def test_a_conversion_of_a_source_without_a_licence_still_gets_a_card(croc_folder, tmp_path):
    """Without a licence in the source's card the export had no README at all: pushed to the Hub it said neither
    what it is nor where it came from. Now `license: unknown`, as a trained stage's card says it."""
    main(["to-llava", str(croc_folder), str(tmp_path / "plain")])
    card = _card(tmp_path / "plain")
    assert card.data.license == "unknown" and card.text.lstrip().startswith("# plain\n\n`src` exported")
    assert "none stated in its card" in card.text


@pytest.mark.parametrize("command", ["to-llava", "from-llava"])
def test_a_lora_adapter_folder_is_said_to_be_one_with_the_merge_command(command, tmp_path):
    """`to-llava` on a LoRA run's adapters ended in transformers' "Unrecognized model ... Should have a `model_type`
    key in its config.json", about a config.json the folder never had."""
    adapter = tmp_path / "lora run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        main([command, str(adapter), str(tmp_path / "out")])
    assert str(stop.value.code) == (
        f"convert error: SRC {adapter} is a LoRA adapter folder (adapter_config.json, no config.json), not a model: "
        f"merge it into one with `python -m trainer.merge_lora '{adapter}' --out MERGED [--base BASE]` (BASE: the "
        "model it was trained on, when adapter_config.json's is not here) and use MERGED")
    assert not (tmp_path / "out").exists()
