"""Files and folders a user keeps in or around a run's folders: rotation never deletes them, a publish never uploads
a secret among them, and a second run in another PID namespace of the same host does not take a live lock over."""

from __future__ import annotations

import os
import time

import pytest
from run_cases import run_argv, write_small_folder

from trainer import train as train_module


def test_rotation_keeps_folders_the_user_named_checkpoint_something(tiny_model, tmp_path):
    out = tmp_path / "out"
    for name in ("checkpoint-best", "checkpoint-1-keep"):
        (out / name).mkdir(parents=True)
        (out / name / "notes.txt").write_text("mine\n")
        old = time.time() - 3600  # made an hour before the run: the oldest folders by modification time
        os.utime(out / name, (old, old))
    data = write_small_folder(tmp_path / "data")
    train_module.main(run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=2", "--save_strategy=steps",
                               "--save_steps=1", "--save_total_limit=1", "--pool_calibration_images=4"))
    assert (out / "checkpoint-best" / "notes.txt").is_file()
    assert (out / "checkpoint-1-keep" / "notes.txt").is_file()
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-1").exists()  # rotation still rotates


def test_a_private_key_or_credential_in_the_upload_set_is_found(tmp_path):
    from modeling_croc.upload_scan import SECRET, scan_upload_set

    files = {
        "id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                      "-----END OPENSSH PRIVATE KEY-----\n",
        "server.pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj\n",
        "launch.sh": "export WANDB_API_KEY=3f2a9c0d1e4b5a6978877665544332211aabbccd\ntorchrun -m trainer.train\n",
        "keys.json": '{"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "id": "AKIAIOSFODNN7EXAMPLE"}',
        "run.ipynb": '{"outputs": [{"text": "GITHUB_TOKEN ghp_' + "a1B2" * 9 + '"}]}',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = scan_upload_set(tmp_path, sorted(files), user_name="nobody-here")
    assert {finding.file for finding in found if finding.kind == SECRET} == set(files)
    assert not any("3f2a9c0d" in finding.text or "wJalrX" in finding.text for finding in found)  # not quoted again
    # Look-alikes stay clean: a public key, a tokenizer's words, code naming the variables without a value.
    (tmp_path / "clean.py").write_text('PUBLIC = "-----BEGIN PUBLIC KEY-----"\nkey = os.environ["WANDB_API_KEY"]\n'
                                       'MAX_TOKEN_PASSWORD = 8\n# sk-learn, ghp_ and AKIA are prefixes\n')
    assert scan_upload_set(tmp_path, ["clean.py"], user_name="nobody-here") == []


def test_credentials_without_a_prefix_in_lower_case_or_in_a_netrc_are_found(tmp_path):
    """The shapes of a .env, a secrets JSON, an AWS credentials file and wandb's netrc, as users keep them: a bare
    `API_KEY=` / `PASSWORD=` / `SECRET_KEY=`, lower-case keys, `machine ... password ...`, a fine-grained GitHub
    token. Each is found, by name, never by value; a tokenizer's vocabulary with the same words stays clean."""
    from modeling_croc.upload_scan import SECRET, scan_upload_set

    value = "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    files = {
        "api.env": f"API_KEY={value}\n",
        "db.env": f"PASSWORD={value}\n",
        "django.env": f"SECRET_KEY={value}\n",
        "secrets.json": f'{{"api_key": "{value}"}}\n',
        "wandb.yaml": f"wandb_api_key: {value}\n",
        "credentials": f"[default]\naws_secret_access_key = {value}\n",
        "netrc": f"machine api.wandb.ai\n  login user\n  password {value}\n",
        "git-token.txt": "github_pat_11ABCDEFG0123456789_" + "a1B2" * 15 + "\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = scan_upload_set(tmp_path, sorted(files), user_name="nobody-here")
    assert {finding.file for finding in found if finding.kind == SECRET} == set(files)
    assert not any(value in finding.text or "a1B2a1B2" in finding.text for finding in found)
    (tmp_path / "vocab.json").write_text('{"PASSWORD": 51234, "API_KEY": 99121, "api_key": 3, "password": 7}\n')
    (tmp_path / "card.md").write_text("Log in with `wandb login`; the machine learning password field is optional.\n"
                                      "api_key = os.environ['WANDB_API_KEY']\n    password = self.raw_password_value\n")
    assert scan_upload_set(tmp_path, ["vocab.json", "card.md"], user_name="nobody-here") == []


def test_a_live_lock_from_another_pid_namespace_of_this_host_is_not_taken_over(tmp_path):
    """Containers sharing the host name (docker --network host) have their own process tables: a holder's pid that
    does not exist here says nothing about it; its heartbeat does. A lock written before this field existed keeps
    the old rule."""
    import json
    import socket

    import pytest

    from trainer.output_lock import LOCK_FILE, LockHolder, OutputDirLock, OutputDirLocked

    dead = 2**22 + 12345  # over any pid_max default: no such process here
    other_container = {**LockHolder.here().__dict__, "pid": dead,
                       "token": "live-elsewhere@another-boot-or-namespace:4026532999"}
    assert set(other_container) == {"host", "pid", "token", "started", "slurm_job", "slurm_restart"}  # as before
    (tmp_path / LOCK_FILE).write_text(json.dumps(other_container))
    with pytest.raises(OutputDirLocked, match=f"in use by process {dead} on {socket.gethostname()}"):
        OutputDirLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_FILE, (old, old))  # its heartbeat stopped an hour ago: stale
    OutputDirLock(tmp_path).acquire().release()
    older_format = {**other_container, "token": "live-elsewhere"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(older_format))
    OutputDirLock(tmp_path).acquire().release()  # same host, no such process: taken over at once, as before


