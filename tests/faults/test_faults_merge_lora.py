"""`python -m trainer.merge_lora`, the hostile tester's breaks: adapter weights their adapter_config.json does not
describe (dropped unread, or missing and merged as the base's) gave a wrong merged model with exit 0; a processor
that does not load, or a Ctrl-C, after the merged weights were written left a folder that loads as a model and
that every rerun refused; a name over 255 bytes was a traceback. Each is one `merge error:` line, nothing at --out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from run_cases import listing
from safetensors.torch import load_file, save_file

from modeling_croc import CrocForConditionalGeneration
from modeling_croc.loading import load_processor
from trainer.merge_lora import main

PROJECTOR = "model.multi_modal_projector"
V_PROJ = "model.language_model.layers.{}.self_attn.v_proj.lora_{}.weight"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
NOT_MATCHING = ("the adapter config and weights do not match (was one edited or cut after saving?): not merged, "
                "nothing was written")


@pytest.fixture(scope="module")
def lora_run(tiny_model, tmp_path_factory) -> Path:
    """An adapter folder as a LoRA run leaves it: adapters on q_proj and v_proj (not zero: a merge changes the
    weights), the projector whole (`modules_to_save`, changed), the processor, the base named by its folder."""
    from peft import LoraConfig, get_peft_model

    run = tmp_path_factory.mktemp("merge_lora") / "run"
    torch.manual_seed(0)
    peft_model = get_peft_model(CrocForConditionalGeneration.from_pretrained(tiny_model), LoraConfig(
        r=2, lora_alpha=4, target_modules=r".*language_model.*\.(q_proj|v_proj)", modules_to_save=[PROJECTOR],
        init_lora_weights=False))
    with torch.no_grad():  # the projector trained too: its copy is no longer the base's
        for name, parameter in peft_model.named_parameters():
            if ".modules_to_save." in name:
                parameter.add_(0.5)
    peft_model.save_pretrained(run)
    config = run / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(tiny_model)}))
    load_processor(tiny_model).save_pretrained(run)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _merge_error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert "\n" not in message, message
    return message


def _nothing_written(tmp_path: Path, run: Path, before: list) -> None:
    """No --out, no staging folder left next to it, the adapter folder as it was."""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    assert listing(run) == before


def test_adapter_weights_the_adapter_config_places_nowhere_are_refused(lora_run, tmp_path):
    """adapter_config.json edited to fewer target_modules: PEFT left the v_proj adapters in the file unread and the
    merge wrote the base's v_proj, exit 0."""
    run = _copy(lora_run, tmp_path)
    config = run / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "target_modules": r".*language_model.*\.(q_proj)"}))
    before = listing(run)
    unused = ", ".join(V_PROJ.format(*key) for key in ((0, "A"), (0, "B"), (1, "A")))
    assert _merge_error([str(run), "--out", str(tmp_path / "merged")]) == (
        f"merge error: {run}: {ADAPTER_WEIGHTS} holds 4 adapter weights with no place in the model its "
        f"adapter_config.json describes ({unused} and 1 more); {NOT_MATCHING}")
    _nothing_written(tmp_path, run, before)


