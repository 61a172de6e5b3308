"""The recipes' publishing (`--hub-folder DIR`, `--push-to-hub REPO`) against a hostile tester's second round: a hub
folder holding a symbolic link (the re-publish deleted the user's file in the linked folder), a Ctrl-C during the
hub folder's scan (an unscanned, leaking shard stayed, marked as published), a push that deleted remote files which
only began like a shard (`data/train-images/0001.jpg`), and option values that ended in a traceback or were silently
ignored (a name over 255 bytes, an empty value, a hub folder inside an image root outside the data root, an image that
is a folder with the image check off), then a hand edit of a published file that the next publish replaced without a
word and folders typed relative that the card named as typed. Each is refused in one line, and every byte under the
test's folder is compared where nothing may change."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from PIL import Image
from publish_cases import HubRecorder
from publish_cases import file_names as _files
from publish_cases import snapshot as _snapshot
from publish_cases import write_data as _data

from data_recipes import build as build_module
from data_recipes import registry
from data_recipes.cli import main as recipes_main
from data_recipes.publish import hub_files
from modeling_croc import publish_folder
from modeling_croc.publish_folder import PUBLISH_MARKER, PublishFolderError, prepare_publish_folder


def _build_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["build", "llava_json", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "build"),
            "--set", "annotation=rows.json", *extra]


def _no_source_read(monkeypatch) -> None:
    def read_sources(*args, **kwargs):
        raise AssertionError("the sources were read before the error")

    monkeypatch.setattr(registry.Recipe, "__call__", read_sources)


def _the_user_s_folder(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train-00000-of-00001.parquet").write_text("the user's own shard, not a publish")
    (mine / "notes.txt").write_text("keep me")
    return mine


SYMLINKS = {
    # An earlier hub folder's data/ replaced by a link to the user's folder: the removal of the old shard followed it.
    "data": lambda mine: mine,
    "data/train-00000-of-00001.parquet": lambda mine: mine / "train-00000-of-00001.parquet",
    PUBLISH_MARKER: lambda mine: mine / "marker.json",  # a copy of the marker: the folder reads as a publish
    "data/more": lambda mine: mine,
}


@pytest.mark.parametrize("link", SYMLINKS)
def test_a_hub_folder_holding_a_symbolic_link_is_refused_before_any_source_is_read(link, tmp_path, capsys,
                                                                                   monkeypatch):
    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 0
    mine = _the_user_s_folder(tmp_path)
    (mine / "marker.json").write_bytes((hub / PUBLISH_MARKER).read_bytes())
    if (hub / link).is_dir():
        for path in sorted((hub / link).iterdir()):
            path.unlink()
        (hub / link).rmdir()
    else:
        (hub / link).unlink(missing_ok=True)
    (hub / link).symlink_to(SYMLINKS[link](mine))
    _no_source_read(monkeypatch)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub)))
    err = capsys.readouterr().err
    assert code == 1 and err == (f"error: --hub-folder {hub} holds symbolic link(s) ({link}): a publish never follows "
                                 "a link out of its folder; remove the link(s) or choose another folder (nothing "
                                 "was written or deleted)\n"), err
    assert _snapshot(tmp_path) == before
    assert (mine / "train-00000-of-00001.parquet").read_text() == "the user's own shard, not a publish"


def test_the_trainer_s_dry_run_folder_holding_a_link_is_refused_and_a_removal_never_follows_one(tmp_path,
                                                                                               monkeypatch):
    """The same module serves `--hub_dry_run`: a link in a nested folder is refused; and a link made after the check
    (the check replaced by nothing here) is passed over by the removal, which deleted the file it points to."""
    folder = tmp_path / "dry"
    prepare_publish_folder(folder, ["sub/model.safetensors", "config.json"], option="--hub_dry_run", keep_clear_of={})
    (folder / "sub").mkdir()
    (folder / "config.json").write_text("{}")
    mine = _the_user_s_folder(tmp_path)
    (folder / "sub" / "model.safetensors").symlink_to(mine / "notes.txt")
    before = _snapshot(tmp_path)
    with pytest.raises(PublishFolderError, match=r"^--hub_dry_run .*/dry holds symbolic link\(s\) "
                                                 r"\(sub/model.safetensors\): a publish never follows"):
        prepare_publish_folder(folder, ["config.json"], option="--hub_dry_run", keep_clear_of={})
    assert _snapshot(tmp_path) == before

    (folder / "sub" / "model.safetensors").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(mine)
    (mine / "model.safetensors").write_text("the user's weights")
    monkeypatch.setattr(publish_folder, "check_publish_folder", lambda *args, **kwargs: None)
    prepare_publish_folder(folder, ["config.json"], option="--hub_dry_run", keep_clear_of={})
    assert (mine / "model.safetensors").read_text() == "the user's weights" and (mine / "notes.txt").exists()
    assert not (folder / "config.json").exists()  # the earlier publish's own file, not behind a link, went


@pytest.mark.parametrize("earlier", [False, True], ids=["new-folder", "earlier-publish"])
def test_an_interrupted_hub_folder_scan_leaves_no_unscanned_file_there(earlier, tmp_path, monkeypatch):
    """A Ctrl-C (or a kill) while the shards are scanned: they are written and scanned in a staging folder inside
    --out, so the hub folder holds nothing unscanned (an earlier publish's files stay as they were)."""
    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    if earlier:
        assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 0
    rows = json.loads((tmp_path / "data" / "rows.json").read_text())
    rows[0]["conversations"][1]["value"] = f"See {tmp_path / 'private' / 'notes.txt'}."  # what the scan would stop
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows))
    before = _snapshot(hub) if earlier else None

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "check_upload_set", interrupted)
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 130  # SIGINT's status
    if earlier:
        assert _snapshot(hub) == before
    else:
        assert not hub.exists()
    assert not list((tmp_path / "build").glob(".hub-upload-*"))  # the staging folder went too


