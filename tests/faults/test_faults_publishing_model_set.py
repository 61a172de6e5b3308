"""What a model push takes from output_dir and deletes on the Hub, as a hostile tester found it: the stale weights it
deletes are the top-level files the loader reads, never the same names in a subfolder; named pipes and sockets are
left out of the upload set (a pipe hung the end-of-run publish); the run's own data and model folders are looked for
by the scan; and a file written during the push goes up as it was scanned. (The push and dry run themselves:
test_faults_publishing.py.)"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import huggingface_hub
import pytest
from publish_cases import TOKEN, HubRecorder
from publish_cases import run_argv as _argv
from publish_cases import write_data as _data
from run_cases import cli_error as _cli_error

from modeling_croc import upload_scan
from trainer import hub as trainer_hub
from trainer import train as train_module

# --- deletes: top-level weight and adapter files only --------------------------------------------------------------


def test_a_push_deletes_no_weights_the_user_keeps_in_a_subfolder(tiny_model, tmp_path, monkeypatch, hub_online):
    """fnmatch's `*` also matches `/`: `model-*-of-*.safetensors` took `model-4bit/model-00001-of-00002.safetensors`,
    the user's quantised variant, which no loader reads as this repository's weights."""
    stale = ["adapter_config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
             "pytorch_model-00001-of-00002.bin"]
    kept = ["README.md", "model-4bit/model-00001-of-00002.safetensors", "model-4bit/model-00002-of-00002.safetensors",
            "model-4bit/config.json", "pytorch_model-fp16/pytorch_model-00001-of-00002.bin",
            "onnx/model.safetensors", "eval/adapter_config.json", "old/model.safetensors.index.json"]
    hub = HubRecorder(monkeypatch, remote_files=stale + kept)
    train_module.main(_argv(tmp_path / "out", tiny_model, _data(tmp_path / "data"), "--push_to_hub",
                            f"--hub_token={TOKEN}", "--hub_model_id=me/croc-tiny"))
    [commit] = hub.commits
    assert sorted(commit["deleted"]) == sorted(stale)


@pytest.mark.parametrize("name", ["model-4bit/model-00001-of-00002.safetensors",
                                  "pytorch_model-fp16/pytorch_model-00001-of-00002.bin",
                                  "model-v2/shard-of-12.safetensors", "model-a/b-of-c/d.safetensors"])
def test_no_delete_pattern_matches_a_path_in_a_subfolder(name):
    assert list(huggingface_hub.utils.filter_repo_objects([name], allow_patterns=list(
        trainer_hub.LOADED_BY_NAME))) == []


# --- named pipes and sockets -------------------------------------------------------------------------------------


def test_named_pipes_and_sockets_are_left_out_of_the_upload_set(tmp_path, caplog):
    """A named pipe in output_dir made the publish wait forever for a writer, a socket refused it as unreadable:
    only regular files are uploaded, and one info line names what was left out."""
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "config.json").write_text("{}\n")
    os.mkfifo(out / "progress.pipe")
    os.mkfifo(out / ".hidden.pipe")  # never uploaded anyway: not named
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(out / "logs" / "m.sock"))
        with caplog.at_level(logging.INFO, logger=trainer_hub.logger.name):
            files = trainer_hub.files_to_upload(out)
        assert files == ["config.json"]
        assert [r.getMessage() for r in caplog.records] == [
            f"not uploaded from {out}, as no regular files: logs/m.sock, progress.pipe"]
        staging = tmp_path / "staging"
        trainer_hub.write_upload_set(out, files, staging, link=True)
        upload_scan.check_upload_set(staging, files)  # nothing unreadable left to refuse
    finally:
        listener.close()


# --- the run's own folders are scanned for ----------------------------------------------------------------------


def _notes_naming(out: Path, path: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "notes.md").write_text(f"DATA = '{path}'\n")


def test_a_dry_run_refuses_a_file_naming_the_runs_data_folder(tiny_model, tmp_path, monkeypatch):
    """The data and model folders often lie under a root the scanner does not know (`/work`, `/data`, `/nfs`): a
    note in output_dir naming the data's path went up, since only output_dir was a scan folder."""
    monkeypatch.setattr(upload_scan, "LOCAL_ROOTS", ())  # tmp_path stands for such a disk
    data = _data(tmp_path / "private_data")
    out = tmp_path / "out"
    _notes_naming(out, data.parent)
    message = _cli_error(_argv(out, tiny_model, data, f"--hub_dry_run={tmp_path / 'dry'}"), monkeypatch)
    assert f"an absolute local path in notes.md (byte 8): '{data.parent}" in message, message
    assert not (tmp_path / "dry").exists()


def test_a_push_refuses_a_file_naming_the_runs_model_folder(tiny_model, tmp_path, monkeypatch, hub_online):
    monkeypatch.setattr(upload_scan, "LOCAL_ROOTS", ())
    hub = HubRecorder(monkeypatch)
    out = tmp_path / "out"
    _notes_naming(out, tiny_model)
    with pytest.raises(train_module.RunStopped) as stopped:
        train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--push_to_hub", f"--hub_token={TOKEN}",
                                "--hub_model_id=me/croc-tiny"))
    assert f"an absolute local path in notes.md (byte 8): '{tiny_model}" in str(stopped.value), stopped.value
    assert hub.commits == []  # nothing uploaded


# --- a write during the push --------------------------------------------------------------------------------------


def test_small_files_are_staged_as_copies_and_large_ones_as_links(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_hub, "LINKED_MIN_BYTES", 100)
    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    (out / "notes.md").write_text("clean\n")
    (out / "big.txt").write_bytes(b"x" * 100)
    (out / "model.safetensors").write_bytes(b"w")
    trainer_hub.write_upload_set(out, ["big.txt", "model.safetensors", "notes.md"], staging, link=True)
    linked = {name: os.path.samefile(out / name, staging / name) for name in ("big.txt", "model.safetensors",
                                                                                "notes.md")}
    assert linked == {"big.txt": True, "model.safetensors": True, "notes.md": False}


def test_a_note_appended_to_during_the_push_goes_up_as_it_was_scanned(tiny_model, tmp_path, monkeypatch,
                                                                       hub_online):
    """The staged set was hard links: a line appended to output_dir/eval_notes.md after the scan, while the push
    waited on the Hub, went up unscanned (a token in it)."""
    hub = HubRecorder(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval_notes.md").write_text("clean notes\n")
    secret = "hf_" + "Zz9" * 12
    recorded = huggingface_hub.HfApi.create_repo

    def create_repo(self, repo_id, **kwargs):
        if any(path.name.startswith(trainer_hub.STAGING_PREFIX) for path in out.iterdir()):  # the push's, scanned
            with open(out / "eval_notes.md", "a", encoding="utf-8") as notes:
                notes.write(f"export HF_TOKEN={secret}\n")
        return recorded(self, repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--push_to_hub", f"--hub_token={TOKEN}",
                            "--hub_model_id=me/croc-tiny"))
    [commit] = hub.commits
    assert secret in (out / "eval_notes.md").read_text()  # the write happened during the push
    assert commit["added"]["eval_notes.md"] == b"clean notes\n"
