"""Several processes on the CPU (gloo), started the documented way:

    torchrun --nproc_per_node 2 -m trainer.train trainer/configs/cpu_tiny/stage1_5.yaml [--deepspeed=...]
    torchrun --nnodes 2 --node_rank R --rdzv-endpoint 127.0.0.1:PORT --nproc_per_node 1 -m trainer.train ...

Two data-parallel processes, ZeRO-2 and ZeRO-3 (also on croc_split with gradient checkpointing), and two nodes
(simulated on this machine, loopback only) with ZeRO-3 and packing all reproduce one process with the same global
batch (stage 1.5, Croc objectives on: same losses, same weights), and save a folder that `from_pretrained` loads
completely. The first DeepSpeed run on a machine JIT-compiles DeepSpeed's CPU shared-memory communication op (~1-2
min, cached).
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from trainer_helpers import log_history, run_stage, torchrun, torchrun_nodes

from croc_testing.optional import needs_deepspeed
from modeling_croc import CrocForConditionalGeneration
from trainer import train as train_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_file(data_dir):
    """The stage-1.5 rows plus one whose image is cut in half: every process setup must replace and count it alike
    (the counts are summed over processes, the records gathered to the main one); and one whose image is missing,
    rejected before training alike."""
    broken = data_dir / "images" / "broken.png"
    good = (data_dir / "images" / "000.png").read_bytes()
    broken.write_bytes(good[: len(good) // 2])
    rows = json.loads((data_dir / "detailed.json").read_text())
    rows.insert(2, {**rows[0], "id": "broken", "image": "images/broken.png"})
    # Rejected before training (no such file): validated by the main process, the verdict sent to the others.
    rows.insert(4, {**rows[0], "id": "missing", "image": "images/missing.png"})
    path = data_dir / "detailed_with_broken.json"
    path.write_text(json.dumps(rows))
    return path


def _common(data_file, stage1_dir) -> list[str]:
    # Global batch 4: two micro-batches of 2 in one process, or one batch of 2 on each of two processes. A checkpoint
    # each step: the staged save and its rename wait for every process.
    return [f"--data.path={data_file}", f"--model.name_or_path={stage1_dir}", "--per_device_train_batch_size=2",
            "--global_batch_size=4", "--max_steps=2", "--save_strategy=steps", "--save_steps=1",
            "--data.max_reject_fraction=0.5"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_file, stage1_dir):
    out = tmp_path_factory.mktemp("one_process")
    run_stage("stage1_5.yaml", out, *_common(data_file, stage1_dir))
    return out


def _assert_same_run(out, reference, atol: float) -> None:
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (out / ".checkpoint-staging").exists()
    report, expected_report = (json.loads((folder / "data_report.json").read_text()) for folder in (out, reference))
    assert (report["rows_seen"], report["replaced"]) == (expected_report["rows_seen"], expected_report["replaced"])
    assert report["rejected"] == expected_report["rejected"]
    assert {reason: count for reason, count in report["rejected"].items() if count} == {"missing_image": 1}
    assert (out / "rejects.jsonl").read_text() == (reference / "rejects.jsonl").read_text()
    curve = [e for e in log_history(reference) if "loss" in e]
    again = [e for e in log_history(out) if "loss" in e]
    assert len(again) == len(curve) == 2
    for expected, actual in zip(curve, again):
        for key in ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy"):
            assert actual[key] == pytest.approx(expected[key], rel=1e-5), key
    # Compared as loaded models: a ZeRO-3 save may spell the Hub layout with the legacy CLIP / Llama prefixes
    # (`vision_tower.vision_model.*`), which `from_pretrained` maps back all the same.
    model, info = CrocForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected_state = CrocForConditionalGeneration.from_pretrained(reference).state_dict()
    state = model.state_dict()
    assert set(state) == set(expected_state)
    for name, tensor in expected_state.items():
        torch.testing.assert_close(state[name].float(), tensor.float(), rtol=1e-4, atol=atol, msg=name)


def test_two_processes_equal_one_process(tmp_path, data_file, stage1_dir, reference):
    assert json.loads((reference / "data_report.json").read_text())["replaced"]["unreadable_image"] >= 1
    torchrun(2, "stage1_5.yaml", tmp_path / "ddp", *_common(data_file, stage1_dir))
    _assert_same_run(tmp_path / "ddp", reference, atol=1e-6)


@needs_deepspeed
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_zero_on_cpu(tmp_path, data_file, stage1_dir, reference, zero):
    out = tmp_path / zero
    torchrun(2, "stage1_5.yaml", out, *_common(data_file, stage1_dir),
             f"--deepspeed=trainer/configs/deepspeed/{zero}.json")
    _assert_same_run(out, reference, atol=1e-5)


@needs_deepspeed
def test_zero3_with_split_attention_and_checkpointing_equals_one_process(tmp_path, data_file, stage1_dir, reference):
    # croc_split (no mask: the query segments reach every layer as a keyword argument) with every layer recomputed
    # in the backward pass, parameters partitioned by ZeRO-3, against the one-process run on sdpa's mask.
    out = tmp_path / "zero3_split"
    torchrun(2, "stage1_5.yaml", out, *_common(data_file, stage1_dir),
             "--deepspeed=trainer/configs/deepspeed/zero3.json", "--model.attn_implementation=croc_split",
             "--gradient_checkpointing=true")
    _assert_same_run(out, reference, atol=1e-5)


@needs_deepspeed
def test_two_nodes_zero3_equal_one_process(tmp_path, data_file, stage1_dir, reference):
    # Each "node" is its own torchrun agent with one process (LOCAL_RANK 0 on both, RANK 0 and 1), meeting at a
    # loopback rendezvous: what two machines of a cluster run, minus the network.
    # Packed, against the padded one-process reference: packing changes no result (tests/trainer/test_equivalence.py),
    # so this also runs it across processes and nodes under ZeRO-3.
    out = tmp_path / "two_nodes"
    logs = torchrun_nodes(2, "stage1_5.yaml", out, *_common(data_file, stage1_dir),
                          "--deepspeed=trainer/configs/deepspeed/zero3.json", "--packing=true",
                          "--packing_max_length=256")
    # One run over both nodes, not two single-process runs (which would also reproduce the reference).
    assert "2 process(es) on 2 node(s): global batch = 2 per device x 2 process(es) x 1 accumulation step(s)" in logs[0]
    _assert_same_run(out, reference, atol=1e-5)
    # DeepSpeed's calls to torch's deprecated collectives: one log line, not a FutureWarning per call.
    assert not any(": FutureWarning: " in log for log in logs), [
        line for log in logs for line in log.splitlines() if ": FutureWarning: " in line][:3]
    assert "their FutureWarnings (one per call) are not shown" in logs[0]


@pytest.mark.parametrize("after_upload", [False, True])
def test_a_launched_run_leaves_its_process_group_together_unless_it_uploaded(monkeypatch, after_upload):
    # Every process waits for the others before tearing its connections down (a process that left first, with the
    # main one still writing, aborted at exit); after an upload they do not, since the upload may outlast ddp_timeout.
    import torch.distributed as dist

    from trainer.train import _leave_process_group

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *args, **kwargs: calls.append("destroy"))
    _leave_process_group(main_works_alone=after_upload)
    assert calls == (["destroy"] if after_upload else ["barrier", "destroy"])


@pytest.mark.parametrize("work", ["push_to_hub", "hub_dry_run", "LoRA merge", "nothing"])
def test_the_others_do_not_wait_while_the_main_process_works_alone(monkeypatch, work):
    """A LoRA run's main process merges the adapters (the base loaded, merged, saved) and a dry run copies and scans
    the whole folder, alone, after the others returned: they waited in the barrier, which ends at ddp_timeout with
    an error, and the launcher then stops the main process mid-merge."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *args, **kwargs: calls.append("destroy"))
    args = SimpleNamespace(push_to_hub=work == "push_to_hub", hub_dry_run="dry" if work == "hub_dry_run" else None)
    model = SimpleNamespace(get_base_model=lambda: None) if work == "LoRA merge" else SimpleNamespace()
    monkeypatch.setattr(train_module, "main", lambda: SimpleNamespace(args=args, model=model))
    monkeypatch.setattr(sys, "argv", ["trainer.train", "stage.yaml"])
    train_module.cli()
    assert calls == (["barrier", "destroy"] if work == "nothing" else ["destroy"])


