"""`python -m modeling_croc.convert` under a hostile tester: an interrupt while OUT was written left a folder that
loaded as a model without its processor; `"$OUT"` unset with --overwrite replaced the current folder's files; a
name over 255 bytes, a processor_config.json that is a list, a vision feature layer the tower lacks and a source that
is neither a folder nor a cached Hub model each ended in a traceback, the Hub client's "couldn't connect", or a
folder that failed on every image at inference. Each is one `convert error:` line before anything loads, and OUT is
written whole or not at all."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from transformers import LlavaForConditionalGeneration, PreTrainedModel

from modeling_croc.convert.__main__ import main

NOT_CACHED = (r" is no local folder \(nothing at {at}\) and, as a Hub id, not in the Hub cache, and the Hub is "
              r"switched off \(HF_HUB_OFFLINE=1\)")


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """A tiny 1-layer CLIP tower and a tiny Llama with its tokenizer: the two sources of from-parts."""
    from croc_testing.tiny import save_tiny_parts

    return save_tiny_parts(tmp_path_factory.mktemp("parts"))


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def _message(argv: list[str]) -> str:
    """The line `main(argv)` exits with (exit status 1); fails if it wrote a traceback instead."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert "\n" not in message and message.startswith("convert error: "), message
    return message


def _interrupt_after_the_weights(monkeypatch) -> None:
    """Ctrl-C right after the weights are saved, while OUT's processor and card are still to come."""
    save = PreTrainedModel.save_pretrained

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_interrupt)


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_interrupted_conversion_leaves_no_out_and_the_old_out_as_it_was(overwrite, tiny_model, tmp_path,
                                                                         monkeypatch, capsys):
    """Interrupted after the weights, OUT held config.json and model.safetensors without a processor: it loaded as a
    model and failed on the first image. Under --overwrite the old OUT was already half written over."""
    out = tmp_path / "exports" / "llava"
    if overwrite:
        shutil.copytree(tiny_model, out)
        before = _files(out)
    _interrupt_after_the_weights(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        main(["to-llava", str(tiny_model), str(out), *(["--overwrite"] if overwrite else [])])
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"convert error: interrupted (Ctrl-C): nothing was written to OUT {out}, which is as it was")
    if overwrite:
        assert _files(out) == before
        assert [path.name for path in (tmp_path / "exports").iterdir()] == ["llava"]  # no staging folder left
    else:
        assert not (tmp_path / "exports").exists()  # neither OUT nor the parent made for it


