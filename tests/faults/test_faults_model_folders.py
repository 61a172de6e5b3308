"""A model folder that does not load is one line, before the run writes anything: weights its config.json does not
describe (missing, with no place, of another shape: a config edited after saving), a weights file cut short or not
safetensors, a sharded folder whose index names an absent shard or is not JSON, a config.json that is not a JSON
object, processor files that do not load, and one broken part of a stage-1 pair. Each ended
`python -m trainer.train` in a traceback (a ValueError from `load_pretrained_croc`, safetensors' error, a
FileNotFoundError) after the run record was written into output_dir, or passed silently (a folder edited to fewer
layers trained on the weights its config still named and dropped the rest). The export and the chat keep the same
rule (found by a hostile tester: a silent partial export, a chat answering from random layers)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from run_cases import cli_error, run_argv
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def _edit_config(**changes) -> Callable[[Path], None]:
    """Set `changes` (`section.key` for a sub-config) in config.json, as a user editing it after saving."""
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            *sections, name = key.split(".")
            node = config
            for section in sections:
                node = node[section]
            node[name] = value
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _truncate(name: str = WEIGHTS) -> Callable[[Path], None]:
    def cut(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return cut


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def _shard(index_text: str | None = None) -> Callable[[Path], None]:
    """Split the weights into two shards and keep the first only (an interrupted download); `index_text`: the index
    as written instead of the real one."""
    def split(folder: Path) -> None:
        state = load_file(str(folder / WEIGHTS))
        names = sorted(state)
        shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        first = "model-00001-of-00002.safetensors"
        save_file({name: state[name] for name in shards[first]}, str(folder / first), metadata={"format": "pt"})
        index = {"metadata": {}, "weight_map": {name: shard for shard, names in shards.items() for name in names}}
        (folder / "model.safetensors.index.json").write_text(index_text or json.dumps(index))
        (folder / WEIGHTS).unlink()
    return split


def _as_bin(then: Callable[[Path], None]) -> Callable[[Path], None]:
    """The weights as a `pytorch_model.bin` (older Hub folders), then `then` on it."""
    def convert(folder: Path) -> None:
        import torch

        torch.save(load_file(str(folder / WEIGHTS)), folder / "pytorch_model.bin")
        (folder / WEIGHTS).unlink()
        then(folder)
    return convert


def _image_size(size) -> Callable[[Path], None]:
    """The image processor's `size` hand-edited (to `{height, width}`, as other families write it, or a number)."""
    def edit(folder: Path) -> None:
        config = json.loads((folder / "processor_config.json").read_text())
        config["image_processor"]["size"] = size
        (folder / "processor_config.json").write_text(json.dumps(config))
    return edit


