"""Issue 20 under a real launcher: torchrun with two processes (gloo, CPU), the way a cluster job runs.

* SIGTERM sent to torchrun (what Slurm or Kubernetes send before a preemption) reaches every worker through
  torchrun's forwarding; they agree on the step, write one complete checkpoint and stop; the same command then
  resumes and ends where an uninterrupted run ends.
* A NaN loss on one process only stops every process at the same step with the same line, nothing of that step
  saved.
* A checkpoint write that fails on one process only (a full disk under its RNG state) stops every process with the
  same line, none left in a barrier with a peer that exited.
"""

from __future__ import annotations

import pytest
import torch
from run_cases import CONFIGS, curve, torchrun, two_nodes, weights, write_small_folder

from croc_testing.optional import needs_deepspeed
from trainer import train as train_module
from trainer.checkpoint_io import checkpoint_problem

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_folder(tmp_path_factory.mktemp("launcher_data"))


def _common(out, model, data, *extra):
    # Global batch 4: two processes of 2, or one process of 2 x 2 accumulation steps.
    return [str(CONFIGS / "stage1_5.yaml"), f"--output_dir={out}", f"--model.name_or_path={model}",
            f"--data.path={data}", "--disable_tqdm=true", "--per_device_train_batch_size=2",
            "--global_batch_size=4", "--max_steps=4", *extra]