def test_a_hub_folder_on_a_full_disk_holds_no_part_of_the_set(tmp_path, monkeypatch, capsys):
    """The hub folder on another, full disk: the move of a shard (a copy there) stopped part-way, and the folder
    kept the cut shard beside a marker listing every shard. It is filled through a hidden folder now: nothing of the
    set stays, and the same command fills it once there is room."""
    import errno
    import os
    import shutil

    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    move = shutil.move

    def full_disk(source, destination, *args, **kwargs):
        if str(destination).endswith(".parquet"):
            Path(destination).parent.mkdir(parents=True, exist_ok=True)
            Path(destination).write_bytes(Path(source).read_bytes()[:100])  # what the disk took
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        return move(source, destination, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(publish_folder.shutil, "move", full_disk)
        assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert _files(hub) == [PUBLISH_MARKER]
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 0
    assert sorted(_files(hub)) == sorted([PUBLISH_MARKER, *hub_files(1)])


def test_a_leak_leaves_an_earlier_hub_folder_as_it_was_and_names_the_hub_folder(tmp_path, capsys):
    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 0
    before = _snapshot(hub)
    rows = json.loads((tmp_path / "data" / "rows.json").read_text())
    rows[0]["conversations"][1]["value"] = f"See {tmp_path / 'data' / 'images'}."
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows))
    capsys.readouterr()
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 1
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"error: refusing to publish {hub}: an absolute local path in "
                              "data/train-00000-of-00001.parquet (column conversations.value)"), message
    assert _snapshot(hub) == before
    assert not list((tmp_path / "build").glob(".hub-upload-*"))


