"""Gradient accumulation, resuming and packing leave training unchanged (stage 1.5 with the Croc objectives on, and
stages 1 and 2 for packing).

Masks: the trainer seeds each micro-batch's generator from (seed, global step) and skips the draws of the images
before it in the step (`trainer.croc_rng`), so the k-th image of a step gets the same mask however the step is
split, and packing draws them in the order the images arrived (`croc_image_order`). That makes an exact comparison
possible with the real mask ratio (0.75 of each image's tokens), and the negative control shows the comparison
would catch masks that depend on the split.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import log_history, run_stage
from transformers import TrainerCallback

from croc_testing.trainer_specs import TRAINER_SPECS
from trainer import croc_rng
from trainer import croc_trainer as croc_trainer_module
from trainer import train as train_module
from trainer.collator import IMAGE_ORDER_KEY, CrocDataCollator

pytestmark = pytest.mark.slow  # minutes of a worker: run first (tests/conftest.py)

# Packed rows of at most this many tokens: three or four cpu_tiny samples of 50-110 tokens each.
PACKING = ("--packing=true", "--packing_max_length=256")


def _updates(before: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach() - before[name] for name, tensor in model.state_dict().items()}


def _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, per_device: int, name: str, *extra: str,
                  config: str = "stage1_5.yaml", data: str = "detailed.json"):
    # SGD without clipping: the update is the gradient itself, so any error in how the LM and VTR terms are
    # normalised over micro-batches shows (Adam's first step would hide scale errors, clipping would rescale).
    rates = {"stage1.yaml": ["--projector_lr=0.1"], "stage2.yaml": ["--projector_lr=0.1", "--language_model_lr=0.1"]}
    trainer = run_stage(
        config, tmp_path / name, f"--data.path={data_dir / data}",
        f"--model.name_or_path={stage1_dir}", f"--per_device_train_batch_size={per_device}",
        "--global_batch_size=4", "--max_steps=1", "--optim=sgd", "--max_grad_norm=0",
        *rates.get(config, ["--projector_lr=0.1", "--prompt_pool_lr=0.1", "--language_model_lr=0.1"]), *extra,
    )
    state = dict(initial_state)
    initial_state.clear()
    return _updates(state, trainer.model), [e for e in log_history(tmp_path / name) if "loss" in e][0]


def _assert_same_step(actual, actual_log, expected, expected_log, keys) -> None:
    for key in keys:
        assert actual_log[key] == pytest.approx(expected_log[key], rel=1e-5), key
    moved = 0
    for name, update in expected.items():
        torch.testing.assert_close(actual[name], update, rtol=1e-4, atol=1e-7, msg=name)
        moved += int(update.abs().max() > 0)
    assert moved > 3


def test_accumulation_equals_the_doubled_batch(tmp_path, data_dir, stage1_dir, initial_state, monkeypatch):
    split, split_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 2, "accumulate")
    whole, whole_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 4, "whole")
    assert split_log["vtr_loss"] > 0 and split_log["pool_utilisation"] > 0
    _assert_same_step(split, split_log, whole, whole_log,
                      ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy"))
    assert sum(int(update.abs().max() > 0) for update in whole.values()) > 10

    # Negative control: masks seeded per micro-batch without the offset differ from the whole batch's.
    monkeypatch.setattr(croc_trainer_module, "mask_generator",
                        lambda seed, step, offset: croc_rng.mask_generator(seed, step, 0))
    naive, naive_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 2, "naive")
    differs = max(float((naive[n] - whole[n]).abs().max()) for n in whole if "prompt_pool" in n)
    assert differs > 1e-4 or naive_log["vtr_loss"] != pytest.approx(whole_log["vtr_loss"], rel=1e-5)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_accumulation_equals_the_doubled_batch_where_the_parent_refuses_loss_kwargs(tmp_path, data_dir, initial_state,
                                                                                     family):
    # Qwen2.5-VL and Qwen3-VL declare `accepts_loss_kwargs = False`: the Trainer passed them no `num_items_in_batch`,
    # averaged each micro-batch's own mean, and a step of 2 x 2 rows computed another loss and update than 1 x 4 (a
    # resume on another per-device batch, which the record lets through, left the uninterrupted curve).
    spec = next(spec for spec in TRAINER_SPECS if spec.name == family)
    plain = spec.save_plain(tmp_path / "plain")
    split, split_log = _one_sgd_step(tmp_path, data_dir, plain, initial_state, 2, "accumulate", config=spec.config)
    whole, whole_log = _one_sgd_step(tmp_path, data_dir, plain, initial_state, 4, "whole", config=spec.config)
    assert whole_log["vtr_loss"] > 0
    _assert_same_step(split, split_log, whole, whole_log, ("loss", "lm_loss", "vtr_loss"))


class _Kill(TrainerCallback):
    """Stops the process the hard way as step 3 begins, after checkpoint-2 was written."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, data_dir, stage1_dir, monkeypatch, packing):
    # 12 rows, 4 per step: 3 steps per epoch, so the resumed run also crosses an epoch boundary.
    common = [f"--data.path={data_dir / 'detailed.json'}", f"--model.name_or_path={stage1_dir}",
              "--per_device_train_batch_size=2", "--global_batch_size=4", "--max_steps=4",
              "--save_strategy=steps", "--save_steps=2", "--lr_scheduler_type=cosine", *(PACKING if packing else ())]
    reference = tmp_path / "uninterrupted"
    run_stage("stage1_5.yaml", reference, *common)

    resumed = tmp_path / "killed"

    class KilledTrainer(train_module.CrocTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_Kill())

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "CrocTrainer", KilledTrainer)
        with pytest.raises(KeyboardInterrupt):
            run_stage("stage1_5.yaml", resumed, *common)
    checkpoint = resumed / "checkpoint-2"
    assert sorted(p.name for p in resumed.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    assert "model.prompt_pool.weight" in load_file(str(checkpoint / "model.safetensors"))

    run_stage("stage1_5.yaml", resumed, *common)  # the same command again: continues from checkpoint-2

    expected, actual = load_file(str(reference / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert set(expected) == set(actual)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    curve = {e["step"]: e for e in log_history(reference) if "loss" in e}
    again = {e["step"]: e for e in log_history(resumed) if "loss" in e}
    assert sorted(curve) == sorted(again) == [1, 2, 3, 4]
    for step, entry in curve.items():
        for key in ("loss", "lm_loss", "vtr_loss", "pool_utilisation"):
            assert again[step][key] == pytest.approx(entry[key], rel=1e-5), (step, key)


@pytest.fixture
def packed_batches(monkeypatch) -> list[dict]:
    """Every batch the packing collator builds during the test."""
    built: list[dict] = []
    pack = CrocDataCollator._pack

    def recording_pack(self, features):
        batch = pack(self, features)
        built.append({"samples": len(features), **batch})
        return batch

    monkeypatch.setattr(CrocDataCollator, "_pack", recording_pack)
    return built


def _uneven_captions(tmp_path) -> str:
    """Stage-1.5 rows whose captions make the samples about 180, 120 and 63 tokens long: a 256-token budget then
    puts a later short sample in front of an earlier middle one, so packing reorders the images of the step."""
    words = "a red square sits in the middle of a white image with a thin shadow".split()
    rows = []
    for i, count in enumerate((95, 45, 2, 2, 95, 45, 2, 2)):
        caption = " ".join(words[k % len(words)] for k in range(count)) + "."
        rows.append({"id": f"uneven-{i}", "image": f"images/{i:03d}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": caption}]})
    path = tmp_path / "uneven.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)  # absolute: `data_dir / data` leaves it as it is


@pytest.mark.parametrize("stage, config, data, keys", [
    ("1", "stage1.yaml", "captions.json", ("loss",)),
    ("1.5", "stage1_5.yaml", "detailed.json", ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy")),
    ("1.5", "stage1_5.yaml", "uneven", ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy")),
    ("2", "stage2.yaml", "qa.json", ("loss",)),
])
def test_packed_step_equals_padded_step(tmp_path, data_dir, stage1_dir, initial_state, packed_batches, stage, config,
                                        data, keys):
    """One optimiser step of 4 samples, packed into fewer rows, against the same step padded: same losses, same
    update; and packed with accumulation (2 micro-batches of 2) still the same. Stage 1.5 with text rows mixed in
    (`detailed.json`) and with images that packing reorders (`uneven`)."""
    extra = []
    if data == "uneven":
        data = _uneven_captions(tmp_path)
        extra = [f"--data.image_root={data_dir}"]
    step = {"config": config, "data": data}
    padded, padded_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 4, "padded", *extra, **step)
    packed, packed_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 4, "packed", *PACKING,
                                       *extra, **step)
    batch = packed_batches[0]  # the step's batch (the dataloader may already have built the next one)
    assert batch["input_ids"].shape[0] < batch["samples"] == 4, "the step must actually be packed"
    if "uneven" in data:
        order = batch[IMAGE_ORDER_KEY].tolist()
        assert order != sorted(order), "these captions and seed are chosen so that packing reorders the images"
    _assert_same_step(packed, packed_log, padded, padded_log, keys)
    split, split_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 2, "packed_split", *PACKING,
                                     *extra, **step)
    _assert_same_step(split, split_log, padded, padded_log, keys)
    if stage == "1.5":
        assert padded_log["vtr_loss"] > 0