def test_a_staging_folder_a_kill_left_does_not_block_a_rerun(tiny_model, tmp_path):
    out = tmp_path / "llava"
    staging = tmp_path / ".llava.convert-partial"
    staging.mkdir()
    (staging / "model.safetensors").write_text("cut short by kill -9")
    main(["to-llava", str(tiny_model), str(out)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["llava"]
    assert LlavaForConditionalGeneration.from_pretrained(out) is not None
    assert (out / "processor_config.json").is_file()


def test_a_kill_between_the_renames_gives_the_old_out_back(tiny_model, tmp_path):
    """Killed after the old OUT was moved aside and before the new one took its place: the next run puts it back
    before it checks OUT, so that it is refused without --overwrite and replaced whole with it."""
    out, aside = tmp_path / "llava", tmp_path / ".llava.convert-replaced"
    shutil.copytree(tiny_model, aside)
    before = _files(aside)
    assert _message(["to-llava", str(tiny_model), str(out)]).startswith(f"convert error: OUT {out} already holds files")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["llava"] and _files(out) == before
    out.rename(aside)
    main(["to-llava", str(tiny_model), str(out), "--overwrite"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["llava"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava"


def test_overwrite_replaces_out_whole(tiny_model, tmp_path):
    """Written file by file over the old OUT, a sharded model's shards and index stayed next to the new
    model.safetensors, and transformers loaded the stale index."""
    out = tmp_path / "llava"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "llava"}')
    (out / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (out / "model-00001-of-00002.safetensors").write_text("old")
    main(["to-llava", str(tiny_model), str(out)] + ["--overwrite"])
    assert not {"model.safetensors.index.json", "model-00001-of-00002.safetensors"} & set(_files(out))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["llava"]


def test_overwrite_replaces_only_a_model_folder(tiny_model, tmp_path):
    """Replaced whole, a folder of the user's files given as OUT would lose them all: --overwrite takes a model
    folder (an earlier conversion's), nothing else."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    message = _message(["to-llava", str(tiny_model), str(out), "--overwrite"])
    assert message == (f"convert error: OUT {out} holds files (notes.txt) but no config.json, so no model folder that "
                       "--overwrite may replace whole: choose a new or empty folder")
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_model_folder_holding_more_than_a_model(tiny_model, tmp_path):
    """A training run's folder has a config.json too: replaced whole, its checkpoints, records and the user's notes
    went with it. --overwrite replaces a folder holding only what a model folder holds."""
    out = tmp_path / "my_run"
    shutil.copytree(tiny_model, out)
    (out / "checkpoint-500").mkdir()
    (out / "checkpoint-500" / "model.safetensors").write_text("w")
    (out / "NOTES.md").write_text("3 weeks of notes")
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    message = _message(["to-llava", str(tiny_model), str(out), "--overwrite"])
    assert message == (f"convert error: OUT {out} holds NOTES.md, checkpoint-500/ besides a model, which replacing "
                       "OUT would delete: --overwrite replaces only a model folder whole; move them out or choose a "
                       "new folder")
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before
    assert (out / "NOTES.md").read_text() == "3 weeks of notes"
    (out / "NOTES.md").unlink()
    shutil.rmtree(out / "checkpoint-500")
    (out / ".cache" / "huggingface").mkdir(parents=True)  # `hf download --local-dir`'s metadata
    for name in ("tekken.json", "spiece.model", "vocab.json", "merges.txt"):  # other families' tokenizer files
        (out / name).write_text("{}")
    main(["to-llava", str(tiny_model), str(out), "--overwrite"])
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava"


def test_out_that_holds_the_source_is_refused_even_with_overwrite(tiny_model, tmp_path):
    """Replacing OUT whole would delete a source inside it."""
    source = tmp_path / "work" / "croc"
    shutil.copytree(tiny_model, source)
    before = _files(source)
    message = _message(["to-llava", str(source), str(tmp_path / "work"), "--overwrite"])
    assert message == (f"convert error: OUT {tmp_path / 'work'} holds the source folder {source}, which replacing "
                       "OUT would delete: choose a new folder")
    assert _files(source) == before


@pytest.mark.parametrize("argv, label", [
    (["to-llava", "{model}", "", "--overwrite"], "OUT"),
    (["to-llava", "", "out"], "SRC"),
    (["from-parts", "", "{llm}", "out"], "VISION"),
    (["from-parts", "{clip}", " ", "out"], "LLM"),
    (["from-original", "{model}", "out", "--vision-tower="], "--vision-tower"),
])
def test_an_empty_argument_is_one_line_and_the_current_folder_is_left_alone(argv, label, tiny_model, parts,
                                                                            tmp_path, monkeypatch):
    """`"$OUT"` with OUT unset named the current folder (Path("") is "."), and --overwrite replaced its config.json."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"mine": true}')
    argv = [arg.format(model=tiny_model, **parts) for arg in argv]
    assert _message(argv) == f"convert error: {label} is empty (an unset variable in the command?); name a folder"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == '{"mine": true}'


@pytest.mark.parametrize("where", ["OUT", "SRC", "VISION"])
def test_a_name_over_255_bytes_is_one_line(where, tiny_model, parts, tmp_path):
    """Path.exists() raised [Errno 36] File name too long as a traceback."""
    long = tmp_path / ("é" * 150)  # 300 bytes
    argv = {"OUT": ["to-llava", str(tiny_model), str(long / "out")],
            "SRC": ["to-llava", str(long), str(tmp_path / "out")],
            "VISION": ["from-parts", str(long), str(parts["llm"]), str(tmp_path / "out")]}[where]
    assert _message(argv) == (f"convert error: {where}: the name {'é' * 40}... is 300 bytes long, over the 255 a file "
                              "or folder name may have")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("processor_config, words", [
    ("[]", r"its processor \(processor_config.json and the tokenizer\) does not load: AttributeError: 'list' object"),
    ("patch_size=0", r"its processor_config.json gives patch_size 0, but the vision tower's patches are 14 pixels: "
                     r"every image's <image> tokens would be counted wrong; set it to the tower's patch_size$"),
    ("patch_size=7", r"its processor_config.json gives patch_size 7, but the vision tower's patches are 14 pixels"),
    ("patch_size=None", r"its processor_config.json gives patch_size None, but"),
])
def test_a_processor_config_that_cannot_count_image_tokens_is_refused(processor_config, words, tiny_model, tmp_path):
    """A list ended in transformers' AttributeError traceback; patch_size 0 (or another than the tower's) was exported
    with exit status 0 into a folder that failed on every image."""
    source = tmp_path / "croc"
    shutil.copytree(tiny_model, source)
    if processor_config.startswith("patch_size="):
        config = json.loads((source / "processor_config.json").read_text())
        config["patch_size"] = json.loads(processor_config.split("=")[1].replace("None", "null"))
        processor_config = json.dumps(config)
    (source / "processor_config.json").write_text(processor_config)
    message = _message(["to-llava", str(source), str(tmp_path / "out")])
    assert re.match(re.escape(f"convert error: {source}: ") + words, message), message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layer", [99, 2, -3])
def test_a_vision_feature_layer_the_tower_lacks_is_refused(layer, parts, tmp_path):
    """Written with exit status 0, the folder raised IndexError on every image at inference."""
    message = _message(["from-parts", str(parts["clip"]), str(parts["llm"]), str(tmp_path / "out"),
                        "--vision-feature-layer", str(layer)])
    assert message == (f"convert error: vision feature layer {layer} is not in the tower {parts['clip']}: its 1 "
                       "layer(s) give 2 hidden states, indexed -2..1 (the default -2 is the second to last)")
    assert not (tmp_path / "out").exists()


def test_the_valid_feature_layers_are_those_transformers_llava_indexes(parts):
    """The range checked is the one Llava's `hidden_states[vision_feature_layer]` takes: n + 1 hidden states."""
    import torch
    from transformers import CLIPVisionModel

    from modeling_croc.convert.common import vision_tower_config
    from modeling_croc.convert.from_parts import check_feature_layer

    tower = CLIPVisionModel.from_pretrained(parts["clip"])
    hidden = tower(torch.zeros(1, 3, 56, 56), output_hidden_states=True).hidden_states
    config = vision_tower_config(parts["clip"])
    for layer in range(-4, 4):
        if -len(hidden) <= layer < len(hidden):
            check_feature_layer(parts["clip"], config, layer)
        else:
            with pytest.raises(ValueError, match="is not in the tower"):
                check_feature_layer(parts["clip"], config, layer)


@pytest.mark.parametrize("argv, label, missing", [
    (["to-llava", "outputs/nothing", "out"], "SRC", "outputs/nothing"),
    (["from-parts", "clip-vit-large-patch14-336", "vicuna-7b-v1.5", "out"], "VISION", "clip-vit-large-patch14-336"),
    (["from-parts", "{clip}", "vicuna-7b-v1.5", "out"], "LLM", "vicuna-7b-v1.5"),
    (["from-original", "{llm}", "out", "--vision-tower", "clip-vit-large-patch14-336"], "--vision-tower",
     "clip-vit-large-patch14-336"),
])
def test_a_source_that_is_no_folder_and_no_cached_hub_model_is_named(argv, label, missing, parts, tmp_path,
                                                                     monkeypatch):
    """A folder not made yet was read as a Hub id: transformers' "couldn't connect to huggingface.co ... check your
    internet connection", without saying which of from-parts' two parts it was."""
    monkeypatch.chdir(tmp_path)
    message = _message([arg.format(**parts) for arg in argv])
    assert re.match(re.escape(f"convert error: {label} {missing}")
                    + NOT_CACHED.format(at=re.escape(str(tmp_path / missing))), message), message
    assert "huggingface.co" not in message
    assert sorted(tmp_path.iterdir()) == []