def test_a_dataset_push_deletes_only_this_project_s_shard_names(tmp_path, monkeypatch, capsys, hub_online):
    """`data/train-*` as an fnmatch pattern also took nested files and other names under `data/`."""
    old_shards = hub_files(2)[:2]
    # Files the card's `data/train-*` does not make `datasets` read (nested, another split, outside data/, hidden).
    others = ["data/train-images/0001.jpg", "data/sub/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet",
              "train-00000-of-00001.parquet", "data/.train-00000-of-00001.parquet"]
    hub = HubRecorder(monkeypatch, remote_files=[".gitattributes", "README.md", *old_shards, *others])
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes")) == 0, capsys.readouterr().err
    assert len(hub.commits) == 1
    assert sorted(hub.commits[0]["deleted"]) == old_shards
    assert sorted(hub.commits[0]["added"]) == sorted(hub_files(1))


OPTION_VALUES = {
    "hub-folder-too-long": (["--hub-folder", "x" * 300],
                            "error: --hub-folder: the name " + "x" * 40 + "... is 300 bytes long, over the 255 a file or "
                            "folder name may have (nothing was written or deleted)\n"),
    "hub-folder-empty": (["--hub-folder", ""], "error: --hub-folder is empty (an unset variable in the command?); give "
                                               "a value, or leave --hub-folder out\n"),
    "push-empty": (["--push-to-hub", ""], "error: --push-to-hub is empty (an unset variable in the command?); give a "
                                          "value, or leave --push-to-hub out\n"),
}


@pytest.mark.parametrize("case", OPTION_VALUES)
def test_a_hub_option_value_that_cannot_be_used_is_one_line_before_any_source_is_read(case, tmp_path, capsys,
                                                                                       monkeypatch):
    _data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _no_source_read(monkeypatch)
    before = _snapshot(tmp_path)
    extra, message = OPTION_VALUES[case]
    assert recipes_main(_build_argv(tmp_path, *extra)) == 1
    assert capsys.readouterr().err == message
    assert _snapshot(tmp_path) == before


def test_a_too_long_dry_run_folder_is_a_publish_error(tmp_path):
    with pytest.raises(PublishFolderError, match=r"^--hub_dry_run: the name x{40}\.\.\. is 300 bytes long"):
        prepare_publish_folder(tmp_path / ("x" * 300), ["config.json"], option="--hub_dry_run", keep_clear_of={})


def test_a_hub_folder_inside_an_image_root_outside_the_data_root_is_refused_before_any_source_is_read(
        tmp_path, capsys, monkeypatch):
    _data(tmp_path / "scenes")
    (tmp_path / "data").mkdir()
    (tmp_path / "scenes" / "rows.json").rename(tmp_path / "data" / "rows.json")
    _no_source_read(monkeypatch)
    before = _snapshot(tmp_path)
    hub = tmp_path / "scenes" / "pub"
    code = recipes_main(_build_argv(tmp_path, "--set", f"image_root={tmp_path / 'scenes'}", "--hub-folder", str(hub)))
    assert code == 1
    assert capsys.readouterr().err == (f"error: --hub-folder {hub} is inside the image root {tmp_path / 'scenes'}: a "
                                       "publish folder is replaced as a whole, so it must be a separate folder; choose "
                                       "one outside it (nothing was written or deleted)\n")
    assert _snapshot(tmp_path) == before


def test_an_image_that_is_a_folder_without_the_image_check_is_one_line(tmp_path, capsys):
    _data(tmp_path / "data")
    image = tmp_path / "data" / "images" / "1.png"
    image.unlink()
    image.mkdir()
    hub = tmp_path / "hub"
    capsys.readouterr()
    assert recipes_main(_build_argv(tmp_path, "--skip-image-check", "--hub-folder", str(hub))) == 1
    *progress, message = capsys.readouterr().err.splitlines()
    assert not any("Traceback" in line or "error" in line for line in progress), progress
    assert message == (f"error: cannot embed the image {image} into --hub-folder {hub}: Is a directory (the images "
                       "were not checked: build without --skip-image-check to reject such rows); nothing was written "
                       "there"), message
    assert not hub.exists() and not list((tmp_path / "build").glob(".hub-upload-*"))
    assert _files(tmp_path / "data" / "images") == ["0.png", "2.png", "3.png"]