def test_packing_counts_the_same_non_padding_tokens(tmp_path, data_dir, stage1_dir):
    # A packed batch has no attention_mask and the Croc processor no pad_token_id: transformers fell back to counting
    # every token of the packed rows, their padding tails included, under include_num_input_tokens_seen=non_padding.
    seen = {}
    for name, extra in (("padded", ()), ("packed", PACKING)):
        run_stage("stage1_5.yaml", tmp_path / name, f"--data.path={data_dir / 'detailed.json'}",
                  f"--model.name_or_path={stage1_dir}", "--max_steps=2", "--include_num_input_tokens_seen=non_padding",
                  *extra)
        seen[name] = [entry["num_input_tokens_seen"] for entry in log_history(tmp_path / name) if "loss" in entry]
    assert seen["packed"] == seen["padded"]


def test_the_routers_auxiliary_loss_keeps_its_weight_however_the_step_is_split(tmp_path, data_dir, initial_state):
    # Qwen3-VL-MoE with `output_router_logits`: the LM and VTR terms are normalised by the step's counts
    # (`accepts_loss_kwargs`), so the Trainer no longer divides each micro-batch's loss by the accumulation steps; the
    # router's term, one micro-batch's mean, was then added once per micro-batch (and once per process), its weight
    # `router_aux_loss_coef x accumulation x processes`. The load-balancing loss is not linear in the rows, so the
    # split's term is close to the whole batch's, not equal; a doubled weight is far from it.
    spec = next(spec for spec in TRAINER_SPECS if spec.name == "qwen3_vl_moe")
    plain = spec.save_plain(tmp_path / "plain")
    config = json.loads((plain / "config.json").read_text())
    config["text_config"].update(output_router_logits=True, router_aux_loss_coef=1.0)
    (plain / "config.json").write_text(json.dumps(config))

    def router_term(log: dict) -> float:
        return log["loss"] - log["lm_loss"] - 10.0 * log["vtr_loss"]  # the paper preset's vtr_loss_weight

    _, split_log = _one_sgd_step(tmp_path, data_dir, plain, initial_state, 2, "accumulate", config=spec.config)
    _, whole_log = _one_sgd_step(tmp_path, data_dir, plain, initial_state, 4, "whole", config=spec.config)
    assert router_term(whole_log) > 0.5  # 4 experts, 2 per token: the balanced loss is 1 at least
    assert router_term(split_log) == pytest.approx(router_term(whole_log), rel=0.1)