MODEL = "configuration error: model.name_or_path={folder} cannot be loaded: "
# case: (the tiny folder it breaks, how, the line's words; {folder} is the broken folder). "croc": a tiny Croc
# (LLaVA layout) folder, run as stage 1.5 and 2; "qwen2_5_vl": a plain Hub-layout Qwen2.5-VL folder (stage 1.5);
# "clip" / "llm": one part of a stage-1 pair.
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "more layers than weights": ("croc", _edit_config(**{"text_config.num_hidden_layers": 3}),
                                 MODEL + r"9 weights missing: \['model.language_model.layers.2."),
    "fewer layers than weights": ("croc", _edit_config(**{"text_config.num_hidden_layers": 1}),
                                  MODEL + "9 weights with no place in the model its config.json describes: "
                                          r"\['model.language_model.layers.1."),
    "weights of another shape": ("croc", _edit_config(**{"text_config.intermediate_size": 48}),
                                 MODEL + "6 weights of the wrong shape for its config.json"),
    "truncated weights": ("croc", _truncate(), MODEL + "a weights file is not valid safetensors .*: cut short or "
                                                       "corrupt; copy or download it again"),
    "weights not safetensors": ("croc", _write(WEIGHTS, "<html>rate limited</html>"),
                                MODEL + "a weights file is not valid safetensors"),
    "a shard absent": ("croc", _shard(), MODEL + "its weights cannot be read: .*model-00002-of-00002.safetensors"),
    "a shard index not JSON": ("croc", _shard("{cut"), MODEL + "a weights index is not valid JSON"),
    "pytorch_model.bin cut short": ("croc", _as_bin(_truncate("pytorch_model.bin")),
                                    MODEL + "a weights file is not a valid PyTorch checkpoint .*: cut short"),
    "pytorch_model.bin a web page": ("croc", _as_bin(_write("pytorch_model.bin", "<html>rate limited</html>")),
                                     MODEL + r"a weights file is not a PyTorch checkpoint \(UnpicklingError\)"),
    "config.json not JSON": ("croc", _write("config.json", '{"model_type": "croc",'),
                             r"configuration error: {folder}/config.json:1:23: not valid JSON"),
    "config.json not an object": ("croc", _write("config.json", "[]"),
                                  r"configuration error: {folder}/config.json is not a JSON object"),
    "tokenizer.json corrupt": ("croc", _write("tokenizer.json", "{cut"),
                               MODEL + r"its processor \(processor_config.json and the tokenizer\) does not load: "
                                       "JSONDecodeError"),
    "image processor config gone": ("croc", lambda folder: (folder / "processor_config.json").unlink(),
                                    r"configuration error: {folder} has no processor"),
    "plain Qwen2.5-VL, layers edited": ("qwen2_5_vl", _edit_config(**{"text_config.num_hidden_layers": 1,
                                                                      "text_config.layer_types": ["full_attention"]}),
                                        MODEL + "12 weights with no place in the model its config.json describes"),
    "plain Qwen2.5-VL, truncated weights": ("qwen2_5_vl", _truncate(), MODEL + "a weights file is not valid safetensors"),
    "plain Qwen2.5-VL, image size as height and width": (
        "qwen2_5_vl", _image_size({"height": 448, "width": 448}),
        r"configuration error: the model's processor cannot train: its image processor's size .* gives no pixel "
        "budget"),
    "plain Qwen2.5-VL, image size a number": ("qwen2_5_vl", _image_size(448), r"configuration error: the model's "
                                              "processor cannot train: its image processor's size"),
    "pair: tower of more layers than weights": (
        "clip", _edit_config(num_hidden_layers=2),
        r"configuration error: model.vision_tower={folder} cannot be loaded: vision tower weights 16 missing"),
    "pair: truncated tower": ("clip", _truncate(), r"configuration error: model.vision_tower={folder} cannot be "
                                                   "loaded: a weights file is not valid safetensors"),
    "pair: language model of another shape": (
        "llm", _edit_config(intermediate_size=48),
        r"configuration error: model.language_model={folder} cannot be loaded: 3 weights of the wrong shape"),
    "pair: language model without weights": (
        "llm", lambda folder: (folder / WEIGHTS).unlink(),
        r"configuration error: model.language_model={folder} cannot be loaded: its weights cannot be read: no "
        r"\*.safetensors"),
}
# The runs each case is checked in: (YAML, overrides). Stage 1 rejects the small folder's two text rows (its `plain`
# format trains an image's caption), over the default budget: the budget is raised so the model's error is the one met.
STAGE1 = ("stage1.yaml", ["--data.max_reject_fraction=0.5"])
RUNS = {"croc": [("stage1_5.yaml", []), ("stage2.yaml", [])],
        "qwen2_5_vl": [("stage1_5_qwen2_5_vl.yaml", []), ("stage1_5_qwen2_5_vl.yaml", ["--stage=2"])],
        "clip": [STAGE1], "llm": [STAGE1]}


