"""save_pretrained / from_pretrained round trips, llava checkpoints and the Auto classes (trust_remote_code through
every Auto class: tests/test_transformers_contract.py)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
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
    croc = _model(config)
    croc.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CrocConfig)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), CrocForConditionalGeneration)
    base, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(base, CrocModel) and not info["missing_keys"], info
    for name, tensor in croc.model.state_dict().items():  # the pool too
        torch.testing.assert_close(base.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
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


def _onevision_model_and_batch():
    from croc_testing.batches import make_anyres_batch
    from croc_testing.tiny import tiny_croc_onevision_config
    from modeling_croc import CrocOnevisionForConditionalGeneration

    torch.manual_seed(0)
    model = CrocOnevisionForConditionalGeneration(tiny_croc_onevision_config(vocab_size=128))
    sizes = [[20, 50], [60, 30]]
    counts = model.image_token_counts(None, 2, image_sizes=torch.tensor(sizes))
    batch = make_anyres_batch(model.config, sizes, counts, [1, 1], left_pad=1)
    batch.pop("labels")
    return model, batch


@pytest.mark.parametrize("family", ["CrocForConditionalGeneration", "CrocOnevisionForConditionalGeneration"])
def test_trust_remote_code_in_a_fresh_process_without_the_package(make_config, tmp_path, family):
    """A saved folder carries its modelling code (both model families, with the shared stage-1.5 module)."""
    if family == "CrocForConditionalGeneration":
        config = make_config()
        croc = _model(config)
        batch = make_batch(config)
    else:
        croc, batch = _onevision_model_and_batch()
    croc.save_pretrained(tmp_path / "model")
    torch.save({"batch": batch, "logits": _logits(croc, batch)}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["modeling_croc"] = None  # make sure the installed package cannot be used
        import torch
        from transformers import AutoModelForImageTextToText
        model, info = AutoModelForImageTextToText.from_pretrained(
            {str(tmp_path / "model")!r}, trust_remote_code=True, output_loading_info=True)
        assert type(model).__name__ == {family!r}, type(model)
        assert not type(model).__module__.startswith("modeling_croc"), type(model).__module__
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            logits = model.eval()(**expected["batch"]).logits
        torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-5)  # sdpa vs eager
        print("remote-ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
                                 # a site put first on the path (gpu_check.sh's wheelhouse) stays first
                                 **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}})
    assert "remote-ok" in result.stdout, result.stderr[-3000:]


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


def test_load_croc_takes_a_hub_id_from_the_cache(tmp_path, monkeypatch):
    """`load_croc("org/name")` (what `--model.name_or_path` accepts) reads the repository's snapshot: here a Hub
    cache laid out as huggingface_hub writes it, offline."""
    import shutil

    import huggingface_hub.constants

    from croc_testing.tiny import save_tiny_croc
    from modeling_croc.loading import load_croc

    saved = save_tiny_croc(tmp_path / "saved")
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny-croc" / "snapshots" / ("0" * 40)
    shutil.copytree(saved, snapshot)
    (cache / "models--org--tiny-croc" / "refs").mkdir()
    (cache / "models--org--tiny-croc" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    model, processor = load_croc("org/tiny-croc")
    reference, reference_processor = load_croc(saved)
    assert processor.tokenizer.get_vocab() == reference_processor.tokenizer.get_vocab()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("with_package", [False, True])

def test_the_model_cards_instructions_load_a_saved_folder_with_and_without_the_package(make_config, tmp_path,
                                                                                        with_package):
    """The two calls the model card tells a reader to run (`trainer.model_card`), copied from it verbatim with REPO
    set to a saved folder, in a fresh process: without the Croc package (only the folder's own code) and with it."""
    import re

    from croc_testing.tiny import tiny_croc_processor
    from trainer.model_card import LOAD_MODEL, LOAD_PROCESSOR, install_instructions

    croc = _model(make_config())
    croc.save_pretrained(tmp_path / "model")
    tiny_croc_processor().save_pretrained(tmp_path / "model")
    calls = re.findall(r"`(Auto\w+\.from_pretrained\(REPO[^`]*\))`", install_instructions())
    assert calls == [LOAD_MODEL.strip("`"), LOAD_PROCESSOR.strip("`")]
    block = "" if with_package else 'sys.modules["modeling_croc"] = None  # only the folder\'s code'
    script = textwrap.dedent(f"""
        import sys
        {block}
        from transformers import AutoModelForImageTextToText, AutoProcessor
        REPO = {str(tmp_path / "model")!r}
        model = {calls[0]}
        processor = {calls[1]}
        print("loaded", type(model).__name__, type(processor).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
                                 # a site put first on the path (gpu_check.sh's wheelhouse) stays first
                                 **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}})
    assert "loaded CrocForConditionalGeneration CrocProcessor" in result.stdout, result.stderr[-3000:]


def test_from_parts_takes_hub_ids_from_the_cache(tmp_path, monkeypatch):
    """`convert from-parts openai/clip-vit-large-patch14-336 lmsys/vicuna-7b-v1.5 OUT`, as TRAINING.md shows it, read
    the language model's weights from a folder named by the id (none: "no *.safetensors ... weights in org/llm"),
    though the model was in the Hub cache."""
    import shutil

    import huggingface_hub.constants

    from croc_testing.tiny import save_tiny_parts
    from modeling_croc.convert.__main__ import main

    parts, cache = tmp_path / "parts", tmp_path / "hub"
    save_tiny_parts(parts)
    for part in ("clip", "llm"):
        repo = cache / f"models--org--{part}"
        shutil.copytree(parts / part, repo / "snapshots" / ("0" * 40))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    main(["from-parts", "org/clip", "org/llm", str(tmp_path / "from_hub")])
    main(["from-parts", str(parts / "clip"), str(parts / "llm"), str(tmp_path / "from_folders")])
    from_hub, from_folders = (CrocForConditionalGeneration.from_pretrained(tmp_path / name).state_dict()
                              for name in ("from_hub", "from_folders"))
    for name, tensor in from_folders.items():
        if "prompt_pool" not in name and "multi_modal_projector" not in name and "vtr_head" not in name:
            assert torch.equal(from_hub[name], tensor), name