def test_a_stopped_run_says_how_to_continue_when_the_same_command_would_not(tmp_path):
    from types import SimpleNamespace

    from trainer.resume import continue_hint

    newest = tmp_path / "out" / "checkpoint-4"
    rolled_back = SimpleNamespace(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-1"), auto_resume=True)
    assert continue_hint(rolled_back, newest).startswith(f"continue with --resume_from_checkpoint={newest} ")
    no_auto = SimpleNamespace(resume_from_checkpoint=None, auto_resume=False)
    assert continue_hint(no_auto, newest).startswith(f"continue with --resume_from_checkpoint={newest} ")
    for args in (SimpleNamespace(resume_from_checkpoint=None, auto_resume=True),
                 SimpleNamespace(resume_from_checkpoint=True, auto_resume=False),
                 SimpleNamespace(resume_from_checkpoint=str(newest), auto_resume=True)):
        assert continue_hint(args, newest) == "rerun the same command to continue"


def test_a_record_write_that_fails_leaves_the_previous_record_whole(tmp_path):
    """A full disk at the write of croc_run.json (simulated by a file-size limit of 1 KiB, the record is larger)
    leaves the previous record, not a cut one that makes the next run refuse its own output_dir."""
    import json
    import resource
    import subprocess
    import sys

    from trainer.run_record import RUN_RECORD, read_run_record, write_run_record

    record = {"format": 1, "stage": "1.5", "rows": ["x" * 40] * 60}  # about 3 KiB
    write_run_record(tmp_path, record, status="running")
    script = ("import sys; from trainer.run_record import write_run_record; "
              "write_run_record(sys.argv[1], {'format': 1, 'stage': '1.5', 'rows': ['y' * 40] * 60}, status='finished')")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], preexec_fn=limit, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode != 0 and "File too large" in done.stderr
    assert read_run_record(tmp_path) == {**record, "status": "running"}
    assert json.loads((tmp_path / RUN_RECORD).read_text())["status"] == "running"
    assert sorted(path.name for path in tmp_path.iterdir()) == [RUN_RECORD]  # no temporary file left