@needs_deepspeed
def test_a_lora_run_under_zero3_equals_one_process_and_writes_its_merged_folder(tmp_path, data_dir, stage1_dir):
    """The LoRA merge after training runs on the main process alone; under ZeRO-3 transformers built its base in
    `deepspeed.zero.Init`, a broadcast to processes that had already left: the run trained, saved its adapters and
    ended in a traceback with no merged folder. And its adapters started from other values than the one-process
    run's (drawn after a partitioned build), leaving its curve at step 2 (both found by a hostile tester)."""
    from trainer.merge_lora import merge_lora

    common = [f"--data.path={data_dir / 'detailed.json'}", f"--model.name_or_path={stage1_dir}",
              "--per_device_train_batch_size=2", "--global_batch_size=4", "--max_steps=2", "--model.use_peft=true",
              "--model.lora_r=4", "--model.lora_alpha=8", "--model.lora_dropout=0", "--language_model_lr=1e-2"]
    run_stage("stage1_5.yaml", tmp_path / "one", *common)
    out = tmp_path / "zero3"
    torchrun(2, "stage1_5.yaml", out, *common, "--deepspeed=trainer/configs/deepspeed/zero3.json")
    model, info = CrocForConditionalGeneration.from_pretrained(tmp_path / "zero3-merged", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    state = model.state_dict()
    again = CrocForConditionalGeneration.from_pretrained(merge_lora(out, tmp_path / "again")).state_dict()
    one = CrocForConditionalGeneration.from_pretrained(tmp_path / "one-merged").state_dict()
    assert state.keys() == again.keys() == one.keys()
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, again[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(tensor, one[name], rtol=1e-4, atol=1e-5, msg=name)


@needs_deepspeed
def test_qwen3_5_from_its_hub_folder_under_zero3_equals_one_process(tmp_path, data_dir):
    """Qwen3.5's Gated DeltaNet draws from the global random state while `zero.Init` builds it on real tensors (the
    one-process load builds on the meta device and draws nothing), so the VTR head its Hub folder lacks was
    initialised otherwise under ZeRO-3 and the run left the one-process curve at its first step (found by a hostile
    tester; `tests/test_family_qwen3_5.py` pins the cause)."""
    from croc_testing.qwen3_vl import save_tiny_qwen3_5

    common = [f"--data.path={data_dir / 'detailed.json'}",
              f"--model.name_or_path={save_tiny_qwen3_5(tmp_path / 'plain')}", "--per_device_train_batch_size=2",
              "--global_batch_size=4", "--max_steps=2"]
    run_stage("stage1_5_qwen3_5.yaml", tmp_path / "one", *common)
    torchrun(2, "stage1_5_qwen3_5.yaml", tmp_path / "zero3", *common,
             "--deepspeed=trainer/configs/deepspeed/zero3.json")
    curves = [[entry for entry in log_history(tmp_path / run) if "loss" in entry] for run in ("one", "zero3")]
    assert len(curves[0]) == len(curves[1]) == 2
    for expected, actual in zip(*curves):
        for key in ("loss", "lm_loss", "vtr_loss"):
            assert actual[key] == pytest.approx(expected[key], rel=1e-5), key