def test_a_hub_folder_file_edited_since_the_publish_is_the_user_s_and_refused(tmp_path, capsys, monkeypatch, caplog):
    """A hand-written section appended to the hub folder's README.md was replaced by the rebuild without a word: the
    marker named the files, not their bytes. A marker of an earlier version (names only) still vouches for them."""
    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 0
    with (hub / "README.md").open("a") as card:
        card.write("\n## Evaluation (hand-written)\n")
    _no_source_read(monkeypatch)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 1
    assert capsys.readouterr().err == (f"error: --hub-folder {hub} was written by an earlier publish but README.md "
                                       "changed since, which this publish would replace: move them out of the "
                                       "folder to keep them, or choose another folder (nothing was written or "
                                       "deleted)\n")
    assert _snapshot(tmp_path) == before
    monkeypatch.undo()

    # The same edit under an earlier version's marker, which holds no bytes to compare: replaced, as it always was,
    # but its text kept first (hidden: a later publish neither replaces it nor takes it for a file of the user's).
    record = json.loads((hub / PUBLISH_MARKER).read_text())
    (hub / PUBLISH_MARKER).write_text(json.dumps({"kind": record["kind"], "files": record["files"]}))
    edited = (hub / "README.md").read_text()
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 0
    assert "hand-written" not in (hub / "README.md").read_text()
    assert (hub / ".README.earlier.md").read_text() == edited
    assert (f"{hub / 'README.md'} was written by an earlier publish whose marker keeps no digest of it, so whether it "
            f"was edited since cannot be told: it is replaced, and its text as it is now is kept in "
            f"{hub / '.README.earlier.md'}") in caplog.text
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 0
    assert (hub / ".README.earlier.md").read_text() == edited


def test_a_dry_run_folder_file_edited_since_the_publish_is_refused_and_an_untouched_one_replaced(tmp_path):
    """The trainer's `--hub_dry_run` goes through the same calls (`prepare_publish_folder`, then
    `fill_publish_folder` copying from its staging folder): an edited weights file or card is refused by name."""
    staging, folder = tmp_path / "staging", tmp_path / "dry"
    files = ["README.md", "sub/model.safetensors"]
    (staging / "sub").mkdir(parents=True)
    (staging / "README.md").write_text("# model\n")
    (staging / "sub" / "model.safetensors").write_bytes(b"\x00" * 4096)
    for _ in range(2):  # untouched: the second publish replaces its own files
        publish_folder.fill_publish_folder(staging, files, prepare_publish_folder(
            folder, files, option="--hub_dry_run", keep_clear_of={}))
    assert _files(folder) == sorted([PUBLISH_MARKER, *files])
    with (folder / "sub" / "model.safetensors").open("r+b") as weights:  # the same size, other bytes
        weights.write(b"\x01")
    before = _snapshot(tmp_path)
    with pytest.raises(PublishFolderError, match=r"^--hub_dry_run .*/dry was written by an earlier publish but "
                                                 r"sub/model.safetensors changed since, which this publish would "
                                                 r"replace: move them out of the folder to keep them"):
        prepare_publish_folder(folder, files, option="--hub_dry_run", keep_clear_of={})
    assert _snapshot(tmp_path) == before