@pytest.fixture(scope="module")
def sources(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """One tiny saved folder of each kind; every case breaks a copy."""
    from croc_testing.families import save_tiny_qwen2_5_vl
    from croc_testing.tiny import save_tiny_parts

    root = tmp_path_factory.mktemp("model_sources")
    return {"croc": tiny_model, "qwen2_5_vl": save_tiny_qwen2_5_vl(root / "qwen2_5_vl"), **save_tiny_parts(root)}


@pytest.mark.parametrize("case", CASES)
def test_a_model_folder_that_does_not_load_is_one_line_and_writes_nothing(case, sources, data, tmp_path,
                                                                           monkeypatch):
    kind, breaker, words = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(sources[kind], folder)
    breaker(folder)
    for i, (config, overrides) in enumerate(RUNS[kind]):
        out = tmp_path / f"runs-{i}" / "out"  # its parent absent too: neither may be left behind
        if kind in ("clip", "llm"):
            parts = {"clip": sources["clip"], "llm": sources["llm"], kind: folder}
            model = ["--model.name_or_path=null", f"--model.vision_tower={parts['clip']}",
                     f"--model.language_model={parts['llm']}"]
        else:
            model = [f"--model.name_or_path={folder}"]
        argv = [arg for arg in run_argv(config, out, folder, data, *model, *overrides)
                if kind not in ("clip", "llm") or not arg.startswith(f"--model.name_or_path={folder}")]
        message = cli_error(argv, monkeypatch)  # a SystemExit with this line: exit status 1, no traceback
        assert re.match(words.format(folder=re.escape(str(folder))), message), (config, overrides, message)
        assert not out.parent.exists(), (config, overrides, sorted(out.parent.rglob("*")))


def test_a_folder_that_did_not_load_leaves_an_existing_output_dir_as_it_was(sources, data, tmp_path, monkeypatch):
    """The run record, the rejects file and the lock are written only once the model loaded: a rerun with the folder
    mended, or another, finds output_dir as the user left it."""
    folder = tmp_path / "model"
    shutil.copytree(sources["croc"], folder)
    _truncate()(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    message = cli_error(run_argv("stage1_5.yaml", out, folder, data), monkeypatch)
    assert message.startswith(MODEL.format(folder=folder)), message
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]


# The other commands that load a whole model folder, each with its one-line prefix: (argv after the folder, prefix).
COMMANDS = {"convert to-llava": ("modeling_croc.convert", "convert error: "),
            "chat": ("modeling_croc.chat", "chat error: ")}
# case: (how the tiny Croc folder is broken, the words after the prefix; {folder} is the broken folder).
COMMAND_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated weights": (_truncate(), "{folder}: a weights file is not valid safetensors"),
    "fewer layers than weights": (_edit_config(**{"text_config.num_hidden_layers": 1}),
                                  "{folder}: 9 weights with no place in the model its config.json describes"),
    "more layers than weights": (_edit_config(**{"text_config.num_hidden_layers": 3}),
                                 r"{folder}: 9 weights missing: \['model.language_model.layers.2."),
    "a shard absent": (_shard(), "{folder}: its weights cannot be read: .*model-00002-of-00002.safetensors"),
    "tokenizer.json corrupt": (_write("tokenizer.json", "{cut"), "{folder}: .*(JSONDecodeError|Expecting property name)"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", COMMAND_CASES)
def test_every_command_that_loads_a_folder_says_a_broken_one_in_one_line(command, case, tiny_model, tmp_path):
    """`python -m modeling_croc.convert to-llava` exported a folder edited to fewer layers without the rest (exit 0)
    and one whose tokenizer did not load without any processor, and ended in a traceback on a file cut short; the
    chat answered from random or dropped layers and ended in tracebacks likewise. Each is one line, and the export
    writes nothing."""
    import importlib

    module, prefix = COMMANDS[command]
    breaker, words = COMMAND_CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    breaker(folder)
    out = tmp_path / "export" / "out"
    argv = (["to-llava", str(folder), str(out)] if command == "convert to-llava"
            else [str(folder), "--question", "hi", "--max-new-tokens", "2"])
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module if command == "chat" else f"{module}.__main__").main(argv)
    message = str(stop.value.code)
    assert "\n" not in message and re.match(re.escape(prefix) + words.format(folder=re.escape(str(folder))),
                                            message), message
    assert not out.exists()


def test_the_chat_says_a_chat_template_that_does_not_render_before_the_model_loads(tiny_model, tmp_path,
                                                                                  monkeypatch):
    """A broken chat_template.jinja ended the chat in jinja's traceback at the first question, after the model load
    (minutes for a 7B model): one line, and no weights read."""
    from transformers import AutoModelForImageTextToText

    from modeling_croc import chat

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content ")
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", None)  # any load fails the test
    with pytest.raises(SystemExit) as stop:
        chat.main([str(folder), "--question", "hi"])
    message = str(stop.value.code)
    assert message.startswith(f"chat error: {folder}: its chat template (chat_template.jinja) does not render: "
                              "TemplateSyntaxError"), message


def test_a_model_folder_given_as_a_file_is_called_a_file(tiny_model, data, tmp_path, monkeypatch):
    """A weights file given where the folder belongs was called 'does not exist' by the trainer, and a malformed Hub
    repository id by the chat."""
    from modeling_croc import chat

    weights = tiny_model / WEIGHTS
    message = cli_error(run_argv("stage1_5.yaml", tmp_path / "out", weights, data), monkeypatch)
    assert message == f"configuration error: model folder {weights} is a file: give the folder that holds " \
                      "config.json and the weights", message
    with pytest.raises(SystemExit) as stop:
        chat.main([str(weights), "--question", "hi"])
    assert str(stop.value.code) == f"chat error: {weights} is a file: give the model folder that holds it"
    assert not (tmp_path / "out").exists()


def test_a_stage_after_1_started_from_a_stage_0_folder_says_its_projector_is_untrained(data, tmp_path, capsys):
    """Stage 2 from `tiny_out/stage0` (a path one stage off in a config) trained on a random projector without a
    word; a stage-0 folder's card (`convert from-parts`, `croc_testing tiny-model`) says what it is."""
    from croc_testing.__main__ import main as croc_testing_main
    from trainer import train as train_module

    stage0 = tmp_path / "stage0"
    croc_testing_main(["tiny-model", str(stage0)])
    capsys.readouterr()
    train_module.main(run_argv("stage2.yaml", tmp_path / "stage2", stage0, data, "--max_steps=1"))
    warning = (f"{stage0} is a stage-0 folder (its card is tagged croc-stage-0): its projector was never trained; "
               "stage 2 usually starts from the previous stage's output_dir (stage 1 trains the projector)")
    assert warning in capsys.readouterr().err
    train_module.main(run_argv("stage1.yaml", tmp_path / "stage1", stage0, data, "--max_steps=1",
                               "--data.max_reject_fraction=0.5"))  # stage 1 takes the image rows only
    assert "stage-0 folder" not in capsys.readouterr().err


def test_a_stage_is_not_started_from_a_run_that_has_not_finished(tiny_model, data, tmp_path, monkeypatch):
    """Stage 2 from a stage-1.5 folder whose run was extended (more steps) and is training now, or was killed: it
    trained from the folder's top-level weights, those of the run's earlier end, without a word (from a hostile tester
    of chained stages). Refused in one line naming the way on; a checkpoint of that run (it carries the running
    record) and a finished run are models to start from."""
    from trainer.output_lock import LOCK_FILE
    from trainer.run_record import RUN_RECORD
    from trainer.validation import check_checkpoint_layout

    parent = tmp_path / "stage1_5"
    shutil.copytree(tiny_model, parent)
    (parent / RUN_RECORD).write_text(json.dumps({"status": "running"}))
    (parent / LOCK_FILE).write_text("{}")
    # Its first end wrote trainer_state.json at the top, as every finished run's folder holds (a tester of today's
    # changes found the check taking such a folder for a checkpoint).
    (parent / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    message = cli_error(run_argv("stage2.yaml", tmp_path / "out", parent, data), monkeypatch)
    assert message == (f"configuration error: model folder {parent} holds a run that has not finished: its {RUN_RECORD} "
                       "says running (its lock is held: it may be training now), so its weights are those of an "
                       "earlier end of it, not of this run; finish that run (rerunning its command resumes it) and "
                       f"start from it then, or start from one of its checkpoints (model.name_or_path={parent}/"
                       "checkpoint-N)"), message
    assert not (tmp_path / "out").exists()
    checkpoint = parent / "checkpoint-2"
    shutil.copytree(tiny_model, checkpoint)
    shutil.copy(parent / RUN_RECORD, checkpoint / RUN_RECORD)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    check_checkpoint_layout(str(checkpoint))
    (parent / RUN_RECORD).write_text(json.dumps({"status": "finished", "step": 4}))
    check_checkpoint_layout(str(parent))


def test_a_stage_says_a_parent_out_of_the_stage_order_or_trained_under_another_preset(tiny_model, data, tmp_path,
                                                                                      capsys):
    """Stage 2 straight from a stage-1 folder (stage 1.5 skipped), stage 1.5 from a stage-2 folder, and stage 2
    under `paper` from a stage-1.5 folder trained under `official` (`normalize_visual_tokens` switched off: another
    function of the same weights) all trained without a word (from a hostile tester of chained stages). Each is said
    in one line; the order and preset the stages expect say nothing."""
    import yaml

    from trainer import train as train_module
    from trainer.stage_chain import starting_folder_warnings

    def parent(name: str, stage: str, **config) -> Path:
        folder = Path(shutil.copytree(tiny_model, tmp_path / name))
        (folder / "README.md").write_text(f"---\n{yaml.safe_dump({'croc_stage': stage, 'tags': ['croc']})}---\n")
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
        return folder

    stage1, stage2 = parent("stage1", "1"), parent("stage2", "2")
    assert starting_folder_warnings(str(stage1), "2", None, "paper") == [
        f"{stage1} is a stage-1 folder: this stage 2 skips stage 1.5, the Croc pretraining (LLaVA-1.5's recipe, the "
        "paper's baseline); stage 2 of Croc starts from stage 1.5's output_dir"]
    assert starting_folder_warnings(str(stage2), "1.5", None, "paper") == [
        f"{stage2} is a stage-2 folder, later than this stage 1.5: stages run 1 -> 1.5 -> 2, each from the previous "
        "one's output_dir"]
    assert starting_folder_warnings(str(stage1), "1.5", None, "paper") == []
    # A stage-0 folder was never trained: the preset its config names is no choice to keep (stage 1 under official
    # was told to pass --croc_preset=paper; from a tester of today's changes).
    from croc_testing.__main__ import main as croc_testing_main

    stage0 = tmp_path / "stage0"
    croc_testing_main(["tiny-model", str(stage0)])
    stage0_config = json.loads((stage0 / "config.json").read_text())
    assert stage0_config.get("croc_preset") == "paper"
    assert starting_folder_warnings(str(stage0), "1", {**stage0_config, "normalize_visual_tokens": True},
                                    "official") == []
    official = parent("official", "1.5", croc_preset="official", normalize_visual_tokens=True)
    capsys.readouterr()
    train_module.main(run_argv("stage2.yaml", tmp_path / "out", official, data, "--max_steps=1"))
    said = [line for line in capsys.readouterr().err.splitlines() if "was trained under the official preset" in line]
    assert len(said) == 1 and said[0].endswith(
        f"{official} was trained under the official preset and this stage runs paper, which changes its model: "
        "normalize_visual_tokens True -> False, prompt_pool_size 64 -> 2048; pass --croc_preset=official to keep "
        "them"), said
