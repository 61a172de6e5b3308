"""Issue 20, item 7: the recipes' publishing (`--hub-folder DIR`, `--push-to-hub REPO`) never deletes and never
leaks. A hub folder is written only when new, empty or an earlier publish's own (only its files are replaced), and
never the build folder, around it or inside the data root: every other folder is refused with one line before any
source is read, and every byte under the test's folder is compared before and after. A dataset push (HfApi methods
replaced by recorders) uploads exactly the scanned file list, and nothing when a leak is planted (in a row, or in an
embedded file); sources outside the data root, however they are spelled, go up as names."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from publish_cases import TOKEN, HubRecorder
from publish_cases import file_names as _files
from publish_cases import leaks as _leaks
from publish_cases import snapshot as _snapshot
from publish_cases import write_data as _data

from data_recipes import registry
from data_recipes.cli import main as recipes_main
from data_recipes.publish import hub_files
from modeling_croc import upload_scan
from modeling_croc.publish_folder import PUBLISH_MARKER


def _build_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["build", "llava_json", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "build"),
            "--set", "annotation=rows.json", *extra]


HUB_FOLDERS = {
    "non-empty": ("elsewhere", "is not empty and no earlier publish wrote it (it holds notes.txt, sub/)"),
    "out": ("build", "is the build folder (--out)"),
    "parent-of-out": ("", "contains the build folder (--out)"),
    "in-data-root": ("data/hub", "is inside the data root"),
}


@pytest.mark.parametrize("case", HUB_FOLDERS)
def test_hub_folder_into_a_foreign_folder_is_refused_before_any_source_is_read(case, tmp_path, capsys,
                                                                                monkeypatch):
    _data(tmp_path / "data")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "summary.json").write_text(  # an earlier build, which --overwrite may replace
        json.dumps({"recipe": "lcs558k", "status": "ok", "rows": {}, "sources": {}}))
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere" / "notes.txt").write_text("keep me")

    def read_sources(*args, **kwargs):
        raise AssertionError("the sources were read before the error")

    monkeypatch.setattr(registry.Recipe, "__call__", read_sources)
    before = _snapshot(tmp_path)
    folder, words = HUB_FOLDERS[case]
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(tmp_path / folder)))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: --hub-folder {tmp_path / folder} {words}"), err
    assert _snapshot(tmp_path) == before


def test_hub_folder_is_clean_and_a_second_build_replaces_only_its_own_files(tmp_path, capsys):
    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 0
    shards = hub_files(1)
    assert _files(hub) == sorted([PUBLISH_MARKER, *shards])  # no summary.json / rejects.jsonl: local records
    assert json.loads((hub / PUBLISH_MARKER).read_text())["files"] == sorted(shards)
    card = (hub / "README.md").read_text()
    assert "--data-root DATA_ROOT --out OUT --set annotation=rows.json --hub-folder HUB_FOLDER" in card
    rows = pq.read_table(hub / shards[0]).to_pylist()
    # Relative to the image root, as the rows name them: never a path of this machine.
    assert sorted(row["image"]["path"] for row in rows) == [f"images/{i}.png" for i in range(4)]
    texts = json.dumps([{key: value for key, value in row.items() if key != "image"} for row in rows])
    assert _leaks({**_snapshot(hub), "rows": texts.encode()}, tmp_path) == []
    first = _snapshot(hub)

    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 0
    assert _snapshot(hub).keys() == first.keys()
    (hub / "data" / "mine.txt").write_text("a user's file")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub)))
    err = capsys.readouterr().err
    assert code == 1 and f"--hub-folder {hub} was written by an earlier publish but now also holds data/mine.txt" \
        in err and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before


def test_dataset_push_uploads_exactly_the_scanned_files_and_nothing_when_a_leak_is_planted(tmp_path, monkeypatch,
                                                                                           capsys, scanned,
                                                                                           hub_online):
    # An earlier push left two shards; this one writes one: both old shards go, in the same commit.
    old_shards = hub_files(2)[:2]
    hub = HubRecorder(monkeypatch, remote_files=[".gitattributes", "README.md", *old_shards])
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes", "--private")) == 0
    assert hub.repos == [{"repo_id": "me/shapes", "private": True, "repo_type": "dataset"}]
    assert len(hub.commits) == 1 and len(scanned) == 1
    commit = hub.commits[0]
    assert sorted(commit["added"]) == sorted(scanned[0][1]) == sorted(hub_files(1))
    assert sorted(commit["deleted"]) == old_shards
    assert _leaks(commit["added"], tmp_path) == []
    assert scanned[0][0].parent == tmp_path / "build" and not scanned[0][0].exists()  # staged in --out, removed
    card = DatasetCard(commit["added"]["README.md"].decode())
    assert "--push-to-hub me/shapes --private" in card.text
    # The Hub viewer's metadata, as Dataset.push_to_hub writes it.
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train",
                                                                          "path": "data/train-*"}]}]
    assert card.data.dataset_info["splits"] == [{"name": "train", "num_bytes": card.data.dataset_info["dataset_size"],
                                                 "num_examples": 4}]

    # A row that names this machine's data folder: the scan refuses the push, nothing is created or uploaded.
    rows = json.loads((tmp_path / "data" / "rows.json").read_text())
    rows[0]["conversations"][1]["value"] = f"See {tmp_path / 'data' / 'images'} for more."
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows))
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--push-to-hub", "me/shapes"))
    *progress, message = capsys.readouterr().err.splitlines()  # datasets' progress bars come first
    assert code == 1 and not any("error" in line for line in progress), progress
    # Named by the build folder: the staging folder `.hub-upload-...` is gone when the message is read.
    assert message.startswith(f"error: refusing to publish the build {tmp_path / 'build'} to me/shapes: "), message
    assert ".hub-upload-" not in message, message
    assert (f"an absolute local path in data/train-00000-of-00001.parquet (column conversations.value): "
            f"'{tmp_path / 'data' / 'images'}'; remove it") in message
    assert len(hub.commits) == 1 and len(hub.repos) == 1
    # The refused push is not recorded: a model trained on this build names no repo (it holds the earlier push).
    assert json.loads((tmp_path / "build" / "summary.json").read_text())["hub"]["repo"] is None


def test_push_with_a_hub_folder_uploads_that_folder_without_its_marker(tmp_path, monkeypatch, scanned, hub_online):
    hub = HubRecorder(monkeypatch)
    _data(tmp_path / "data")
    folder = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(folder), "--push-to-hub", "me/shapes")) == 0
    # Once written (in the staging folder inside --out, gone since), again in the folder right before the upload.
    assert [call[0] for call in scanned][1:] == [folder] and len(scanned) == 2
    assert scanned[0][0].parent == tmp_path / "build" and not scanned[0][0].exists()
    assert len(hub.commits) == 1
    assert hub.commits[0]["added"] == {name: (folder / name).read_bytes() for name in hub_files(1)}
    assert _files(folder) == sorted([PUBLISH_MARKER, *hub_files(1)])


def test_a_token_inside_an_embedded_file_stops_the_hub_folder(tmp_path, monkeypatch, capsys):
    """An "image" that is a link to a secret file, built without image checks: its bytes are embedded in the shard.
    The scanner reads the binary columns of a Parquet file too (the hostile tester found the token raw in the
    shard, exit 0)."""
    secret = tmp_path / "secret" / "token"
    secret.parent.mkdir()
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _data(tmp_path / "data")
    (tmp_path / "data" / "images" / "1.png").unlink()
    (tmp_path / "data" / "images" / "1.png").symlink_to(secret)
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--skip-image-check", "--hub-folder", str(tmp_path / "hub")))
    err = capsys.readouterr().err
    assert code == 1 and "a Hugging Face token" in err and "column image" in err, err
    shards = list((tmp_path / "hub").rglob("*.parquet")) if (tmp_path / "hub").exists() else []
    assert not shards or all(TOKEN.encode() not in shard.read_bytes() for shard in shards)


def test_a_source_outside_the_data_root_and_a_data_root_spelled_with_dotdot_go_up_as_names(tmp_path, monkeypatch,
                                                                                            capsys):
    """An annotation file given by absolute path outside --data-root (`--set annotation=/data/corpora/rows.json`),
    and a data root spelled with `..`, on a disk outside the scan's local roots (`/data`, `/nfs`, `/dev/shm`): the
    card named both as given (its command line, sources table and parameters), and the scan knew neither, so they
    went up (the hostile tester found `/dev/shm/.../rows.json` in the pushed README, exit 0)."""
    monkeypatch.setattr(upload_scan, "LOCAL_ROOTS", ())  # tmp_path stands for such a disk
    _data(tmp_path / "data")
    corpora = tmp_path / "corpora" / "team-private"
    corpora.mkdir(parents=True)
    (tmp_path / "data" / "rows.json").rename(corpora / "rows.json")
    (tmp_path / "elsewhere").mkdir()
    hub = tmp_path / "hub"
    argv = ["build", "llava_json", "--data-root", f"{tmp_path}/elsewhere/../data", "--out", str(tmp_path / "build"),
            "--set", f"annotation={corpora / 'rows.json'}", "--hub-folder", str(hub)]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (hub / "README.md").read_text()
    assert str(tmp_path) not in card, card
    assert "--data-root DATA_ROOT --out OUT --set annotation=rows.json --hub-folder HUB_FOLDER" in card
    assert "| llava_json | `rows.json` |" in card and '"annotation": "rows.json"' in card

    # What the card does not name, the scan refuses: a row naming that file stops the publish.
    rows = json.loads((corpora / "rows.json").read_text())
    rows[0]["conversations"][1]["value"] = f"Read from {corpora / 'rows.json'}."
    (corpora / "rows.json").write_text(json.dumps(rows))
    capsys.readouterr()
    assert recipes_main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    # The scan quotes a bounded excerpt of the value, so the path's end is cut where tmp_path is long (xdist).
    assert "an absolute local path in data/train-00000-of-00001.parquet (column conversations.value): " \
        f"'{str(corpora)[:40]}" in err, err


def test_a_source_outside_the_data_root_spelled_relative_goes_up_as_its_name(tmp_path, monkeypatch, capsys):
    """The relative spelling of a source outside --data-root (`--data-root data --set
    annotation=../corpora/team-private/rows.json`, run from the project folder): the card named it as typed in its
    command line and parameters, and as the recorded origin `data/../corpora/team-private/rows.json` in its sources
    table, the folders outside the data root included."""
    _data(tmp_path / "data")
    corpora = tmp_path / "corpora" / "team-private"
    corpora.mkdir(parents=True)
    (tmp_path / "data" / "rows.json").rename(corpora / "rows.json")
    monkeypatch.chdir(tmp_path)
    argv = ["build", "llava_json", "--data-root", "data", "--out", "build",
            "--set", "annotation=../corpora/team-private/rows.json", "--hub-folder", "hub"]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "corpora" not in card and "team-private" not in card, card
    assert "--data-root DATA_ROOT --out OUT --set annotation=rows.json --hub-folder HUB_FOLDER" in card
    assert "| llava_json | `rows.json` |" in card and '"annotation": "rows.json"' in card


def test_private_without_a_push_is_refused(tmp_path, capsys):
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--private")) == 1
    assert capsys.readouterr().err == ("error: --private applies to the repo --push-to-hub creates; add "
                                       "--push-to-hub REPO or drop it\n")
    assert not (tmp_path / "build").exists()


def test_a_dataset_push_with_the_hub_switched_off_is_refused_before_the_build(tmp_path, monkeypatch, capsys):
    """With HF_HUB_OFFLINE=1 the push at the end of a build cannot happen: it is refused in one line before a row
    is read (a full mixture's image checks take hours), as the trainer refuses push_to_hub, not with
    huggingface_hub's OfflineModeIsEnabled traceback once the build is done."""
    hub = HubRecorder(monkeypatch)
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes")) == 1
    assert capsys.readouterr().err == ("error: --push-to-hub needs the Hub, which is switched off here "
                                       "(HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE, or write what would be uploaded "
                                       "to a folder with --hub-folder DIR\n")
    assert not (tmp_path / "build").exists() and hub.repos == [] and hub.commits == []