SPELLINGS = {
    "relative": ("work/H/clients/acme-hospital/patient-scans-2026", "work/H/b5", "work/H/hf5"),
    "absolute-data-root": (None, "work/H/b5", "work/H/hf5"),
    "dotted": ("./work/H/clients/../clients/acme-hospital/patient-scans-2026/", "./work//H/b5", "work/H/./hf5"),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_folders_typed_relative_go_up_as_their_names(spelling, tmp_path, monkeypatch, capsys):
    """Run from a working directory with the folders typed relative to it: the pushed card showed the command as
    typed (`--data-root work/H/clients/acme-hospital/patient-scans-2026 --out work/H/b5 --hub-folder work/H/hf5`) and
    the source as `work/H/clients/.../rows.json`; only the absolute data root was written as its name."""
    data = tmp_path / "work" / "H" / "clients" / "acme-hospital" / "patient-scans-2026"
    _data(data)
    monkeypatch.chdir(tmp_path)
    data_root, out, hub = SPELLINGS[spelling]
    argv = ["build", "llava_json", "--data-root", data_root or str(data), "--out", out, "--set", "annotation=rows.json",
            "--hub-folder", hub]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (tmp_path / "work" / "H" / "hf5" / "README.md").read_text()
    assert not any(name in card for name in ("work", "clients", "acme-hospital", str(tmp_path))), card
    assert "--data-root DATA_ROOT --out OUT --set annotation=rows.json --hub-folder HUB_FOLDER" in card, card
    assert "| llava_json | `DATA_ROOT/rows.json` |" in card, card


def test_write_hub_folder_records_what_it_wrote_so_a_later_edit_is_refused(tmp_path):
    """`publish.write_hub_folder` writes in place (no fill): it records the bytes it wrote all the same."""
    from datasets import Dataset
    from huggingface_hub import DatasetCard

    from data_recipes.publish import write_hub_folder

    rows = Dataset.from_dict({"id": ["a", "b"], "text": ["one", "two"]})
    hub = tmp_path / "hub"
    written = write_hub_folder(rows, DatasetCard("---\nlicense: mit\n---\n# rows\n"), hub)
    assert sorted(json.loads((hub / PUBLISH_MARKER).read_text())["written"]) == sorted(written)
    assert _files(hub) == sorted([PUBLISH_MARKER, *written])  # no staging folder left
    with (hub / "README.md").open("a") as card:
        card.write("\nmine\n")
    with pytest.raises(PublishFolderError, match=r"README.md changed since"):
        write_hub_folder(rows, DatasetCard("---\nlicense: mit\n---\n# rows\n"), hub)
    assert (hub / "README.md").read_text().endswith("\nmine\n")


def test_an_untouched_file_is_not_hashed_again_and_an_edit_at_the_same_size_is_found(tmp_path, monkeypatch):
    """The check before a run and the one at its end compare size and modification time first: a weights file of
    many GB that nobody touched since the record is not read again; one whose time changed is hashed, and an edit
    that kept its size is still refused. A time as recent as the record itself is never trusted (an edit in the same
    clock tick would share it)."""
    source, hub = tmp_path / "source", tmp_path / "hub"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"w" * 64)
    (source / "README.md").write_text("# card\n")
    files = ["README.md", "model.safetensors"]
    prepare_publish_folder(hub, files, option="--hub-folder", keep_clear_of={})
    publish_folder.fill_publish_folder(source, files, hub)
    marker = json.loads((hub / PUBLISH_MARKER).read_text())

    hashed = []
    real_digest = publish_folder.file_digest
    monkeypatch.setattr(publish_folder, "file_digest", lambda path: hashed.append(Path(path).name) or real_digest(path))
    publish_folder.check_publish_folder(hub, option="--hub-folder", keep_clear_of={})
    assert sorted(hashed) == files  # just written: as recent as the record, so hashed

    marker["recorded_ns"] += 10_000_000_000  # the record ten seconds after the files' times: they have settled
    (hub / PUBLISH_MARKER).write_text(json.dumps(marker))
    hashed.clear()
    publish_folder.check_publish_folder(hub, option="--hub-folder", keep_clear_of={})
    assert hashed == []

    (hub / "model.safetensors").write_bytes(b"x" * 64)  # same size, a new time
    with pytest.raises(PublishFolderError, match=r"model.safetensors changed since"):
        publish_folder.check_publish_folder(hub, option="--hub-folder", keep_clear_of={})
    assert hashed == ["model.safetensors"]