def _drop(run: Path, dropped: str) -> int:
    """Remove the tensors whose names hold `dropped` from the run's adapter weights file; how many."""
    weights = load_file(run / ADAPTER_WEIGHTS)
    kept = {name: tensor for name, tensor in weights.items() if dropped not in name}
    save_file(kept, run / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    return len(weights) - len(kept)


def test_adapter_weights_missing_from_the_file_are_refused(lora_run, tmp_path):
    """adapter_model.safetensors without the v_proj adapters: PEFT only warned, lora_B stayed zero and those layers
    merged as the base's, exit 0."""
    run = _copy(lora_run, tmp_path)
    assert _drop(run, "v_proj") == 4
    before = listing(run)
    missing = ", ".join(V_PROJ.format(*key) for key in ((0, "A"), (0, "B"), (1, "A")))
    assert _merge_error([str(run), "--out", str(tmp_path / "merged")]) == (
        f"merge error: {run}: {ADAPTER_WEIGHTS} lacks 4 adapter weights its adapter_config.json asks for ({missing} "
        f"and 1 more): those layers would merge as the base's; {NOT_MATCHING}")
    _nothing_written(tmp_path, run, before)


def test_a_tensor_missing_from_a_module_saved_whole_is_refused(lora_run, tmp_path):
    """The projector (`modules_to_save`) without one of its tensors in the adapter weights file: PEFT's loading
    raised a KeyError traceback."""
    run = _copy(lora_run, tmp_path)
    assert _drop(run, f"{PROJECTOR}.linear_1.weight") == 1
    before = listing(run)
    assert _merge_error([str(run), "--out", str(tmp_path / "merged")]) == (
        f"merge error: {run}: {ADAPTER_WEIGHTS} lacks {PROJECTOR}.linear_1.weight, a weight of a module its "
        f"adapter_config.json saves whole (modules_to_save); {NOT_MATCHING}")
    _nothing_written(tmp_path, run, before)


@pytest.mark.parametrize("name, content, error", [
    ("processor_config.json", "[]", "AttributeError: 'list' object has no attribute 'get'"),
    ("tokenizer.json", None, "")])
def test_a_processor_that_does_not_load_is_refused_before_anything_is_written(lora_run, tmp_path, name, content,
                                                                               error):
    """The processor loaded after the merged weights were written: a processor_config.json that is a list (an
    AttributeError traceback) or a tokenizer.json cut short left a folder that loads as a model at --out, which
    every rerun refused as "already holds files"."""
    run = _copy(lora_run, tmp_path)
    path = run / name
    if content is None:
        os.truncate(path, path.stat().st_size // 2)
    else:
        path.write_text(content)
    before = listing(run)
    message = _merge_error([str(run), "--out", str(tmp_path / "merged")])
    assert message.startswith(f"merge error: {run}: its processor (processor_config.json and the tokenizer) does "
                              f"not load: {error}"), message
    _nothing_written(tmp_path, run, before)


def test_a_merge_interrupted_after_the_weights_leaves_nothing_and_the_rerun_merges(lora_run, tmp_path, monkeypatch,
                                                                                   capsys):
    """Ctrl-C right after `save_pretrained` left 17 files at --out, a folder that loads as a model, and the rerun
    refused it. Now the merge is written beside --out and renamed into place when whole; the rerun writes the
    merge PEFT gives, with the processor and the card."""
    from peft import PeftModel

    run = _copy(lora_run, tmp_path)
    before = listing(run)
    save = transformers.PreTrainedModel.save_pretrained

    def save_then_ctrl_c(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", save_then_ctrl_c)
    with pytest.raises(SystemExit) as stop:
        main([str(run), "--out", str(tmp_path / "merged")])
    assert stop.value.code == 130  # one line, not a KeyboardInterrupt traceback
    assert capsys.readouterr().err.splitlines()[-1] == ("merge error: interrupted (Ctrl-C) before the merge had "
                                                        f"finished: nothing was written to {tmp_path / 'merged'}")
    _nothing_written(tmp_path, run, before)
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", save)
    main([str(run), "--out", str(tmp_path / "merged")])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged", "run"]
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json"} <= {
        path.name for path in (tmp_path / "merged").iterdir()}
    base = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
    expected = PeftModel.from_pretrained(CrocForConditionalGeneration.from_pretrained(base), str(run)
                                         ).merge_and_unload().state_dict()
    merged = CrocForConditionalGeneration.from_pretrained(tmp_path / "merged").state_dict()
    assert set(merged) == set(expected)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, expected[name], msg=name)
    base_weights = CrocForConditionalGeneration.from_pretrained(base).state_dict()
    changed = {name for name, tensor in merged.items() if not torch.equal(tensor, base_weights[name])}
    assert any("v_proj" in name for name in changed) and any("multi_modal_projector" in name for name in changed)


def test_a_staging_folder_a_killed_merge_left_is_removed_and_a_link_is_not_followed(lora_run, tmp_path):
    """A merge killed outright (SIGKILL) leaves its hidden staging folder: the next merge into that --out removes
    it (its process is gone), and leaves alone a link of that name and what it points to; an empty --out the user
    made takes the merge."""
    run = _copy(lora_run, tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(gone.stdout)
    stale = tmp_path / f".merged.merging-{pid}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (tmp_path / f".merged.merging-{pid}-4567cdef").symlink_to(mine, target_is_directory=True)
    (tmp_path / "merged").mkdir()
    main([str(run), "--out", str(tmp_path / "merged")])
    assert sorted(path.name for path in tmp_path.iterdir()) == [f".merged.merging-{pid}-4567cdef", "merged", "mine",
                                                                "run"]
    assert listing(mine) == [("notes.txt", 4)]
    assert load_file(tmp_path / "merged" / "model.safetensors")


@pytest.mark.parametrize("where", ["--out", "ADAPTER_DIR", "--base"])
def test_a_name_over_255_bytes_is_one_line(lora_run, tmp_path, where):
    """`--out` (or the adapter folder, or --base) with a component over 255 bytes: `Path.exists()` raised
    "[Errno 36] File name too long" as a traceback."""
    long = tmp_path / ("x" * 300)
    argv = {"--out": [str(lora_run), "--out", str(long / "merged")],
            "ADAPTER_DIR": [str(long), "--out", str(tmp_path / "merged")],
            "--base": [str(lora_run), "--out", str(tmp_path / "merged"), "--base", str(long)]}[where]
    assert _merge_error(argv) == (f"merge error: {where}: the name {'x' * 40}... is 300 bytes long, over the 255 a "
                                  "file or folder name may have (nothing was written)")
    assert list(tmp_path.iterdir()) == []