def test_the_routers_auxiliary_loss_is_logged_as_the_model_returned_it(tmp_path, data_dir, stage1_dir, initial_state,
                                                                         monkeypatch):
    # Stage 1.5's loss on Qwen3-VL-MoE with `output_router_logits` is `lm + router_aux_loss_coef x aux + 10 x vtr`;
    # the logs said `lm_loss` and `vtr_loss` only, so a third of the loss (the router's balance) went unseen. It is
    # logged as `aux_loss`, summed over the window as the other terms are: one micro-batch a step logs what the model
    # returned, two log their mean by tokens (the weight each has in the loss, `stage15.share_of_step`).
    spec = next(spec for spec in TRAINER_SPECS if spec.name == "qwen3_vl_moe")
    plain = spec.save_plain(tmp_path / "plain")
    config = json.loads((plain / "config.json").read_text())
    config["text_config"].update(output_router_logits=True, router_aux_loss_coef=1.0)
    (plain / "config.json").write_text(json.dumps(config))
    returned = []
    compute_loss = croc_trainer_module.CrocTrainer.compute_loss

    def spy(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = compute_loss(self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and outputs.get("aux_loss") is not None:
            returned.append((float(outputs["aux_loss"].detach()), int(inputs["labels"][..., 1:].ne(-100).sum())))
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(croc_trainer_module.CrocTrainer, "compute_loss", spy)
    _, whole_log = _one_sgd_step(tmp_path, data_dir, plain, initial_state, 4, "whole", config=spec.config)
    assert len(returned) == 1 and whole_log["aux_loss"] == pytest.approx(returned[0][0], rel=1e-6)
    assert whole_log["aux_loss"] > 0.5  # 4 experts, 2 per token: the balanced loss is 1 at least
    returned.clear()
    _, split_log = _one_sgd_step(tmp_path, data_dir, plain, initial_state, 2, "accumulate", config=spec.config)
    tokens = sum(count for _, count in returned)
    assert len(returned) == 2
    assert split_log["aux_loss"] == pytest.approx(sum(aux * count / tokens for aux, count in returned), rel=1e-6)
    for log in (whole_log, split_log):  # the term the loss holds (router_aux_loss_coef 1)
        assert log["loss"] - log["lm_loss"] - 10.0 * log["vtr_loss"] == pytest.approx(log["aux_loss"], rel=1e-4)

    # A family without an auxiliary loss (LLaVA) logs none.
    returned.clear()
    _, llava_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 2, "llava")
    assert not returned and "aux_loss" not in llava_log and "vtr_loss" in llava_log