def test_a_publish_folder_uploaded_by_hand_is_still_this_projects(tmp_path):
    """`hf upload-large-folder REPO DIR` leaves huggingface_hub's bookkeeping in `DIR/.cache/huggingface/`: the next
    dry run into that folder was refused as holding files the publish did not write. A file of the user's beside it
    still is."""
    source, hub = tmp_path / "source", tmp_path / "hub"
    source.mkdir()
    (source / "README.md").write_text("# card\n")
    prepare_publish_folder(hub, ["README.md"], option="--hub-folder", keep_clear_of={})
    publish_folder.fill_publish_folder(source, ["README.md"], hub)
    (hub / ".cache" / "huggingface" / "upload").mkdir(parents=True)
    (hub / ".cache" / "huggingface" / ".gitignore").write_text("*\n")
    (hub / ".cache" / "huggingface" / "upload" / "README.md.metadata").write_text("0\n")
    prepare_publish_folder(hub, ["README.md"], option="--hub-folder", keep_clear_of={})
    publish_folder.fill_publish_folder(source, ["README.md"], hub)
    (hub / "mine.md").write_text("notes\n")
    with pytest.raises(PublishFolderError, match=r"also holds mine.md, which that publish did not write"):
        publish_folder.check_publish_folder(hub, option="--hub-folder", keep_clear_of={})


def _hub_record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "build" / "summary.json").read_text())["hub"]


def _credited(build: Path) -> list[str]:
    from trainer.model_card import run_provenance
    from trainer.script_args import DataArguments, ModelArguments

    return run_provenance(ModelArguments(name_or_path="org/base"), DataArguments(path=str(build))).datasets


def _refused_connection(*args, **kwargs):
    raise ConnectionError("[Errno 111] Connection refused")


def _timed_out(*args, **kwargs):
    # The HTTP client's own error (httpx's or requests', by huggingface_hub's version): a timeout is not an
    # HfHubHTTPError, which only wraps an answer of the Hub.
    from huggingface_hub.errors import HfHubHTTPError

    client_error = next(base for base in HfHubHTTPError.__bases__ if base is not OSError)
    raise client_error("timed out")


@pytest.mark.parametrize("failure", [_refused_connection, _timed_out], ids=["connection", "http-client"])
@pytest.mark.parametrize("with_hub_folder", [False, True], ids=["push", "hub-folder-push"])
def test_a_failed_push_is_one_line_and_records_no_repo(failure, with_hub_folder, tmp_path, monkeypatch, capsys,
                                                       hub_online):
    """The network gone during the commit: summary.json named the repo (status ok) before the push ran, so a model
    trained on the build credited a repo that holds no data (or an older version), and the error was a traceback."""
    hub = HubRecorder(monkeypatch)
    monkeypatch.setattr("huggingface_hub.HfApi.create_commit", failure)
    _data(tmp_path / "data")
    extra = ["--hub-folder", str(tmp_path / "hub")] if with_hub_folder else []
    capsys.readouterr()
    assert recipes_main(_build_argv(tmp_path, *extra, "--push-to-hub", "me/shapes")) == 1
    *progress, message = capsys.readouterr().err.splitlines()
    assert not any("Traceback" in line or "error" in line for line in progress), progress
    assert message.startswith("error: could not push to the Hub dataset repo me/shapes: "), message
    assert message.endswith(f"the build in {tmp_path / 'build'} is complete (summary.json names no repo): rerun the "
                            "same command with --overwrite to push it again"), message
    assert hub.repos == [{"repo_id": "me/shapes", "private": None, "repo_type": "dataset"}]
    record = _hub_record(tmp_path)
    assert record["repo"] is None and record["private"] is None
    assert record["folder"] == (str(tmp_path / "hub") if with_hub_folder else None)
    assert json.loads((tmp_path / "build" / "summary.json").read_text())["status"] == "ok"  # the build is whole
    assert _credited(tmp_path / "build") == []


