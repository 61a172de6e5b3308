"""A newcomer's path on every Croc family, through the public CLIs: a saved plain folder (laid out as the Hub's) ->
Croc's stage 1.5 with one command -> stage 2 from its output -> a plain folder exported back, which the parent class
loads with the trained weights and runs to the Croc model's logits. One test per `TrainerSpec`
(`croc_testing/trainer_specs.py`); what only a family's samples do is in its `test_<name>_stage15.py`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from trainer_helpers import CONFIGS, log_history, read_json, run_stage
from transformers import AutoProcessor

from croc_testing.trainer_specs import MESSAGES, TRAINER_SPECS, TrainerSpec
from modeling_croc.convert.__main__ import main as convert_main
from trainer import train as train_module

LOADING_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def _check_plain_folder(spec: TrainerSpec, folder: Path) -> None:
    """A plain folder as the Hub's: the parent's model type and processor class, no code of this package."""
    assert read_json(folder / "config.json")["model_type"] == spec.name
    processor = read_json(folder / "processor_config.json")
    assert processor["processor_class"] == spec.processor_class and "auto_map" not in processor
    assert not list(folder.glob("*.py"))  # no remote code: the parent classes load it natively
    _check_parent_processor_loads(folder)


def _check_parent_processor_loads(folder: Path) -> None:
    """transformers' `AutoProcessor` builds the parent's processor from the folder, every part included: where
    torchvision is missing, only the parts that need it may stop it, in transformers' own torchvision message (a
    video processor left out of the folder sent it looking for a `video_preprocessor_config.json` instead)."""
    try:
        AutoProcessor.from_pretrained(folder)
    except ValueError as error:  # a part needing torchvision (a video processor)
        assert "requires `torchvision`" in str(error), error
    except ImportError as error:  # a processor class needing torchvision (Pixtral's)
        assert "requires the Torchvision library" in str(error), error


@pytest.mark.parametrize("spec", TRAINER_SPECS, ids=str)
def test_a_plain_folder_holds_every_part_of_its_parent_processor(spec: TrainerSpec, tmp_path: Path) -> None:
    """A plain folder written as the Hub's (the tiny folders, and `convert to-plain` through the same
    `name_parent_processor`) loads in transformers' `AutoProcessor`, the video processor and Gemma 4's audio
    feature extractor included, which the project's processors leave out."""
    _check_parent_processor_loads(spec.save_plain(tmp_path / "plain"))


@pytest.mark.parametrize("spec", TRAINER_SPECS, ids=str)
def test_stages_from_a_plain_folder_and_export_back(spec: TrainerSpec, data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 1.5 from a plain folder trains both objectives (`loss = lm + 10 * vtr`) and calibrates the pool; stage 2
    from its output trains the plain objective in the family's default template; the export loads in the parent
    class with no key left over and gives the Croc model's logits to the bit."""
    plain_folder = spec.save_plain(tmp_path / "plain")
    _check_plain_folder(spec, plain_folder)
    out, stage2 = tmp_path / "stage1_5", tmp_path / "stage2"
    with spec.watch_training() if spec.watch_training else contextlib.nullcontext():
        run_stage(spec.config, out, f"--model.name_or_path={plain_folder}",
                  f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2", *spec.stage_args)
        run_stage("stage2.yaml", stage2, f"--model.name_or_path={out}", f"--data.path={data_dir / 'qa.json'}",
                  "--max_steps=2", *spec.stage_args)

    saved = read_json(out / "config.json")
    assert saved["model_type"] == f"croc_{spec.name}" and saved["prompt_pool_calibrated"]
    assert read_json(out / "croc_run.json")["template"] == spec.template
    # The card's tags name the family the model is (they said `llava` for every family).
    tags = ModelCard.load(out / "README.md").data.tags
    assert spec.name in tags and ("llava" in tags) == (spec.name == "llava")
    # The Croc folder carries its processor's code (and what that imports) for trust_remote_code.
    assert {path.name for path in out.glob("processing_croc*.py")} == spec.croc_code
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    croc = spec.croc_generation.from_pretrained(out).eval()
    trained, initial = croc.state_dict(), spec.parent_generation.from_pretrained(plain_folder).state_dict()
    for name in spec.trained:
        assert not torch.equal(trained[name], initial[name]), name
    for name in spec.frozen:
        assert torch.equal(trained[name], initial[name]), name
    if spec.prompt is not None:  # the saved processor prompts with the family's own image placeholder
        processor = spec.croc_processor.from_pretrained(out)
        assert processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == spec.prompt

    saved = read_json(stage2 / "config.json")
    assert saved["model_type"] == f"croc_{spec.name}" and not saved["croc_pretraining"]
    # No template named (the stage's YAML is LLaVA's): the family's own chat format.
    assert read_json(stage2 / "croc_run.json")["template"] == spec.template
    logged = [entry for entry in log_history(stage2) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # the plain objective alone
        assert entry["loss"] > 0 and entry["lm_loss"] > 0 and "vtr_loss" not in entry
    if spec.refuses_packing:  # images of their own token count cannot be packed: refused in one line
        monkeypatch.setattr(sys, "argv", ["trainer.train", str(CONFIGS / "stage2.yaml"),
                                          f"--output_dir={tmp_path / 'p'}", f"--model.name_or_path={out}",
                                          "--packing=true", f"--data.path={data_dir / 'qa.json'}"])
        refusal = spec.packing_refusal or f"croc_{spec.name} images have a token count of their own"
        with pytest.raises(SystemExit, match=refusal):
            train_module.cli()

    exported = tmp_path / "exported"
    convert_main(["to-plain", str(out), str(exported)])
    _check_plain_folder(spec, exported)
    plain, info = spec.parent_generation.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in LOADING_PROBLEMS), info
    processor_class = spec.export_processor or spec.croc_processor
    processor = processor_class.from_pretrained(exported)
    assert type(processor) is processor_class
    inputs = spec.logits_inputs(processor, data_dir)
    assert spec.inputs_layout is None or spec.inputs_layout(processor, inputs)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)
