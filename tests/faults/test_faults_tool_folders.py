"""The helper commands of the first hour write only into folders they may (from a hostile tester):
`python -m data_recipes synth --out` replaced a user's `qa_train.json` and `images/000000.png` in an existing folder,
and `python -m croc_testing tiny-model` put random weights into a trained run's folder under its card and run
record. Each now writes a new or empty folder, or one it wrote before (the cpu_tiny configs of every family share
`tiny_out/scenes`, so a rerun must go on working), and refuses any other in one line, leaving it as it was."""

from __future__ import annotations

import pytest
from publish_cases import snapshot

from croc_testing.__main__ import main as croc_testing_main
from data_recipes.cli import main as data_recipes_main


def test_synth_refuses_a_folder_of_the_users_files_and_rewrites_its_own(tmp_path, capsys):
    mine = tmp_path / "mydata"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "000000.png").write_bytes(b"the user's image")
    (mine / "qa_train.json").write_text('[{"id": "mine"}]')
    before = snapshot(mine)
    assert data_recipes_main(["synth", "--out", str(mine), "--num-images", "4", "--image-size", "32"]) == 1
    assert f"error: --out {mine} is not empty and no earlier synth wrote it" in capsys.readouterr().err
    assert snapshot(mine) == before

    scenes = tmp_path / "scenes"
    for _ in range(2):  # a rerun into its own earlier folder, as every family's cpu_tiny config does
        assert data_recipes_main(["synth", "--out", str(scenes), "--num-images", "4", "--image-size", "32"]) == 0
    assert (scenes / "qa_train.json").is_file()


def test_a_tiny_model_is_not_written_over_a_trained_folder_and_is_over_its_own(tmp_path):
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "croc_run.json").write_text('{"status": "finished"}')
    (trained / "model.safetensors").write_bytes(b"trained weights")
    before = snapshot(trained)
    with pytest.raises(SystemExit) as stop:
        croc_testing_main(["tiny-model", str(trained)])
    assert str(stop.value.code) == (f"croc_testing: {trained} is not empty and was not written by this command (its "
                                    "files would be replaced by random weights): choose a new or empty folder")
    assert snapshot(trained) == before

    own = tmp_path / "stage0"
    for _ in range(2):
        croc_testing_main(["tiny-model", str(own)])
    assert (own / "model.safetensors").is_file()


def test_a_tiny_model_without_its_tokenizers_package_is_one_line(tmp_path, monkeypatch):
    """A GPU environment built with `.[deepspeed]` alone has no mistral_common, whose tokenizer the tiny models use."""
    import croc_testing.__main__ as entry

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'mistral_common'", name="mistral_common")

    monkeypatch.setattr(entry, "save_tiny_croc", missing)
    with pytest.raises(SystemExit) as stop:
        croc_testing_main(["tiny-model", str(tmp_path / "stage0")])
    assert str(stop.value.code) == ("croc_testing: mistral_common is not installed; the tiny models' offline tokenizer "
                                    "comes from the `test` extra: pip install -e \".[test]\"")


def test_a_finished_stage_says_where_its_model_went(tiny_model, small_data, tmp_path, capsys):
    """A newcomer's tiny run ended on a data report line: nothing said where the model was, or what reads it next."""
    from run_cases import run_argv

    from trainer import train as train_module

    out = tmp_path / "out"
    train_module.main(run_argv("stage2.yaml", out, tiny_model, small_data, "--max_steps=1"))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"stage 2 finished at step 1: saved the model to {out} (the next stage's "
                         "model.name_or_path)"), last