def test_a_push_records_the_repo_and_its_visibility_as_the_hub_holds_it(tmp_path, monkeypatch, capsys, hub_online):
    """`create_repo(exist_ok=True)` leaves an existing private repo private: recorded as public when --private was not
    given, the repo was named on a trained model's card."""
    hub = HubRecorder(monkeypatch)
    hub.private_repos.add("me/shapes")
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes")) == 0, capsys.readouterr().err
    assert _hub_record(tmp_path) == {"repo": "me/shapes", "folder": None, "image_storage": "embedded",
                                     "private": True}
    assert _credited(tmp_path / "build") == []

    hub.private_repos.clear()  # made public since: the next push records it so, and the model card names it
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--push-to-hub", "me/shapes")) == 0
    assert _hub_record(tmp_path)["private"] is False
    assert _credited(tmp_path / "build") == ["me/shapes"]

    # A Hub that does not answer the question: taken as private, never named on a public card.
    def no_answer(*args, **kwargs):
        raise ConnectionError("[Errno 104] Connection reset by peer")

    monkeypatch.setattr("huggingface_hub.HfApi.repo_info", no_answer)
    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--push-to-hub", "me/shapes")) == 0
    assert _hub_record(tmp_path)["repo"] == "me/shapes" and _hub_record(tmp_path)["private"] is True
    assert _credited(tmp_path / "build") == []


def test_a_hub_folder_without_a_push_records_the_folder_only(tmp_path, capsys):
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(tmp_path / "hub"))) == 0, capsys.readouterr().err
    assert _hub_record(tmp_path) == {"repo": None, "folder": str(tmp_path / "hub"), "image_storage": "embedded",
                                     "private": None}


# Files that `datasets` reads through the card's `data/train-*` beside the new shards, which this project did not
# name: an older `datasets`' shard name, a backup, notes (`.md` is a data extension), a bare name.
STRAY = ["data/train-00000-of-00001-3f2a1b.parquet", "data/train-00000-of-00002.parquet.bak", "data/train-notes.md",
         "data/train-extra.jsonl"]


@pytest.mark.parametrize("stray", STRAY)
def test_a_remote_file_the_card_would_read_refuses_the_push_before_anything_is_uploaded(stray, tmp_path, monkeypatch,
                                                                                        capsys, hub_online):
    """A push deleted only this project's shard names, and the card's glob then read the leftover too: `load_dataset`
    raised NonMatchingSplitsSizesError, streaming yielded duplicated rows. Deleting it is not the push's to do."""
    hub = HubRecorder(monkeypatch, remote_files=[".gitattributes", "README.md", "data/train-00001-of-00002.parquet",
                                                 stray])
    _data(tmp_path / "data")
    capsys.readouterr()
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes")) == 1
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"error: refusing to push to me/shapes: it holds {stray}, which the card's data files "
                              "(data/train-*) would load as rows beside this push's shards"), message
    assert "hf repos delete-files me/shapes FILE... --repo-type dataset" in message and "nothing was uploaded" in message
    assert hub.commits == [] and hub.repos == []
    assert _hub_record(tmp_path)["repo"] is None
    assert not list((tmp_path / "build").glob(".hub-upload-*"))


def test_files_the_card_reads_are_those_datasets_loads(tmp_path):
    """What the check refuses is what `load_dataset` would read: the same names resolved by `datasets` on a folder."""
    from datasets.data_files import DataFilesDict
    from datasets.load import _ALL_ALLOWED_EXTENSIONS

    from data_recipes.hub import SHARD_PATTERN, files_the_card_reads

    names = [*STRAY, "data/train-00000-of-00001.parquet", "data/train-images/0001.jpg", "data/.train-x.parquet",
             "data/sub/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet", "README.md"]
    read = files_the_card_reads(names)
    assert read == sorted([*STRAY, "data/train-00000-of-00001.parquet"])
    assert [name for name in read if not fnmatchcase(name, SHARD_PATTERN)] == sorted(STRAY)
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    files = DataFilesDict.from_patterns({"train": ["data/train-*"]}, base_path=str(tmp_path),
                                        allowed_extensions=_ALL_ALLOWED_EXTENSIONS)["train"]
    assert sorted(Path(path).relative_to(tmp_path).as_posix() for path in files) == read