def test_a_full_disk_at_the_start_is_one_line(tiny_model, tmp_path, monkeypatch):
    # (The first write comes once the model loaded: a model folder that does not load leaves output_dir as it was.)
    from run_cases import cli_error

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module, "write_run_record", full)
    data = write_small_folder(tmp_path / "data")
    message = cli_error(run_argv("stage1_5.yaml", tmp_path / "out", tiny_model, data, "--max_steps=2"), monkeypatch)
    assert message.startswith(f"configuration error: output_dir {tmp_path / 'out'} cannot be written (No space left "
                              "on device)"), message


def test_a_resume_from_an_earlier_versions_checkpoint_says_what_now_computes_differently(tmp_path, caplog):
    """A fix that changes what a step computes (not a configuration key) is versioned in the record: resuming a
    checkpoint written before it says so, naming the changes, instead of going on silently off the old curve."""
    import json
    import logging

    from trainer.resume import _check_record
    from trainer.run_record import COMPUTATION, RUN_RECORD

    current = {"format": 1, "computation": COMPUTATION, "stage": "1.5"}
    for name, saved, warned in (("old", {"format": 1, "stage": "1.5"}, True), ("new", current, False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / RUN_RECORD).write_text(json.dumps(saved))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trainer.resume"):
            _check_record(str(tmp_path / name), current, [])
        assert ("masks of images with different token counts" in caplog.text) is warned, caplog.text


CHANGES_OF_VERSION_2 = ("masks of images with different token counts", "Gemma 3's bidirectional image blocks",
                        "Mistral 3 images bounded")


@pytest.mark.parametrize(("stage", "model_type", "named"), [
    ("2", "croc", ()),
    ("1.5", "croc", ("masks of images with different token counts",)),
    ("2", "croc_gemma3", ("Gemma 3's bidirectional image blocks",)),
    ("1.5", "croc_mistral3", ("masks of images with different token counts", "Mistral 3 images bounded")),
    ("2", None, ("Gemma 3's bidirectional image blocks",)),  # no config recorded: the family is not known
    ("2", "croc_qwen2_5_vl", ()),  # told computation 5's change only (below)
])
def test_an_earlier_versions_checkpoint_is_told_only_the_changes_its_run_computes(tmp_path, caplog, stage,
                                                                                   model_type, named):
    """The changes of a computation version touch some stages and families: a stage-2 LLaVA run resumed after the
    upgrade goes on on its exact curve, and was told it now computes differently (masks it never draws, Gemma 3's
    and Mistral 3's changes)."""
    import json
    import logging

    from trainer.resume import _check_record
    from trainer.run_record import RUN_RECORD

    saved = {"format": 1, "stage": stage, "croc_config": model_type and {"model_type": model_type}}
    (tmp_path / RUN_RECORD).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        _check_record(str(tmp_path), saved, [])
    # Computation 5 (the Qwen families' step-wide loss average) is told to the Qwen families and unknown ones only;
    # computation 7 (an image marker in a later question) to every run of the chat stages.
    qwen = model_type in (None, "croc_qwen2_5_vl")
    assert ("earlier version" in caplog.text) is (bool(named) or qwen or stage in ("1.5", "2")), caplog.text
    assert ("<image> marker sits in a later question" in caplog.text) is (stage in ("1.5", "2")), caplog.text
    assert [what for what in CHANGES_OF_VERSION_2 if what in caplog.text] == list(named), caplog.text
    assert ("Qwen2.5-VL's and Qwen3-VL's losses" in caplog.text) is qwen, caplog.text


@pytest.mark.parametrize(("ratio", "rounding", "named"), [(0.75, "keep_floor", False), (0.9, "keep_floor", True),
                                                          (0.9, "nearest", False), (0.5, "keep_floor", False),
                                                          (0.3, "keep_floor", True), (0.6, "keep_floor", False),
                                                          (0.7, "keep_floor", False)])
def test_a_keep_floor_run_at_an_inexact_ratio_is_told_its_counts_changed(tmp_path, caplog, ratio, rounding, named):
    """Computation 3 counts keep_floor's kept share as the ratio is written (1 - 0.9 was 0.0999...): a stage-1.5 run
    at such a ratio resumed across the upgrade is told its masked counts change; the presets' 0.75 is exact, and a
    share the float gives a little above the written one (1 - 0.6 is 0.4000...0002) floored to the same counts."""
    import json
    import logging
    import math

    from modeling_croc import CrocConfig
    from trainer.resume import _check_record
    from trainer.run_record import RUN_RECORD

    saved = {"format": 1, "computation": 2, "stage": "1.5",
             "croc_config": {"model_type": "croc", "mask_ratio": ratio, "mask_rounding": rounding}}
    (tmp_path / RUN_RECORD).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        _check_record(str(tmp_path), saved, [])
    assert ("keep_floor's masked count" in caplog.text) is named, caplog.text
    if rounding == "keep_floor":  # told exactly when a bare floor of the float share counted otherwise
        bare = [count - math.floor((1.0 - ratio) * count) for count in range(1, 4097)]
        config = CrocConfig(mask_ratio=ratio, mask_rounding=rounding, prompt_pool_size=4096)
        assert (bare != [config.num_masked_tokens(count) for count in range(1, 4097)]) is named


@pytest.mark.parametrize(("template", "named"), [
    ("gemma4", ("Gemma 4's image block", "every turn's text trimmed")),
    ("gemma3", ("every turn's text trimmed",)),
    ("vicuna_v1", ()),
])
def test_a_run_whose_template_renders_otherwise_now_is_told(tmp_path, caplog, template, named):
    """Computation 6: the template is recorded by name, and Gemma 4's now writes its image block between blank lines
    (Gemma 3's and Gemma 4's trim every turn's text, as their chat templates do): a run resumed across the change
    trains on other tokens, and is told so, where it went on silently."""
    import json
    import logging

    from trainer.resume import _check_record
    from trainer.run_record import RUN_RECORD

    saved = {"format": 1, "computation": 5, "stage": "2", "template": template,
             "croc_config": {"model_type": f"croc_{template}" if template.startswith("gemma") else "croc"}}
    (tmp_path / RUN_RECORD).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        _check_record(str(tmp_path), saved, [])
    changes = ("Gemma 4's image block", "every turn's text trimmed")
    assert [what for what in changes if what in caplog.text] == list(named), caplog.text


def test_a_later_versions_checkpoint_is_not_resumed_silently(tmp_path, caplog):
    """A checkpoint written by a later version (a downgrade between the kill and the resume) goes on without that
    version's fixes: the resume says so instead of continuing silently off its curve."""
    import json
    import logging

    from trainer.resume import _check_record
    from trainer.run_record import COMPUTATION, RUN_RECORD

    saved = {"format": 1, "computation": COMPUTATION + 1, "stage": "2"}
    (tmp_path / RUN_RECORD).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        _check_record(str(tmp_path), saved, [])
    assert f"written by a later version of this trainer (computation {COMPUTATION + 1}" in caplog.text, caplog.text


@pytest.mark.parametrize(("croc_config", "named"), [
    ({"model_type": "croc", "croc_preset": "victor"}, True),  # ViCToR's preset matches per row
    ({"model_type": "croc", "croc_preset": "paper", "matching_scope": "row"}, True),
    ({"model_type": "croc", "croc_preset": "paper"}, False),
])
def test_an_earlier_versions_row_matched_checkpoint_is_told_packed_rows_now_match_per_sample(tmp_path, caplog,
                                                                                            croc_config, named):
    import json
    import logging

    from trainer.resume import _check_record
    from trainer.run_record import RUN_RECORD

    saved = {"format": 1, "stage": "1.5", "croc_config": croc_config}
    (tmp_path / RUN_RECORD).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        _check_record(str(tmp_path), saved, [])
    assert ("packed rows matched per sample under matching_scope=row" in caplog.text) is named, caplog.text
