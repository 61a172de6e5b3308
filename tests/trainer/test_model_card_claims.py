"""What the card claims about the folder it describes, checked against the folder (found by a hostile tester): a
stage-1.5 folder's training-mode forwards, what a LoRA folder holds, whose scores `--eval-results` puts on it, and
the one name the card gives its model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard

from croc_testing.batches import make_batch
from croc_testing.tiny import tiny_croc_config
from modeling_croc import CrocForConditionalGeneration
from modeling_croc.provenance import Provenance
from trainer.model_card import add_eval_results, build_model_card, main
from trainer.stages import get_stage

SWITCH = "`model.config.croc_pretraining = False`"


def _card_body(config, stage: str, parts, model=None, tmp_path: Path = Path("out")) -> str:
    """The text of the card `build_model_card` writes for a run of `stage` on `config` (a stand-in trainer)."""
    args = SimpleNamespace(stage_spec=get_stage(stage), group_learning_rates={"projector": 1e-4}, adam_beta1=0.9,
                           adam_beta2=0.999, weight_decay=0.0, lr_scheduler_type="cosine", warmup_steps=0,
                           num_train_epochs=1, per_device_train_batch_size=1, gradient_accumulation_steps=1,
                           world_size=1, model_max_length=64, template="plain", image_aspect_ratio="square", seed=0,
                           hub_datasets=None, hub_license="apache-2.0", output_dir=str(tmp_path / "out"),
                           hub_eval_results=None, trainable_parts=list(parts))
    trainer = SimpleNamespace(args=args, croc_model=SimpleNamespace(config=config), model=model, accelerator=None,
                              state=SimpleNamespace(log_history=[]), provenance=Provenance())
    return str(build_model_card(trainer)).split("\n---\n", 1)[1]


def test_a_stage15_card_says_training_forwards_run_the_croc_objectives_and_how_to_turn_them_off(tmp_path):
    """A stage-1.5 folder keeps `croc_pretraining: true`: a user's own fine-tuning loop (`model.train()`) got the
    masking and the VTR loss, and the card showed only the bare field. It says so, and names the switch, which is
    checked here to be the right and sufficient one; a stage-2 card does not carry the sentence."""
    config = tiny_croc_config(croc_pretraining=True, prompt_pool_init="normal")
    body = _card_body(config, "1.5", ["projector", "prompt_pool", "vtr_head", "language_model"], tmp_path=tmp_path)
    assert "training-mode forward" in body and SWITCH in body and "`generate` and eval-mode forwards" in body
    config2 = tiny_croc_config(croc_pretraining=False)
    assert SWITCH not in _card_body(config2, "2", ["projector", "language_model"], tmp_path=tmp_path)

    torch.manual_seed(0)
    model = CrocForConditionalGeneration(config)
    batch = make_batch(config)
    with torch.no_grad():
        plain = model.eval()(**batch)
        croc = model.train()(**batch)
        assert not torch.allclose(croc.loss, plain.loss)  # what the card warns of
        model.config.croc_pretraining = False  # what the card says to do
        switched = model.train()(**batch)
    assert torch.equal(switched.logits, plain.logits) and torch.equal(switched.loss, plain.loss)


@pytest.mark.parametrize(("stage", "parts", "held", "not_held"), [
    ("2", ["projector", "language_model"], "with the fully trained projector,", "prompt pool"),
    ("1.5", ["projector", "prompt_pool", "vtr_head", "language_model"],
     "with the fully trained projector, prompt pool, VTR head,", None),
])
def test_a_lora_card_names_the_parts_its_folder_holds_whole(stage, parts, held, not_held, tmp_path):
    """A stage-2 LoRA folder holds the adapters and the projector (PEFT's `modules_to_save`), but its card said "the
    fully trained projector, prompt pool and head": stage 2 trains no pool or head."""
    from trainer.lora import apply_lora
    from trainer.model_loading import apply_trainable_parts

    config = tiny_croc_config(croc_pretraining=stage == "1.5", prompt_pool_init="normal")
    model = CrocForConditionalGeneration(config)
    apply_trainable_parts(model, parts)
    model_args = SimpleNamespace(name_or_path=None, lora_r=2, lora_alpha=4, lora_dropout=0.0, lora_target_modules=["q_proj"],
                                 load_in_4bit=False)
    peft_model = apply_lora(model, model_args, SimpleNamespace(trainable_parts=parts, gradient_checkpointing=False,
                                                               seed=0))
    line = next(line for line in _card_body(config, stage, parts, peft_model, tmp_path).split("\n")
                if line.startswith("This folder holds LoRA adapters"))
    assert held in line, line
    assert not_held is None or not_held not in line, line


def _folder(path: Path, title: str, weights: bytes = b"weights") -> Path:
    """A saved folder as far as `--eval-results` reads it: a card headed `# title` and a weight file."""
    path.mkdir(parents=True)
    (path / "README.md").write_text(f"---\nlicense: apache-2.0\npipeline_tag: image-text-to-text\nlibrary_name: "
                                    f"transformers\n---\n\n# {title}\n\nbody\n")
    (path / "model.safetensors").write_bytes(weights)
    return path


def _results(path: Path, model_args: str | None) -> Path:
    """An lmms-eval results file whose `config.model_args` are `model_args` (None: no model recorded)."""
    config = {"model": "croc", **({"model_args": model_args} if model_args is not None else {})}
    path.write_text(json.dumps({"results": {"pope": {"alias": "pope", "pope_accuracy,none": 0.75}}, "config": config}))
    return path


def _cli(argv) -> str:
    """`python -m trainer.model_card ...`'s one line, printed or stopped with."""
    try:
        main([str(arg) for arg in argv])
    except SystemExit as stop:
        return str(stop.code)
    return ""


def test_eval_results_of_another_model_are_refused_naming_both(tmp_path, monkeypatch, capsys):
    """`--eval-results` put the scores of an lmms-eval run of `pretrained=tiny_out/stage2` on the card of the
    stage-1.5 folder without a word. A results file naming another folder here, or a model not here under another
    name, is refused in one line naming both; `--same-model` takes it (a folder moved and renamed since)."""
    monkeypatch.chdir(tmp_path)
    stage15 = _folder(tmp_path / "tiny_out" / "stage1_5", "stage1_5")
    _folder(tmp_path / "tiny_out" / "stage2", "stage2", b"other weights")
    card = (stage15 / "README.md").read_text()
    for model_args, named in (("pretrained=tiny_out/stage2,device=cpu", str(tmp_path / "tiny_out" / "stage2")),
                              ("pretrained=/elsewhere/stage2,device=cpu", "/elsewhere/stage2"),
                              ("pretrained=someone/croc-stage2", "someone/croc-stage2")):
        message = _cli([stage15, "--eval-results", _results(tmp_path / "r_results.json", model_args)])
        assert message.startswith("model card error: ") and "\n" not in message, message
        assert named in message and str(stage15) in message and "--same-model" in message, message
    assert (stage15 / "README.md").read_text() == card
    assert _cli([stage15, "--eval-results", tmp_path / "r_results.json", "--same-model"]) == ""
    assert "(model not checked (--same-model))" in capsys.readouterr().out
    assert ModelCard.load(stage15 / "README.md").data.eval_results


@pytest.mark.parametrize(("model_args", "note"), [
    ("pretrained=stage1_5,device=cpu", None),  # this folder, relative to the working directory
    ("pretrained=copy_of_it", None),  # a folder with the same weight files
    ("pretrained=/cluster/run/stage1_5,dtype=bfloat16", "scored /cluster/run/stage1_5, not on this machine: taken"),
    ("pretrained=someone/stage1_5", "scored someone/stage1_5, not on this machine: taken as this model by its name"),
    # The documented llava_hf route scores the to-llava export, the same model in another layout (was refused).
    ("pretrained=stage1_5-llava", "scored stage1_5-llava, made from this folder by its card: taken"),
    (None, "records no model: check that it scored this folder"),
])
def test_eval_results_of_this_model_are_taken_saying_what_was_not_confirmed(model_args, note, tmp_path,
                                                                           monkeypatch, capsys):
    """Results of this folder (by path, or a copy of its weights) go on its card without a word; a model not on this
    machine under this folder's name, or a file that records none, goes on saying so in the command's line."""
    monkeypatch.chdir(tmp_path)
    folder = _folder(tmp_path / "stage1_5", "stage1_5")
    shutil.copytree(folder, tmp_path / "copy_of_it")
    export = _folder(tmp_path / "stage1_5-llava", "stage1_5-llava", b"the weights in llava's layout")
    (export / "README.md").write_text("---\nlicense: apache-2.0\n---\n# stage1_5-llava\n\n`stage1_5` exported to its "
                                      "plain parent layout, `llava` (`python -m modeling_croc.convert to-llava`).\n")
    assert _cli([folder, "--eval-results", _results(tmp_path / "r_results.json", model_args)]) == ""
    out = capsys.readouterr().out
    assert out.startswith("1 evaluation results in ") and out.count("\n") == 1, out
    assert (note in out) if note else "(" not in out, out


def test_an_export_of_another_run_s_folder_of_the_same_name_is_refused(tmp_path, monkeypatch, capsys):
    """The export's card names the folder it came from by name only: `seed1/stage2`'s llava export was taken for
    `seed0/stage2`'s (the demo's layout makes such names routine). The tensors both folders hold by name (the
    projector first) must be equal; the export's other layout and extra tensors do not count."""
    import torch
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    projector = "multi_modal_projector.linear_1.weight"
    ours = _folder(tmp_path / "seed0" / "stage2", "stage2")
    save_file({projector: torch.arange(6.0).reshape(2, 3), "model.prompt_pool.weight": torch.ones(4, 3)},
              ours / "model.safetensors")
    for seed, values in (("seed0", torch.arange(6.0)), ("seed1", torch.arange(6.0) + 1)):
        export = _folder(tmp_path / seed / "stage2-llava", "stage2-llava")
        # An export is saved in transformers' current layout, the Croc folder in its legacy one.
        save_file({f"model.{projector}": values.reshape(2, 3), "lm_head.weight": torch.zeros(5, 3)},
                  export / "model.safetensors")
        (export / "README.md").write_text("---\nlicense: apache-2.0\n---\n# stage2-llava\n\n`stage2` exported to its "
                                          "plain parent layout, `llava` (`python -m modeling_croc.convert to-llava`).\n")
    taken = _cli([ours, "--eval-results", _results(tmp_path / "a_results.json", "pretrained=seed0/stage2-llava")])
    assert taken == "" and "made from this folder by its card: taken, no tensor both hold by name differing" in \
        capsys.readouterr().out
    refused = _cli([ours, "--eval-results", _results(tmp_path / "b_results.json", "pretrained=seed1/stage2-llava")])
    assert refused == (f"model card error: {tmp_path / 'b_results.json'} scored seed1/stage2-llava, made from a folder "
                       f"named stage2 by its card, but its model.{projector} differs from {ours}'s: another model; give this "
                       "folder's results (`python -m trainer.model_card FOLDER --eval-results FILE --same-model` "
                       "takes them if it holds this model)")


def test_scores_added_to_a_renamed_copy_name_the_model_as_its_heading_does(tmp_path):
    """Added to a copy of `stage1_5` renamed `s15_eval`, the model-index named the model `s15_eval` under a card
    headed `# stage1_5`. Both say the name the run gave it: the folder's name now is often incidental (a copy made
    to evaluate, a Hub cache's `snapshots/<commit>`)."""
    folder = _folder(tmp_path / "s15_eval", "stage1_5")
    card = add_eval_results(folder, [_results(tmp_path / "r_results.json", None)])
    assert card.data.model_name == "stage1_5" and "\n# stage1_5\n" in card.text
    assert ModelCard.load(folder / "README.md").data.model_name == "stage1_5"


def test_hub_eval_results_of_another_model_are_refused_before_training(tmp_path, monkeypatch):
    """`--hub_eval_results` put another model's scores on the trained folder's card without the check
    `--eval-results` makes (found by a hostile tester): refused with the configuration's other mistakes, before
    anything loads."""
    from trainer.cli import ConfigError
    from trainer.validation import check_hub

    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "stage2", "stage2", b"other weights")
    other = _results(tmp_path / "other_results.json", "pretrained=stage2")
    with pytest.raises(ConfigError, match=r"^hub_eval_results: .*other_results.json scored stage2 .*another model"):
        check_hub({"output_dir": str(tmp_path / "stage1_5"), "hub_eval_results": [str(other)]})
    own = _results(tmp_path / "own_results.json", "pretrained=/cluster/runs/stage1_5")
    check_hub({"output_dir": str(tmp_path / "stage1_5"), "hub_eval_results": [str(own)]})
