"""Shared by the publishing fault tests (the trainer's dry runs and pushes, the recipes' hub folders and pushes, the
scanner): a token-shaped secret, a small data folder, what a folder holds, the independent leak search, and a
recorder of the Hub calls a push makes. The module name is unique on purpose: the test tree has no __init__.py
files."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
from fault_cases import image_row, write_good_image
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, RepoUrl

TOKEN = "hf_" + "Q7r" * 12  # shaped like a real token: hf_ + 36 letters and digits


REPO = Path(__file__).resolve().parents[2]
STAGE2 = REPO / "trainer" / "configs" / "cpu_tiny" / "stage2.yaml"


def run_argv(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    """A one-step tiny stage-2 run of `model` on `data` into `out`, plus `extra` options."""
    return [str(STAGE2), f"--output_dir={out}", f"--model.name_or_path={model}", f"--data.path={data}",
            "--disable_tqdm=true", "--group_by_modality_length=false", "--max_steps=1",
            "--per_device_train_batch_size=2", "--global_batch_size=2", *extra]


def write_data(root: Path, rows: int = 4) -> Path:
    """`rows` image rows of plain colours; returns the LLaVA file."""
    for i in range(rows):
        write_good_image(root / "images" / f"{i}.png", (50 * i, 120, 200))
    (root / "rows.json").write_text(json.dumps([image_row(f"r{i}", f"images/{i}.png", f"Colour {i}.")
                                                for i in range(rows)]))
    return root / "rows.json"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, and every folder (as b"<dir>")."""
    return {p.relative_to(root).as_posix(): b"<dir>" if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def file_names(folder: Path) -> list[str]:
    """Every file under `folder`, relative to it, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def leaks(contents: dict[str, bytes], tmp_path: Path, token: str | None = None) -> list[str]:
    """The independent check: every byte of every file searched for the token, the test's folders (as given and
    resolved), the home and working directories as path prefixes, and the user name as a path component."""
    needles = {str(tmp_path), os.path.realpath(tmp_path), str(Path.home()) + "/", os.getcwd() + "/",
               f"/{getpass.getuser()}/"}
    if token:
        needles.add(token)
    return [f"{name}: {needle}" for name, data in contents.items() for needle in sorted(needles)
            if needle.encode() in data]


class HubRecorder:
    """`HfApi.create_repo`, `list_repo_files` and `create_commit` replaced: the repos created and every commit's
    operations, with the bytes of each added file read at commit time (a push's staging folder is gone after).
    `repo_info` answers each repo's visibility (`private_repos`: those already private before the push)."""

    def __init__(self, monkeypatch, remote_files: list[str] | None = None) -> None:
        self.repos, self.commits, self.remote_files = [], [], remote_files or []
        # `repo_info(...).private` as the Hub answers it: a repo made private before the push stays private (a
        # `create_repo(exist_ok=True)` leaves it as it is); a repo the push created is as it asked.
        self.private_repos: set[str] = set()
        recorder = self

        def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
            recorder.repos.append({"repo_id": repo_id, "private": private, "repo_type": repo_type})
            return RepoUrl(f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}")

        def list_repo_files(self, repo_id, *, revision=None, repo_type=None, token=None):
            return list(recorder.remote_files)

        def create_commit(self, repo_id, operations, *, commit_message, token=None, repo_type=None, revision=None,
                          **kwargs):
            added = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations
                     if isinstance(op, CommitOperationAdd)}
            deleted = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
            recorder.commits.append({"repo_id": repo_id, "repo_type": repo_type, "added": added, "deleted": deleted,
                                     "token": token})
            prefix = "datasets/" if repo_type == "dataset" else ""
            return CommitInfo(commit_url=f"https://huggingface.co/{prefix}{repo_id}/commit/{'0' * 40}",
                              commit_message=commit_message, commit_description="", oid="0" * 40)

        def repo_info(self, repo_id, *, repo_type=None, **kwargs):
            created = [repo["private"] for repo in recorder.repos if repo["repo_id"] == repo_id]
            private = repo_id in recorder.private_repos or bool(created and created[0])
            return SimpleNamespace(id=repo_id, private=private)

        for name, method in (("create_repo", create_repo), ("list_repo_files", list_repo_files),
                             ("create_commit", create_commit), ("repo_info", repo_info)):
            monkeypatch.setattr(huggingface_hub.HfApi, name, method)