@pytest.mark.parametrize("push", [False, True], ids=["hub-folder", "push"])
def test_an_embedded_image_keeps_its_path_relative_to_the_image_root(push, tmp_path, monkeypatch, capsys):
    """`embed_table_storage` keeps only the file name: `vg/VG_100K_2/1.jpg` went up as `1.jpg`, and two different
    images `a/1.png`, `b/1.png` both as `1.png`. The path a row named, relative to the image root, is kept (never an
    absolute path: the image root itself lies outside the data root here)."""
    import datasets
    import pyarrow.parquet as pq
    from fault_cases import image_row, write_good_image

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub = HubRecorder(monkeypatch)
    images = tmp_path / "scenes"
    (tmp_path / "data").mkdir()
    names = ["vg/VG_100K_2/1.png", "a/1.png", "b/1.png", "b/./c/../2.png"]
    for index, name in enumerate(names):
        write_good_image(images / name, (60 * index, 100, 200))
    (tmp_path / "data" / "rows.json").write_text(json.dumps([image_row(f"r{i}", name) for i, name in enumerate(names)]))
    extra = ["--push-to-hub", "me/shapes"] if push else ["--hub-folder", str(tmp_path / "hub")]
    assert recipes_main(_build_argv(tmp_path, "--set", f"image_root={images}", *extra)) == 0, capsys.readouterr().err
    shard = "data/train-00000-of-00001.parquet"
    if push:
        (tmp_path / "hub" / "data").mkdir(parents=True)
        (tmp_path / "hub" / shard).write_bytes(hub.commits[0]["added"][shard])
        (tmp_path / "hub" / "README.md").write_bytes(hub.commits[0]["added"]["README.md"])
    rows = pq.read_table(tmp_path / "hub" / shard).to_pylist()
    assert [row["image"]["path"] for row in rows] == ["vg/VG_100K_2/1.png", "a/1.png", "b/1.png", "b/2.png"]
    loaded = datasets.load_dataset(str(tmp_path / "hub"), split="train")
    for index, name in enumerate(names):
        with Image.open(images / name) as original:
            assert np.array_equal(np.asarray(loaded[index]["image"].convert("RGB")), np.asarray(original.convert("RGB")))


def test_the_pushed_card_names_each_folder_by_its_option_not_by_its_name(tmp_path, monkeypatch, capsys):
    """`--data-root /scratch/bob --out /scratch/bob-lcs` went up as `--data-root bob --out bob-lcs` (the account
    name), and `--out builds/s15 --hub-folder hub/s15` as `s15` twice. The local card keeps the real paths."""
    monkeypatch.chdir(tmp_path)
    _data(tmp_path / "scratch" / "bob")
    argv = ["build", "llava_json", "--data-root", str(tmp_path / "scratch" / "bob"), "--out", "builds/s15",
            "--set", "annotation=rows.json", "--hub-folder", "hub/s15"]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (tmp_path / "hub" / "s15" / "README.md").read_text()
    assert "bob" not in card and "s15" not in card, card
    assert "--data-root DATA_ROOT --out OUT --set annotation=rows.json --hub-folder HUB_FOLDER" in card
    assert ("The folders in it are the building machine's, written as: `DATA_ROOT` the folder of the downloaded "
            "sources (`--data-root`") in card and "`OUT` the local build folder (`--out`)" in card
    assert "`HUB_FOLDER` the folder the uploaded files were written to first (`--hub-folder`)" in card
    local = (tmp_path / "builds" / "s15" / "README.md").read_text()
    assert str(tmp_path / "scratch" / "bob") in local and "DATA_ROOT" not in local
    # A data root that is the working directory goes up as `.`: the legend explains no DATA_ROOT the card lacks.
    monkeypatch.chdir(tmp_path / "scratch" / "bob")
    argv = ["build", "llava_json", "--data-root", ".", "--out", str(tmp_path / "b2"), "--set", "annotation=rows.json",
            "--hub-folder", str(tmp_path / "h2")]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (tmp_path / "h2" / "README.md").read_text()
    assert "--data-root . --out OUT" in card and "DATA_ROOT" not in card, card