def test_sigterm_to_torchrun_checkpoints_every_worker_and_the_rerun_ends_like_an_uninterrupted_run(
        tiny_model, data, tmp_path):
    reference = tmp_path / "one_process"
    train_module.main(_common(reference, tiny_model, data))

    out = tmp_path / "two_processes"
    first = torchrun(_common(out, tiny_model, data), fault="sigterm-launcher:2")
    assert first.returncode != 0  # torchrun reports the signal it was stopped by
    assert first.stderr.count(f"run stopped: stopped by SIGTERM after step 2: checkpoint-2 written in {out}") == 2, \
        first.stderr[-4000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert checkpoint_problem(out / "checkpoint-2") is None and not (out / "model.safetensors").exists()

    again = torchrun(_common(out, tiny_model, data))
    assert again.returncode == 0, again.stderr[-4000:]
    expected, resumed = curve(reference), curve(out)
    assert sorted(resumed) == sorted(expected) == [1, 2, 3, 4]
    for step, entry in expected.items():
        for key in ("loss", "lm_loss", "vtr_loss"):
            assert resumed[step][key] == pytest.approx(entry[key], rel=1e-5), (step, key)
    want, got = weights(reference), weights(out)
    assert set(want) == set(got)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_a_nan_on_one_process_stops_every_process_at_the_same_step(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    done = torchrun(_common(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1"), fault="nan-loss:1:2")
    assert done.returncode != 0
    line = (f"run stopped: training diverged at step 2: non-finite loss, grad_norm nan; that step was not applied and "
            f"nothing was saved; the newest checkpoint is {out / 'checkpoint-1'}")
    assert done.stderr.count(line) == 2, done.stderr[-4000:]  # both processes, the same step, the same words
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert checkpoint_problem(out / "checkpoint-1") is None


def test_a_write_failing_on_one_process_stops_every_process_with_the_same_line(tiny_model, data, tmp_path):
    # Process 1's rng_state_1.pth cannot be written: process 0, whose files were all written, waited in the barrier
    # and was killed by torchrun without a word (on several nodes it ended in gloo's "Connection closed by peer").
    out = tmp_path / "run"
    done = torchrun(_common(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1"),
                     fault="write-fail:1:rng_state_1", timeout=300)
    assert done.returncode != 0
    line = f"run stopped: could not write checkpoint-1 into {out}: a file write failed"
    assert done.stderr.count(line) == 2, done.stderr[-4000:]
    assert "(on process 1); nothing else was changed; no checkpoint was written yet" in done.stderr
    assert "Connection closed by peer" not in done.stderr
    assert not list(out.glob("checkpoint-*")) and not (out / ".checkpoint-staging").exists()


@pytest.mark.parametrize("fault", ["lock-takeover:2", "lock-takeover-saving:2"])
def test_a_lock_taken_over_stops_every_process_with_the_same_line(tiny_model, data, tmp_path, fault):
    """Only the main process holds output_dir's lock: its loss (seen by the heartbeat during step 2, or read again
    before checkpoint-2's rename) stops every process, none left in a collective, nothing more written."""
    out = tmp_path / "run"
    done = torchrun(_common(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1"), fault=fault,
                     timeout=300)
    assert done.returncode != 0
    stopped = 1 if fault == "lock-takeover:2" else 2
    line = (f"run stopped: the lock of output_dir {out} was taken over by process 4321 on node-9, since ")
    end = f"the other run owns the folder now; this run stopped after step {stopped} and wrote nothing more"
    assert done.stderr.count(line) == 2 and done.stderr.count(end) == 2, done.stderr[-4000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / "model.safetensors").exists()
    assert '"token": "new-holder"' in (out / ".croc-run.lock").read_text()


@needs_deepspeed
def test_a_zero2_shard_write_failing_on_one_process_stops_it_without_a_hang(tiny_model, data, tmp_path):
    # Process 1's ZeRO optimizer shard cannot be written: process 0 waits in DeepSpeed's closing barrier, which
    # process 1 never reaches; had process 1 gone on into the write agreement, both would wait there forever.
    out = tmp_path / "run"
    done = torchrun(_common(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1",
                             "--deepspeed=trainer/configs/deepspeed/zero2.json"),
                     fault="write-fail:1:zero_pp_rank_1", timeout=240)
    assert done.returncode != 0
    assert f"run stopped: could not write checkpoint-1 into {out}: a file write failed" in done.stderr, \
        done.stderr[-4000:]
    assert not list(out.glob("checkpoint-*"))


def test_a_two_process_run_preempted_in_its_second_epoch_resumes_that_epochs_row_order(tiny_model, data, tmp_path):
    # group_by_modality_length (the stage YAMLs'): 6 image + 2 text rows make 3 steps of 4 rows an epoch; the stop
    # comes in the second epoch, whose resumed part must be drawn in that epoch's order, not in epoch 0's.
    extra = ("--group_by_modality_length=true", "--max_steps=7")
    reference = tmp_path / "one_process"
    train_module.main(_common(reference, tiny_model, data, *extra))

    out = tmp_path / "two_processes"
    first = torchrun(_common(out, tiny_model, data, *extra), fault="sigterm-launcher:4")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"], first.stderr[-4000:]
    again = torchrun(_common(out, tiny_model, data, *extra))
    assert again.returncode == 0, again.stderr[-4000:]
    expected, resumed = curve(reference), curve(out)
    assert sorted(resumed) == sorted(expected) == list(range(1, 8))
    for step, entry in expected.items():
        assert resumed[step]["loss"] == pytest.approx(entry["loss"], rel=1e-5), step


def test_a_lora_run_with_dropout_is_not_resumed_on_another_number_of_processes(tiny_model, data, tmp_path):
    # LoRA dropout draws from each process's torch generator, saved per process (rng_state_<rank>.pth): one process
    # finds no rng_state.pth to restore, so the resumed steps drop other units than any uninterrupted run would.
    from trainer.cli import ConfigError

    out = tmp_path / "lora"
    first = torchrun(_common(out, tiny_model, data, "--model.use_peft=true"), fault="sigterm-launcher:2")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"], first.stderr[-4000:]
    with pytest.raises(ConfigError, match="random_stream_processes 2 -> 1"):
        train_module.main(_common(out, tiny_model, data, "--model.use_peft=true"))


def test_a_run_whose_epochs_two_processes_fill_up_is_not_resumed_on_one_process(tiny_model, data, tmp_path):
    # 6 rows, 2 per device on 2 processes: accelerate fills each epoch's last round with the epoch's first 2 rows again
    # (8 rows an epoch), where one process trains a short last step of 2 rows (6). Resumed on one process (2 x 2
    # accumulation, the same global batch), the run was accepted and left the uninterrupted curve at step 2.
    import json

    from trainer.cli import ConfigError

    six = data.with_name("six.json")  # beside the rows: their image paths are relative to it
    six.write_text(json.dumps(json.loads(data.read_text())[:6]), encoding="utf-8")
    out = tmp_path / "two_processes"
    first = torchrun(_common(out, tiny_model, six), fault="sigterm-launcher:1")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"], first.stderr[-4000:]
    # Said at the start, once: the repeats were counted as seen rows and named nowhere (found by a hostile tester).
    said = "each epoch trains 8 rows for the 6 kept: its last round of 2 processes x 2 rows repeats the epoch's first 2"
    assert (first.stdout + first.stderr).count(said) == 1, first.stderr[-4000:]
    # A derived key, which no setting of that name restores: the line says what it stands for.
    with pytest.raises(ConfigError, match=r"epoch_rows 8 -> 6 \(the rows an epoch trains .*another number of "
                                          r"processes or per-device batch"):
        train_module.main(_common(out, tiny_model, six))


def test_the_processes_of_a_node_parse_the_rows_once_share_them_and_say_their_counts_once(
        tiny_model, data, tmp_path, monkeypatch):
    # The first process of the node parses the JSON into `datasets`' cache while the other waits, then both map it
    # (a fresh cache: earlier tests of this session already hold the rows of `data`).
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    import json

    # One row whose image is missing: the start rejects it, so the data report's lines are warnings, which the
    # replicas log too (transformers' log_level_replica): every process holds the same counts, one process says them.
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([*json.loads(data.read_text()), {
        "id": "gone", "image": "images/gone.png",
        "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "Gone."}]}]))
    parses = tmp_path / "parses.txt"
    done = torchrun(_common(tmp_path / "run", tiny_model, rows, "--max_steps=1",
                            f"--data.image_root={data.parent}", "--data.max_reject_fraction=0.5"),
                    fault=f"parses-to:{parses}")
    assert done.returncode == 0, done.stderr[-4000:]
    assert parses.read_text().split() == ["0"]
    assert len(list((tmp_path / "hf_datasets" / "croc_rows").glob("*.arrow"))) == 1
    said = [line for line in done.stderr.splitlines() if "training rows from" in line]
    assert len(said) == 2 and "1 rejected (missing_image=1)" in said[0] and "in training" in said[1], said


def test_a_parquet_folder_trains_on_both_processes_where_the_datasets_cache_cannot_be_written(
        tiny_model, data, tmp_path, monkeypatch):
    # `load_dataset` writes its Arrow and lock files into HF_DATASETS_CACHE even for a local folder: an uncreatable
    # (or read-only) cache refused the folder as rows that "cannot be read", on every process. Each process now reads
    # the rows itself, into memory, and says so once, as for a JSON file.
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "parquet"
    folder.mkdir()
    rows = [{**row, "image": row.get("image")} for row in json.loads(data.read_text())]
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    (tmp_path / "a_file").touch()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "a_file" / "cache"))
    done = torchrun(_common(tmp_path / "run", tiny_model, folder, "--max_steps=1", f"--data.image_root={data.parent}"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr.count(f"rows of {folder}: cannot prepare them in {tmp_path / 'a_file' / 'cache'} "
                             "(Not a directory); this process reads them itself, in memory") == 2, done.stderr[-4000:]


def test_nodes_that_would_train_different_runs_or_write_into_different_folders_are_refused_on_both(tiny_model, data,
                                                                                                  tmp_path):
    """Two nodes (a torchrun agent each, one process each): a node reading another copy of the rows (its captions
    edited) trained them silently, the run record describing the main process's only; the same relative output_dir
    from two working directories (a node-local folder) left the second node's part of every checkpoint in its own
    staging folder, found at the first resume (both from a hostile tester of multi-node runs). Each is refused before
    the model loads, on both nodes, with the same line."""
    import json
    import shutil

    other = tmp_path / "other_copy"
    shutil.copytree(data.parent, other)
    rows = json.loads((other / data.name).read_text())
    rows[0]["conversations"][-1]["value"] = "Another caption."
    (other / data.name).write_text(json.dumps(rows))
    out = tmp_path / "shared"
    nodes = two_nodes([_common(out, tiny_model, data), _common(out, tiny_model, other / data.name)],
                      [tmp_path, tmp_path])
    lines = [done.stderr.strip().splitlines()[-1] for done in nodes]
    assert all(done.returncode != 0 for done in nodes), [done.stderr[-3000:] for done in nodes]
    assert any("process 1 (on " in line and "would train another run than process 0" in line and "data_rows" in line
               for line in nodes[0].stderr.splitlines()), nodes[0].stderr[-3000:]
    assert all("configuration error: process 1" in done.stderr for done in nodes), lines
    assert not (out / "model.safetensors").exists()

    for node in ("node_a", "node_b"):
        (tmp_path / node).mkdir()
    nodes = two_nodes([_common("local_out", tiny_model, data)] * 2, [tmp_path / "node_a", tmp_path / "node_b"])
    assert all(done.returncode != 0 for done in nodes), [done.stderr[-3000:] for done in nodes]
    assert all("configuration error: output_dir local_out is not the same folder on" in done.stderr
               for done in nodes), [done.stderr[-3000:] for done in nodes]


def test_a_node_that_stops_before_the_run_starts_stops_the_others_with_its_line(tiny_model, data, tmp_path):
    """Node 1's copy of the data is missing: its process stopped with one line before torch's rendezvous, and node 0
    waited there for it with nothing in its log (for ever on CPUs, where transformers gives the process group no
    timeout; ddp_timeout, 4 hours, on GPUs; from a hostile tester of multi-node runs). Both nodes now stop at once,
    node 0 with node 1's line."""
    out = tmp_path / "run"
    missing = tmp_path / "not_copied" / data.name
    nodes = two_nodes([_common(out, tiny_model, data), _common(out, tiny_model, missing)], [tmp_path, tmp_path],
                      timeout=240)
    assert all(done.returncode != 0 for done in nodes), [done.stderr[-3000:] for done in nodes]
    own = [line for line in nodes[1].stderr.splitlines() if line.startswith("configuration error: data.path")]
    assert len(own) == 1 and str(missing) in own[0], nodes[1].stderr[-3000:]
    told = [line for line in nodes[0].stderr.splitlines() if line.startswith("run not started: process 1 (on ")]
    assert len(told) == 1 and told[0].endswith(f"stopped before the run started: {own[0]}"), nodes[0].stderr[-3000:]
