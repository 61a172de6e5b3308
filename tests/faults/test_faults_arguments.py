"""Issue 20, item 8: every mistake in an ordinary training argument ends `python -m trainer.train` with one line,
`configuration error: ...`, exit status 1, before the training rows or the model are read and before anything is
written into output_dir. Each case below used to pass these checks and fail later: with a traceback before the load,
after the model had loaded (in its first step, or only at the end of the run), or never (the run trained with a
value that silently meant something else).

The `model_max_length` bound is checked against what the training dataset keeps, and the meta-device model the LoRA
targets are matched on against the real model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

from croc_testing.optional import needs_deepspeed
from data_recipes import DataError
from modeling_croc import CrocForConditionalGeneration
from modeling_croc.loading import load_processor, read_croc_config
from trainer import train as train_module
from trainer import validation
from trainer.argument_checks import REFUSED_SETTINGS
from trainer.cli import ConfigError
from trainer.data import CrocSupervisedDataset
from trainer.model_checks import build_on_meta
from trainer.resolve import resolve_config
from trainer.training_args import CrocTrainingArguments

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "trainer" / "configs"
STAGE2 = CONFIGS / "cpu_tiny" / "stage2.yaml"
STAGE1_5 = CONFIGS / "cpu_tiny" / "stage1_5.yaml"
ZERO3 = CONFIGS / "deepspeed" / "zero3.json"
# The tiny model's 56-px images in 14-px patches, the CLS token dropped: (56 // 14) ** 2 image tokens.
TINY_IMAGE_TOKENS = (56 // 14) ** 2




@pytest.fixture(autouse=True)
def forget_deepspeed_config():
    """TrainingArguments with a ZeRO-3 config registers it process-wide (transformers' `is_deepspeed_zero3_enabled`);
    no other test may see it."""
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def _cli_error(argv: list[str], monkeypatch) -> str:
    """What `python -m trainer.train ARGV` prints when it stops: the SystemExit message of `cli()`."""
    monkeypatch.setattr(sys, "argv", ["trainer.train", *argv])
    with pytest.raises(SystemExit) as stop:
        train_module.cli()
    message = stop.value.code
    assert isinstance(message, str), message  # sys.exit(text) prints the text and exits with status 1
    assert "\n" not in message and "Traceback" not in message, message
    return message


def _argv(config: Path, out: Path, model: Path, data: Path, *overrides: str) -> list[str]:
    return [str(config), f"--output_dir={out}", f"--model.name_or_path={model}", f"--data.path={data}", *overrides]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# What each case did before these checks, as its comment: "traceback" (before the load), "at load" (the model load
# itself failed), "after load" (a later step failed, the model loaded), "accepted" (the run went on with it).
CASES = [
    # ---- batches and data loading ----
    pytest.param(["--per_device_train_batch_size=0", "--global_batch_size=null"],
                 "per_device_train_batch_size must be >= 1, got 0", id="per-device batch 0"),  # after load (sampler)
    pytest.param(["--per_device_train_batch_size=0"], "per_device_train_batch_size must be >= 1, got 0",
                 id="per-device batch 0 with global batch"),  # traceback (ZeroDivisionError)
    pytest.param(["--per_device_train_batch_size=-1", "--global_batch_size=null"],
                 "per_device_train_batch_size must be >= 1, got -1", id="per-device batch -1"),  # after load
    pytest.param(["--per_device_train_batch_size=[1, 2]", "--global_batch_size=null"],
                 r"per_device_train_batch_size must be an integer, got \[1, 2\]", id="list where a number goes"),
    # ^ after load (TypeError in the sampler)
    pytest.param(["--per_device_train_batch_size=true", "--global_batch_size=null"],
                 "per_device_train_batch_size must be an integer, got True", id="true as a batch size"),  # accepted
    pytest.param(["--global_batch_size=null", "--gradient_accumulation_steps=0"],
                 "gradient_accumulation_steps must be >= 1", id="accumulation 0"),  # accepted (silently 1)
    pytest.param(["--global_batch_size=-4"], "global_batch_size must be >= 1", id="global batch -4"),  # after load
    pytest.param(["--dataloader_num_workers=-1"], "dataloader_num_workers must be >= 0 .*got -1", id="workers -1"),
    # ^ after load (DataLoader)
    pytest.param(["--dataloader_num_workers=2", "--dataloader_prefetch_factor=0"],
                 "dataloader_prefetch_factor must be >= 1", id="prefetch 0"),  # after load (DataLoader)
    pytest.param(["--dataloader_persistent_workers=true"],
                 "dataloader_persistent_workers=True needs worker processes", id="persistent without workers"),
    # ^ after load
    pytest.param(["--dataloader_num_workers=1", "--dataloader_multiprocessing_context=forkx"],
                 "dataloader_multiprocessing_context must be one of fork, spawn, forkserver, got 'forkx'",
                 id="unknown start method"),  # after load
    # ---- the length of the run ----
    pytest.param(["--seed=-1"], r"seed must be in \[0, 2\*\*32 - 1\] .*got -1", id="seed -1"),  # traceback (numpy)
    pytest.param([f"--seed={2**40}"], f"got {2**40}", id="seed 2**40"),  # traceback (numpy)
    pytest.param(["--seed=1.5"], "seed must be an integer, got 1.5", id="seed 1.5"),  # traceback (numpy)
    pytest.param([f"--data_seed={2**64}"], r"data_seed must be in \[-2\*\*63, 2\*\*63 - 1\] .*got 18446744073709551616",
                 id="data seed 2**64"),  # traceback at the first batch (torch.Generator.manual_seed)
    pytest.param([f"--data_seed={2**64 - 1}", "--num_train_epochs=2"], f"got {2**64 - 1}",
                 id="data seed 2**64 - 1"),  # traceback at the second epoch (seeded with data_seed + 1)
    pytest.param(["--max_steps=-1", "--num_train_epochs=0"], "num_train_epochs must be a finite number > 0",
                 id="zero epochs"),  # accepted (trains nothing, saves the model)
    pytest.param(["--max_steps=0"], "max_steps must be a positive number of optimiser steps, or -1", id="max_steps 0"),
    # ^ accepted (trained the epochs instead)
    pytest.param(["--max_steps=1.5"], "max_steps must be an integer, got 1.5", id="max_steps 1.5"),  # after load
    pytest.param(["--max_steps=-1", "--num_train_epochs=[1]"], r"num_train_epochs must be a number, got \[1\]",
                 id="epochs as a list"),  # after load
    # ---- logging, saving, warm-up, schedule ----
    pytest.param(["--save_strategy=steps", "--save_steps=0"], "save_steps must be > 0 with save_strategy=steps",
                 id="save_steps 0"),  # accepted
    pytest.param(["--logging_steps=-1"], "logging_steps must be > 0 with logging_strategy=steps", id="logging -1"),
    # ^ accepted
    pytest.param(["--warmup_steps=1.5"], "warmup_steps must be a ratio of the run in .* got 1.5", id="warmup 1.5"),
    # ^ accepted (one step)
    pytest.param(["--warmup_steps=.nan"], "warmup_steps must be .* got nan", id="warmup nan"),  # after load
    # NaN in any section, at any depth: taken beside max_steps (num_train_epochs), or by a range check that no
    # comparison with NaN fails; the epochs' NaN then refused the run's own resume ("nan -> nan").
    pytest.param(["--max_steps=2", "--num_train_epochs=.nan"], "num_train_epochs must be a number, got nan",
                 id="epochs nan beside max_steps"),  # accepted; its resume refused
    pytest.param(["--lr_scheduler_kwargs={min_lr: .nan}", "--lr_scheduler_type=cosine_with_min_lr"],
                 r"lr_scheduler_kwargs holds nan, which no setting takes: \{'min_lr': nan\}", id="nan in a mapping"),
    pytest.param(["--model.lora_dropout=.nan"], "model.lora_dropout must be a number, got nan", id="model nan"),
    pytest.param(["--data.max_image_aspect_ratio=.nan"], "data.max_image_aspect_ratio must be a number, got nan",
                 id="data nan"),
    pytest.param(["--save_strategy=steps", "--save_steps=1", "--save_total_limit=0"],
                 "save_total_limit must be >= 1 .*unset to keep every checkpoint", id="save_total_limit 0"),
    # ^ accepted (kept every checkpoint)
    pytest.param(["--lr_scheduler_kwargs={foo: 1}"],
                 "lr_scheduler_type=cosine with lr_scheduler_kwargs=.*unexpected keyword argument 'foo'",
                 id="unknown schedule keyword"),  # after load
    pytest.param(["--lr_scheduler_kwargs=3"], "lr_scheduler_kwargs must be a mapping", id="schedule kwargs 3"),
    # ^ after load
    pytest.param(["--lr_scheduler_type=cosine_with_min_lr"], "One of min_lr or min_lr_rate should be set",
                 id="min-lr schedule without its rate"),  # after load
    # ---- the optimiser ----
    pytest.param(["--optim=adamw_bnb_8bit"], "optim=adamw_bnb_8bit: .*bitsandbytes", id="8-bit AdamW without bnb"),
    # ^ after load
    pytest.param(["--adam_epsilon=0"], "adam_epsilon must be a finite number > 0 .*got 0.0", id="epsilon 0"),
    # ^ accepted (NaN parameters)
    pytest.param(["--adam_epsilon=-1e-8"], "adam_epsilon must be .*got -1e-08", id="epsilon negative"),  # after load
    pytest.param(["--adam_epsilon=.inf"], "adam_epsilon must be .*got inf", id="epsilon inf"),  # accepted
    pytest.param(["--weight_decay=-0.1"], "weight_decay must be a finite number >= 0, got -0.1", id="decay negative"),
    # ^ accepted
    pytest.param(["--max_grad_norm=-1"], "max_grad_norm must be >= 0 .*got -1.0", id="clipping negative"),  # accepted
    pytest.param(["--label_smoothing_factor=0.1"], "label_smoothing_factor=0.1: .*would replace the Croc model's",
                 id="label smoothing"),  # accepted (the loss without its VTR term, on unshifted labels)
    pytest.param(["--neftune_noise_alpha=-1"], "neftune_noise_alpha must be > 0", id="neftune negative"),
    # ^ after load
    pytest.param(["--optim=galore_adamw"], "optim=galore_adamw: GaLore, APOLLO and LOMO", id="GaLore"),  # after load
    pytest.param(["--optim=sgd", "--optim_args=momentum=abc"], "optim=sgd: could not convert string to float",
                 id="optim_args not a number"),  # after load
    pytest.param(["--optim=adamw_torch", "--optim_args=momentum"], "optim=adamw_torch: not enough values to unpack",
                 id="optim_args not key=value"),  # after load
    pytest.param(["--optim=adamw_torch", "--optim_args=weight_decay=0.1"], "optim_args: optim=adamw_torch does not "
                 "read weight_decay", id="optim_args AdamW ignores"),  # accepted: trained at weight_decay
    pytest.param(["--optim=sgd", "--optim_args=momentun=0.9,nesterov=true"], "optim_args: optim=sgd does not read "
                 "momentun ", id="optim_args misspelt key"),  # accepted: SGD without momentum
    pytest.param(["--optim=sgd", "--optim_args=momentum=0.9,weight_decay=0.1"], "optim_args: optim=sgd does not read "
                 "weight_decay", id="optim_args weight decay"),  # accepted: each parameter group set its own
    pytest.param(["--optim=sgd", "--optim_args=nesterov=true"], "optim=sgd with optim_args=nesterov=true: Nesterov "
                 "momentum requires a momentum", id="optim_args nesterov without momentum"),  # traceback after load
    pytest.param(["--optim=rmsprop", "--optim_args=alpha=-1"], "optim=rmsprop with optim_args=alpha=-1: Invalid alpha",
                 id="optim_args out of the optimiser's range"),  # traceback after load
    # ---- evaluation, which trainer.train never runs ----
    pytest.param(["--eval_strategy=steps", "--eval_steps=1"], "eval_strategy=steps: trainer.train has no evaluation",
                 id="eval without eval data"),  # after load
    pytest.param(["--eval_on_start=true"], "eval_on_start=true: trainer.train has no evaluation", id="eval on start"),
    # ^ after load
    pytest.param(["--load_best_model_at_end=true"], "load_best_model_at_end=true picks a checkpoint by its evaluation",
                 id="load best without eval"),  # accepted
    pytest.param(["--metric_for_best_model=loss"], "metric_for_best_model=loss names an evaluation metric, but "
                 "trainer.train has no evaluation set", id="best metric"),  # accepted: no best checkpoint tracked
    pytest.param(["--save_strategy=best"], "save_strategy=best saves on the best evaluation", id="save best"),
    # ^ after load
    # Settings of an evaluation that never runs (found by a hostile tester of evaluation): each was accepted and did
    # nothing, without a word that no evaluation ran.
    pytest.param(["--do_eval=true"], r"do_eval=true is an evaluation setting, but trainer.train has no evaluation "
                 r"set .*\(docs/EVALUATION.md\)", id="do_eval"),  # accepted
    pytest.param(["--do_predict=true"], "do_predict=true is an evaluation setting", id="do_predict"),  # accepted
    pytest.param(["--eval_steps=500"], "eval_steps=500 is an evaluation setting", id="eval_steps alone"),
    # ^ accepted
    pytest.param(["--greater_is_better=false"], "greater_is_better=false is an evaluation setting",
                 id="greater_is_better alone"),  # accepted: no best checkpoint tracked
    pytest.param(["--per_device_eval_batch_size=2", "--eval_accumulation_steps=4"],
                 "per_device_eval_batch_size=2 is an evaluation setting", id="eval batch"),  # accepted
    pytest.param(["--include_for_metrics=[inputs, loss]"], r"include_for_metrics=\[inputs, loss\] is an evaluation "
                 "setting", id="eval metrics inputs"),  # accepted
    pytest.param(["--fp16_full_eval=true", "--bf16_full_eval=true"], "bf16_full_eval=true is an evaluation setting",
                 id="half-precision eval"),  # one line refusing both for an evaluation that never runs
    # ---- names and types ----
    pytest.param(["--log_level=loud"], "log_level must be one of .*passive, got 'loud'", id="log level"),
    # ^ traceback (KeyError)
    pytest.param(["--trainable_parts=projector"], "trainable_parts must be a list of strings or null, got 'projector'",
                 id="trainable_parts as a string"),  # one line, but "unknown groups ['c', 'e', 'j', ...]"
    pytest.param(["--trainable_parts=[]"], "trainable_parts is empty", id="no trainable parts"),  # after load
    pytest.param(["--hub_datasets=liuhaotian/LLaVA-Pretrain"], "hub_datasets must be a list of strings",
                 id="hub_datasets as a string"),  # accepted (one dataset per character in the card)
    pytest.param(["--include_num_input_tokens_seen=maybe"], "include_num_input_tokens_seen must be true, false",
                 id="token count mode"),  # accepted
    pytest.param(["--ddp_backend=gloo"], "ddp_backend=gloo sets the process group .* no launcher started",
                 id="ddp_backend without a launcher"),  # one line, but "Default process group has not been ..."
    pytest.param(["--ddp_timeout=0"], "ddp_timeout must be > 0 seconds", id="ddp timeout 0"),  # accepted
    pytest.param(["--fsdp=true"], "fsdp shards the model over processes, but this run has one",
                 id="FSDP in one process"),  # after load
    pytest.param(["--torch_compile=true", "--torch_compile_backend=nope"],
                 "torch_compile_backend='nope' is not a backend accelerate knows", id="compile backend"),  # after load
    pytest.param(["--torch_compile=true", "--torch_compile_mode=fastest"], "torch_compile_mode: Unrecognized "
                 "mode=fastest", id="compile mode"),  # after load
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={foo: 1}"],
                 r"activation_checkpointing_kwargs: unknown keys \['foo'\]", id="checkpointing keyword"),  # after load
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={every_n_layers: 0}"],
                 "every_n_layers must be an integer >= 1", id="checkpoint no layer"),  # traceback at step 1
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={every_n_layers: two}"],
                 "every_n_layers must be an integer >= 1 .*, got 'two'", id="checkpoint every 'two'"),  # traceback
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={use_reentrant: maybe}"],
                 "use_reentrant must be true or false, got 'maybe'", id="checkpoint reentrant maybe"),  # taken as true
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={determinism_check: all}"],
                 "determinism_check must be one of default, none", id="checkpoint determinism"),  # traceback
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={offload: true}"],
                 "offload moves the saved activations off an accelerator, and this run has none",
                 id="checkpoint offload on CPU"),  # traceback at step 1 (pinned memory needs an accelerator)
    pytest.param(["--data.path=[rows.json]"], r"data.path must be a string \(a path or a Hub dataset id\), got "
                 r"\['rows.json'\]", id="data path as a list"),  # one line, but "data.path ['rows.json'] does not exist"
    pytest.param(["--data.image_root=[images]"], r"data.image_root must be a string \(a path\)",
                 id="image root as a list"),  # one line, but "does not exist"
    # ---- the model section ----
    pytest.param(["--model.load_in_4bit=[true]"], r"model.load_in_4bit must be true or false, got \[True\]",
                 id="4-bit as a list"),  # one line, but "QLoRA (model.load_in_4bit) needs a CUDA GPU"
    pytest.param(["--model.use_peft=true", "--model.lora_r=0"], "model.lora_r must be >= 1", id="LoRA rank 0"),
    # ^ after load (PEFT)
    pytest.param(["--model.use_peft=true", "--model.lora_r=1.5"], "model.lora_r must be an integer, got 1.5",
                 id="LoRA rank 1.5"),  # after load
    pytest.param(["--model.use_peft=true", "--model.lora_alpha=0"], "model.lora_alpha must be > 0",
                 id="LoRA alpha 0"),  # accepted (adapters scaled by 0)
    pytest.param(["--model.use_peft=true", "--model.lora_dropout=1.0"], r"model.lora_dropout must be in \[0, 1\)",
                 id="LoRA dropout 1"),  # accepted (every adapter input zeroed)
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=[qq_proj]"],
                 "'qq_proj' names no module of the language model \\(did you mean q_proj\\?\\)",
                 id="LoRA target matching nothing"),  # after load (PEFT)
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=[q_proj, v_prj]"],
                 "'v_prj' names no module .*did you mean v_proj", id="one LoRA target misspelt"),
    # ^ accepted (v_proj silently without adapters)
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=[embed_tokens]"],
                 r"'embed_tokens' \(model.language_model.embed_tokens\) sits directly under the language model, "
                 "outside its layers", id="LoRA target under the language model"),
    # ^ "'embed_tokens' names no module of the language model", which it is
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=[self_attn]"],
                 r"'self_attn' matches model.language_model.layers.0.self_attn \(LlamaAttention\), which LoRA cannot",
                 id="LoRA target not a projection"),  # after load (PEFT)
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=q_proj"],
                 "model.lora_target_modules must be a list of strings, got 'q_proj'", id="LoRA targets as a string"),
    # ^ after load (PEFT matched single letters)
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=[]"],
                 "model.lora_target_modules must name the language model's projections", id="no LoRA targets"),
    # ^ after load
    pytest.param(["--model.attn_implementation=sdpaa"], "model.attn_implementation='sdpaa' is not an attention "
                 "backend \\(did you mean sdpa\\?\\)", id="attention misspelt"),  # at load
    pytest.param(["--model.attn_implementation=flash_attention_2"],
                 "flash_attention_2 needs a CUDA GPU, but use_cpu=true", id="FlashAttention on the CPU"),  # at load
    pytest.param(["--model.attn_implementation=flex_attention"], "flex_attention cannot train on the CPU",
                 id="FlexAttention on the CPU"),  # after load (first backward)
    pytest.param(["--model_max_length=17"], f"model_max_length=17 cannot hold a sample with an image: "
                 f"{TINY_IMAGE_TOKENS} image tokens \\+ \\d+ tokens of the vicuna_v1 template's prompt",
                 id="model_max_length below the image"),  # after load (first batch empty)
    pytest.param(["--model.base_models=lmsys/vicuna-7b-v1.5"], "model.base_models must be a list of strings",
                 id="base_models as a string"),  # accepted
    # ---- reporting, Hub, kernels ----
    pytest.param(["--report_to=unknown"], "report_to='unknown' is not an integration transformers has",
                 id="unknown report_to"),  # after load
    pytest.param(["--push_to_hub=true", "--hub_model_id=me/croc"], "push_to_hub=true but the Hub is offline",
                 id="push offline"),  # after load (creating the repository)
    pytest.param(["--hub_eval_results=[{tmp}/missing_results.json]"], "hub_eval_results: .*missing_results.json does "
                 "not exist", id="missing eval results"),  # after training (the model card)
    # The card's options, which the card check refused after training with a ValueError traceback (every run writes
    # its card; found by a hostile tester):
    pytest.param(["--hub_license=MIT"], "hub_license='MIT' is not a Hub licence id: use the lower-case id",
                 id="licence not an id"),  # after training (the model card)
    pytest.param(["--hub_license=other"], "hub_license='other' is not a Hub licence id", id="licence other"),
    pytest.param(["--hub_datasets=[{tmp}/my_data]"], "hub_datasets entry '.*my_data' is not a Hub id",
                 id="local folder as a dataset"),  # after training (the model card)
    pytest.param(["--model.base_models=[./models/vicuna]"], "model.base_models entry './models/vicuna' is not a Hub "
                 "id", id="local folder as a base model"),  # after training (the model card)
    pytest.param(["--hub_eval_results=[{tmp}/cut.json]"], "hub_eval_results: .*cut.json is not an lmms-eval results "
                 "file", id="eval results not lmms-eval's"),  # after training (the model card): KeyError
    pytest.param(["--hub_eval_results=[{tmp}/flat_results.json]"], "hub_eval_results: .*flat_results.json is not an "
                 "lmms-eval results file", id="eval results without metrics per task"),
    # ^ after training (the model card): AttributeError
    pytest.param(["--hub_eval_results=[{tmp}/rows.json]"], "hub_eval_results: .*rows.json is not an lmms-eval results "
                 "file", id="eval results a JSON list"),  # after training (the model card): AttributeError
    pytest.param(["--hub_datasets=5"], "hub_datasets must be a list of strings or null, got 5",
                 id="datasets not a list"),  # traceback (the card option check iterated it)
    pytest.param(["--model.base_models=true"], "model.base_models must be a list of strings or null, got True",
                 id="base models not a list"),  # traceback (the card option check iterated it)
    pytest.param(["--train_sampling_strategy=group_by_length"], "train_sampling_strategy=group_by_length groups "
                 "rows by a length column this trainer's data does not carry", id="length-grouped sampler"),
    # ^ after load (LengthGroupedSampler: TypeError)
    pytest.param(["--save_only_model=true"], "save_only_model=true writes checkpoints without the optimizer, "
                 "scheduler and RNG states", id="checkpoints that cannot resume"),  # accepted (a resume off the curve)
    pytest.param(["--max_steps=1", "--warmup_steps=100"], "warmup_steps=100 is longer than the run \\(max_steps=1\\)",
                 id="warm-up longer than the run"),  # accepted (the rate never peaks)
    pytest.param(["--remove_unused_columns=true"], "remove_unused_columns=true would drop the data-report keys",
                 id="remove unused columns"),  # accepted: rows replaced in training went uncounted
    pytest.param(["--auto_find_batch_size=true"], "auto_find_batch_size=true would restart an out-of-memory run "
                 "with a smaller per-device batch", id="auto batch size"),  # accepted: a smaller global batch on OOM
    pytest.param(["--ignore_data_skip=true"], "ignore_data_skip=true would resume at the start of the epoch's row "
                 "order", id="resume without skipping the trained rows"),  # accepted (a resume off the curve)
    pytest.param(["--dataloader_drop_last=true", "--group_by_modality_length=false"], "dataloader_drop_last=true "
                 "would leave the rows of each epoch's last, partial batch untrained and uncounted",
                 id="last partial batch dropped"),  # accepted: 3 of 11 rows never trained on 2 processes, uncounted
    pytest.param(["--use_liger_kernel=true"], "use_liger_kernel=true needs a CUDA GPU .*, but use_cpu=true",
                 id="Liger on the CPU"),  # first step (inside Triton)
    # ---- found by a hostile tester of the configuration checks ----
    pytest.param(["--accelerator_config={tmp}/missing_accelerate.json"],
                 "accelerator_config '.*missing_accelerate.json' is no file", id="accelerator_config not a file"),
    # ^ traceback (FileNotFoundError in TrainingArguments)
    pytest.param(["--data.num_proc=null"], "data.num_proc must be an integer, got None", id="data key null"),
    # ^ one line in Python's words naming no key ('<' not supported between instances of 'NoneType' and 'int')
    pytest.param(["--data.max_image_aspect_ratio=[1, 2]"], r"data.max_image_aspect_ratio must be a number, got \[1, 2\]",
                 id="data key a list"),  # one line naming no key
    pytest.param(["--language_model_lr=.inf"], "language_model_lr must be a finite number, got inf",
                 id="infinite learning rate"),  # accepted (the first update makes every weight inf or NaN)
    pytest.param(["--neftune_noise_alpha=.inf"], "neftune_noise_alpha must be a finite number", id="infinite noise"),
    # ^ accepted
    pytest.param(["--logging_steps=.inf"], "logging_steps must be a finite number with logging_strategy=steps",
                 id="logging_steps inf"),  # traceback (OverflowError in TrainingArguments)
    pytest.param(["--save_strategy=steps", "--save_steps=.inf"], "save_steps must be a finite number",
                 id="save_steps inf"),  # traceback (OverflowError in TrainingArguments)
    pytest.param(["--per_device_train_batch_size='4.5'", "--global_batch_size=null"],
                 "per_device_train_batch_size: cannot read '4.5' as int", id="quoted fraction for an integer"),
    # ^ accepted (cut to 4)
    pytest.param(["--run_name=2026-05-01"], r"run_name: YAML reads 2026-05-01 as a date; quote it",
                 id="unquoted date for a name"),  # accepted (a date object; output_dir: one line naming no key)
    pytest.param(["--prompt_pool_lr=1e-4"], r"stage 2 runs without the Croc objectives, so the parts "
                 r"\['prompt_pool'\] get no gradient", id="prompt pool rate in stage 2"),
    # ^ accepted (logged as trained at 1e-4; the pool never changed)
    pytest.param(["--trainable_parts=[projector, language_model, vtr_head]"], r"the parts \['vtr_head'\] get no "
                 "gradient", id="VTR head trained in stage 2"),  # accepted (never trained)
    pytest.param(["--report_to=[none, tensorboard]"], r"none stands for the whole list and cannot be listed",
                 id="report_to none among others"),  # one line: "'none' is not an integration ...; use none, ..."
    # ---- DeepSpeed ----
    pytest.param(["--deepspeed={tmp}/cut.json"], r"deepspeed config .*cut.json:2:1: not valid JSON",
                 id="DeepSpeed config not JSON", marks=needs_deepspeed),  # one line, naming neither file nor line
    pytest.param(["--deepspeed={tmp}/own_optimizer.json"], "its optimizer section would replace the Croc trainer's",
                 id="DeepSpeed optimizer section", marks=needs_deepspeed),  # after load: one rate for every part
    pytest.param(["--deepspeed={tmp}/micro_batch_3.json"], "contradicts the training arguments: ds "
                 "train_micro_batch_size_per_gpu=3 vs hf per_device_train_batch_size=4", id="DeepSpeed batch",
                 marks=needs_deepspeed),  # after load
    pytest.param(["--deepspeed={train_micro_batch_size_per_gpu: 3, zero_optimization: {stage: 2}}"],
                 "the inline deepspeed config contradicts .*train_micro_batch_size_per_gpu=3",
                 id="inline DeepSpeed batch", marks=needs_deepspeed),  # after load
    pytest.param(["--deepspeed={tmp}/bf16_true.json"], r"bf16_true.json: bf16 must be a JSON object .*got True",
                 id="DeepSpeed section not an object", marks=needs_deepspeed),  # traceback (AttributeError)
    pytest.param(["--deepspeed={zero_optimization: 2}"], "the inline deepspeed config: zero_optimization must be a "
                 "JSON object", id="inline DeepSpeed section not an object", marks=needs_deepspeed),  # traceback
]

# Files some cases point to, written into the test's folder.
FILES = {
    "cut.json": '{"train_micro_batch_size_per_gpu":\n',
    "own_optimizer.json": json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                                      "zero_optimization": {"stage": 2}}),
    "micro_batch_3.json": json.dumps({"train_micro_batch_size_per_gpu": 3, "zero_optimization": {"stage": 2}}),
    "bf16_true.json": json.dumps({"bf16": True, "zero_optimization": {"stage": 2}}),  # DeepSpeed's is {"enabled": ...}
    "flat_results.json": json.dumps({"results": {"pope": 0.5}}),  # a score per task, not lmms-eval's metrics mapping
    "rows.json": json.dumps([{"doc_id": 0}]),
}


@pytest.mark.parametrize("overrides, words", CASES)
def test_broken_argument_is_one_line_before_anything_loads(overrides, words, tmp_path, tiny_model, small_data,
                                                          monkeypatch, nothing_loaded):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as the tests run: no network
    for name, text in FILES.items():
        _write(tmp_path / name, text)
    out = tmp_path / "out"
    overrides = [override.replace("{tmp}", str(tmp_path)) for override in overrides]
    message = _cli_error(_argv(STAGE2, out, tiny_model, small_data, *overrides), monkeypatch)
    assert message.startswith("configuration error: ") and re.search(words, message), message
    assert not out.exists()


def test_help_lists_croc_s_training_keys_before_transformers_and_every_key_once(monkeypatch, capsys):
    """A newcomer's walkthrough: Croc's own keys (stage, croc_preset, the learning rates, global_batch_size) came
    after some 350 lines of transformers' Trainer arguments."""
    from dataclasses import fields

    monkeypatch.setattr(sys, "argv", ["trainer.train", "--help"])
    train_module.cli()
    lines = capsys.readouterr().out.splitlines()
    croc = lines.index("training, Croc's keys (top level, --KEY):")
    upstream = lines.index("training, transformers' Trainer keys (top level, --KEY):")
    listed = [line.split(" (default: ")[0].strip() for line in lines[croc:] if line.startswith("  ") and
              not line.startswith("      ")]
    assert sorted(listed) == sorted(spec.name for spec in fields(CrocTrainingArguments) if spec.init)
    assert croc < next(i for i, line in enumerate(lines) if line.startswith("  global_batch_size ")) < upstream
    assert upstream < next(i for i, line in enumerate(lines) if line.startswith("  output_dir "))
    # transformers' help texts are written for argparse, which prints `%%` as `%`.
    assert "%%" not in "\n".join(lines) and "~20% slower" in " ".join(" ".join(lines).split())


@pytest.mark.parametrize("option", sorted(REFUSED_SETTINGS))
def test_help_says_which_settings_of_transformers_options_are_refused_and_they_are(option, tmp_path, tiny_model,
                                                                                    small_data, monkeypatch,
                                                                                    nothing_loaded, capsys):
    # transformers' help describes these settings as usable: --help says they are refused here, and each entry of
    # the registry --help reads is held to a real refusal naming its option.
    value, setting, why = REFUSED_SETTINGS[option]
    monkeypatch.setattr(sys, "argv", ["trainer.train", "--help"])
    train_module.cli()
    help_lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(help_lines) if line.startswith(f"  {option} (default: "))
    end = next(i for i in range(start + 1, len(help_lines)) if not help_lines[i].startswith("      "))
    assert f"Refused here ({setting}): {why}." in " ".join(" ".join(help_lines[start + 1:end]).split())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    message = _cli_error(_argv(STAGE2, out, tiny_model, small_data, f"--{option}={value}"), monkeypatch)
    assert message.startswith("configuration error: ") and f"{option}={value}" in message, message
    assert not out.exists()


@pytest.mark.parametrize("case", ["flash without its package", "Liger without its package",
                                  "several GPUs in one process", "fused AdamW unsupported here"])
def test_what_this_machine_lacks_is_one_line_before_anything_loads(case, tmp_path, tiny_model, small_data,
                                                                  monkeypatch, nothing_loaded):
    """Checks against the machine, on a stand-in machine: a CUDA GPU without flash-attn (the load used to fail on
    the import) or without liger-kernel, several GPUs seen by one process (nn.DataParallel), and a PyTorch without
    fused AdamW kernels for the CPU (the first optimiser step used to fail)."""
    if case == "flash without its package":
        # transformers >= 5.25 installs `kernels`, which counts as a FlashAttention backend: stand in for a machine
        # without either.
        monkeypatch.setattr(validation, "flash_attention_installed", lambda attn_implementation: False)
        monkeypatch.setattr(validation, "gpu_available", lambda: True)
        overrides, words = ["--use_cpu=false", "--model.attn_implementation=flash_attention_2"], \
            "flash_attention_2 but neither flash-attn nor kernels is installed"
    elif case == "several GPUs in one process":  # the Trainer would wrap the model in nn.DataParallel
        from transformers.training_args import ParallelMode, TrainingArguments

        monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))
        monkeypatch.setattr(TrainingArguments, "parallel_mode", property(lambda self: ParallelMode.NOT_DISTRIBUTED))
        overrides, words = [], "2 GPUs are visible to this one process, so the Trainer would use nn.DataParallel"
    elif case == "Liger without its package":
        monkeypatch.setattr(validation, "gpu_available", lambda: True)
        monkeypatch.setattr("transformers.utils.is_liger_kernel_available", lambda: False)
        overrides, words = ["--use_cpu=false", "--use_liger_kernel=true"], \
            "use_liger_kernel=true but liger-kernel is not installed"
    else:
        from torch.optim import optimizer as optimizer_module

        monkeypatch.setattr(optimizer_module, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
        overrides, words = ["--optim=adamw_torch_fused"], "adamw_torch_fused: this PyTorch has no fused AdamW for cpu"
    out = tmp_path / "out"
    message = _cli_error(_argv(STAGE2, out, tiny_model, small_data, *overrides), monkeypatch)
    assert message.startswith("configuration error: ") and words in message, message


@pytest.mark.parametrize("overrides", [["--model.dtype=bfloat16"], ["--model.dtype=bfloat16", "--bf16=true"],
                                       ["--model.dtype=float16", "--fp16=true"]],
                         ids=["bf16 weights", "bf16 weights, bf16 autocast", "fp16 weights, fp16 scaler"])
def test_half_precision_weights_without_master_copy_are_one_line(overrides, tmp_path, tiny_model, small_data,
                                                                 monkeypatch, nothing_loaded):
    """On a GPU machine, weights loaded in bf16 / fp16 without DeepSpeed were trained in place by AdamW: updates
    under half their rounding step were lost (the tiny stage 1.5 lost 70% of its LLM updates at 2e-5), so the model
    silently stopped learning; fp16 weights under fp16 ended the first step in the scaler's traceback."""
    monkeypatch.setattr(validation, "gpu_available", lambda: True)
    out = tmp_path / "out"
    message = _cli_error(_argv(STAGE1_5, out, tiny_model, small_data, "--use_cpu=false", *overrides), monkeypatch)
    assert message.startswith("configuration error: ") and "with no float32 copy" in message, message
    assert not out.exists()


@pytest.mark.parametrize("adapters", [{"use_peft": True}, {"use_peft": True, "load_in_4bit": True}],
                         ids=["LoRA", "QLoRA"])
def test_half_precision_weights_under_lora_are_not_refused_for_their_precision(adapters):
    """LoRA trains float32 adapters over frozen bf16 weights (PEFT upcasts them, QLoRA's preparation the rest): the
    usual way to fit a large model, not a model that stops learning."""
    validation.check_half_precision_weights({"bf16": True}, {"dtype": "bfloat16", **adapters})
    with pytest.raises(validation.ConfigError, match="with no float32 copy"):
        validation.check_half_precision_weights({"bf16": True}, {"dtype": "bfloat16"})


def test_lora_on_a_grouped_convolution_is_one_line_before_anything_loads(tmp_path, small_data, monkeypatch,
                                                                       nothing_loaded):
    """Qwen3.5's Gated DeltaNet `conv1d` is an `nn.Conv1d` (a type PEFT wraps) but depthwise: named as a LoRA target
    it passed the checks, then the first step ended in an AttributeError traceback (the parent's forward reads the
    wrapped module's `kernel_size`), and with activation checkpointing the run trained an adapter its forward never
    applied and ended in PEFT's NotImplementedError when merging it (found by a hostile tester). Its linear
    projections pass."""
    from croc_testing.qwen3_vl import save_tiny_qwen3_5

    folder = save_tiny_qwen3_5(tmp_path / "qwen3_5")
    config = CONFIGS / "cpu_tiny" / "stage1_5_qwen3_5.yaml"
    out = tmp_path / "out"
    message = _cli_error(_argv(config, out, folder, small_data, "--model.use_peft=true",
                               "--model.lora_target_modules=[in_proj_qkv, conv1d]"), monkeypatch)
    assert message.startswith("configuration error: ") and re.search(
        "'conv1d' matches .*linear_attn.conv1d, a grouped convolution .*name its linear projections instead: .*"
        "in_proj_qkv", message), message
    assert not out.exists()
    resolved = resolve_config(_argv(config, out, folder, small_data, "--model.use_peft=true",
                                    "--model.lora_target_modules=[in_proj_qkv, in_proj_z, out_proj]"))
    assert resolved.model.lora_target_modules == ["in_proj_qkv", "in_proj_z", "out_proj"]
    assert not out.exists()


@needs_deepspeed
def test_a_new_pool_size_under_zero3_is_one_line_before_anything_loads(tmp_path, tiny_model, small_data, monkeypatch,
                                                                       nothing_loaded):
    """ZeRO-3 builds the model partitioned, where `ignore_mismatched_sizes` does not apply: a pool size other than
    the saved one used to fail inside `from_pretrained` ("size mismatch for model.prompt_pool.weight: copying a param
    with shape [64, 32] ... [32, 32]", seen under `torchrun --nproc_per_node 1` on the CPU). The saved size passes."""
    out = tmp_path / "out"
    argv = _argv(STAGE1_5, out, tiny_model, small_data, f"--deepspeed={ZERO3}")
    assert read_croc_config(tiny_model).prompt_pool_size == 64  # what save_tiny_croc writes
    message = _cli_error([*argv, "--croc_overrides={prompt_pool_size: 32}"], monkeypatch)
    assert message.startswith("configuration error: croc_overrides prompt_pool_size=32 differs from the 64 saved in ")
    assert "keep prompt_pool_size=64" in message and not out.exists()
    assert resolve_config(argv).training.hf_deepspeed_config.is_zero3()


VALID = [
    pytest.param([], id="the cpu_tiny config"),
    pytest.param(["--model.use_peft=true"], id="LoRA on every default projection"),
    pytest.param(["--model.use_peft=true", "--model.lora_target_modules=[q_proj, v_proj]", "--model.lora_alpha=16",
                  "--model.lora_dropout=0"], id="LoRA on two projections"),
    pytest.param(["--max_steps=-1", "--num_train_epochs=0.5"], id="half an epoch"),
    pytest.param(["--warmup_steps=0.5", "--save_strategy=steps", "--save_steps=0.5", "--save_total_limit=1"],
                 id="ratios of the run"),
    pytest.param(["--warmup_steps=2"], id="warm-up steps"),
    pytest.param(["--dataloader_drop_last=true", "--group_by_modality_length=true"],
                 id="last batch dropped under modality grouping"),  # the released YAMLs: whole steps, nothing dropped
    pytest.param(["--lr_scheduler_type=cosine_with_min_lr", "--lr_scheduler_kwargs={min_lr_rate: 0.1}"],
                 id="min-lr schedule"),
    pytest.param(["--optim=adamw_torch_fused"], id="fused AdamW"),
    pytest.param(["--optim=sgd", "--optim_args=momentum=0.9", "--max_grad_norm=0"], id="SGD without clipping"),
    pytest.param(["--activation_checkpointing=true",
                  "--activation_checkpointing_kwargs={use_reentrant: false, every_n_layers: 1}"],
                 id="activation checkpointing"),
    pytest.param(["--activation_checkpointing=true", "--activation_checkpointing_kwargs={every_n_layers: 2, "
                  "offload: false, preserve_rng_state: true, determinism_check: none}"], id="checkpointing options"),
    pytest.param(["--resume_from_checkpoint=false", "--seed=4294967295", "--report_to=none"], id="edge values"),
    pytest.param([f"--data_seed={2**63 - 1}", "--num_train_epochs=1000"], id="largest data seed"),
    # Each keyword transformers reads for the optimisers of the parameters that run anywhere.
    pytest.param(["--optim=sgd", "--optim_args=momentum=0.9,dampening=0,nesterov=false"], id="sgd optim_args"),
    pytest.param(["--optim=adagrad", "--optim_args=lr_decay=0.01,eps=1e-10"], id="adagrad optim_args"),
    pytest.param(["--optim=rmsprop", "--optim_args=momentum=0.9,alpha=0.9,eps=1e-8,centered=true"],
                 id="rmsprop optim_args"),
    pytest.param(["--optim=adafactor"], id="adafactor"),
    pytest.param(["--data_seed=-1"], id="negative data seed"),
    pytest.param(["--model.attn_implementation=eager", "--include_num_input_tokens_seen=non_padding"], id="eager"),
    pytest.param(["--hub_license=llama2", "--hub_datasets=[liuhaotian/LLaVA-Instruct-150K, coco]",
                  "--model.base_models=[lmsys/vicuna-7b-v1.5]"], id="card options"),
]


@pytest.mark.parametrize("overrides", VALID)
def test_valid_arguments_pass_every_check(overrides, tmp_path, tiny_model, small_data):
    resolved = resolve_config(_argv(STAGE2, tmp_path / "out", tiny_model, small_data, *overrides))
    assert resolved.stage.name == "2" and not (tmp_path / "out").exists()


def test_model_max_length_bound_is_where_the_dataset_starts_keeping_image_rows(tmp_path, tiny_model, small_data,
                                                                               monkeypatch):
    """The shortest `model_max_length` the check accepts is exactly the one at which the training dataset keeps a
    row with an image, an empty question and an answer (one answer token kept), and one less drops it."""
    message = _cli_error(_argv(STAGE2, tmp_path / "out", tiny_model, small_data, "--model_max_length=17"),
                         monkeypatch)
    shortest = int(re.search(r"at least (\d+)$", message)[1])
    image_tokens, prompt_tokens = map(int, re.search(r"(\d+) image tokens \+ (\d+) tokens", message).groups())
    assert image_tokens == TINY_IMAGE_TOKENS and shortest == image_tokens + prompt_tokens + 1

    row = {"id": "a", "image": "images/0.png",
           "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A red square."}]}
    processor = load_processor(tiny_model)

    def sample(model_max_length: int):
        """The row's training sample, or None when the dataset cannot use the row at this length."""
        try:
            return CrocSupervisedDataset([row], processor, "vicuna_v1", small_data.parent, model_max_length)[0]
        except DataError:  # the dataset looked for a usable row to stand in for it, and found none
            return None

    kept = sample(shortest)
    assert kept is not None and len(kept["input_ids"]) == shortest
    assert int((kept["labels"] != -100).sum()) == 1 and int((kept["input_ids"] == 32000).sum()) == image_tokens
    assert sample(shortest - 1) is None

    argv = _argv(STAGE2, tmp_path / "out", tiny_model, small_data)
    assert resolve_config([*argv, f"--model_max_length={shortest}"]).training.model_max_length == shortest
    with pytest.raises(ConfigError, match=f"model_max_length={shortest - 1} cannot hold"):
        resolve_config([*argv, f"--model_max_length={shortest - 1}"])


def test_meta_model_has_the_real_models_modules_and_shapes(tiny_model):
    """The LoRA targets are matched on a model built on the meta device, with no weight read: it has exactly the
    loaded model's parameter names and shapes, and nothing in memory."""
    config = read_croc_config(tiny_model, croc_fields={"croc_preset": "paper", "croc_pretraining": False})
    meta = build_on_meta(config, "sdpa")
    real = CrocForConditionalGeneration.from_pretrained(tiny_model)
    assert {name: tuple(p.shape) for name, p in meta.named_parameters()} == \
        {name: tuple(p.shape) for name, p in real.named_parameters()}
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert [name for name, _ in meta.named_modules()] == [name for name, _ in real.named_modules()]


def test_arguments_built_in_python_are_checked_too():
    """`CrocTrainingArguments` runs the same value checks when built from Python (the demo, notebooks), before its
    own resolution divides by the batch size."""
    with pytest.raises(ConfigError, match="per_device_train_batch_size must be >= 1, got 0"):
        CrocTrainingArguments(output_dir="unused", stage="2", use_cpu=True, report_to="none",
                              per_device_train_batch_size=0, global_batch_size=8)
    with pytest.raises(ConfigError, match="adam_epsilon must be a finite number > 0"):
        CrocTrainingArguments(output_dir="unused", stage="2", use_cpu=True, report_to="none", adam_epsilon=0.0)


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
def test_qwen3_5s_unsupported_settings_are_one_line_before_anything_loads(family, tmp_path, small_data, monkeypatch,
                                                                          nothing_loaded):
    """Qwen3.5 (-MoE) on a GPU with `flex_attention`, which its parent classes do not support, and a Hub folder whose
    text model has no full-attention layer, which trained and saved a model its parent cannot run at inference
    (`tests/test_family_qwen3_5.py`): each is one `configuration error:` line, nothing written."""
    import croc_testing.qwen3_vl as qwen3_vl

    save = qwen3_vl.save_tiny_qwen3_5_moe if family == "qwen3_5_moe" else qwen3_vl.save_tiny_qwen3_5
    config = CONFIGS / "cpu_tiny" / f"stage1_5_{family}.yaml"
    out = tmp_path / "out"
    monkeypatch.setattr(validation, "gpu_available", lambda: True)  # past the CPU's own flex_attention refusal
    message = _cli_error(_argv(config, out, save(tmp_path / "plain"), small_data, "--use_cpu=false",
                               "--model.attn_implementation=flex_attention"), monkeypatch)
    assert message.startswith("configuration error: model.attn_implementation=flex_attention: ") and \
        "does not support an attention implementation through torch's flex_attention" in message, message
    monkeypatch.setitem(qwen3_vl.TINY_QWEN3_5_TEXT, "layer_types", ["linear_attention", "linear_attention"])
    message = _cli_error(_argv(config, out, save(tmp_path / "all_linear"), small_data), monkeypatch)
    assert message.startswith("configuration error: ") and \
        "text_config.layer_types has no 'full_attention' layer" in message, message
    assert not out.exists()


@pytest.mark.parametrize("overrides, words", [
    (["--max_steps"], "--max_steps needs a value (--max_steps=N); only a true/false key may be given bare"),
    (["--max_steps", "--packing"], "--max_steps needs a value (--max_steps=N); only a true/false key may be given bare"),
    (["--learning_rate"], "--learning_rate needs a value (--learning_rate=X); only a true/false key may be given bare"),
    (["--data.num_proc"], "--data.num_proc needs a value (--data.num_proc=N); only a true/false key may be given bare"),
], ids=["int", "int before a flag", "float", "data key"])
def test_a_valued_key_given_bare_says_its_value_is_missing(overrides, words, tmp_path, tiny_model, small_data,
                                                           monkeypatch, nothing_loaded):
    """A bare `--max_steps` read as true and stopped with "max_steps must be an integer, got True"."""
    message = _cli_error(_argv(STAGE2, tmp_path / "out", tiny_model, small_data, *overrides), monkeypatch)
    assert message == f"configuration error: {words}", message


def test_a_true_false_key_given_bare_is_still_true():
    from trainer.cli import load_raw_config

    raw = load_raw_config([str(STAGE2), "--packing", "--model.use_peft", "--bf16", "--max_steps=3"])
    assert raw["training"]["packing"] is True and raw["training"]["bf16"] is True, raw["training"]
    assert raw["model"]["use_peft"] is True and raw["training"]["max_steps"] == 3, raw


def test_data_image_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    """`data.image_root ... does not exist` was untrue of a file (an image given in place of its folder)."""
    rows = tmp_path / "rows.json"
    rows.write_text("[]\n", encoding="utf-8")
    image = tmp_path / "0.png"
    image.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"^data.image_root {image} is a file: give the folder the rows' image "
                                          "paths are relative to$"):
        validation.check_data({"path": str(rows), "image_root": str(image)})
    with pytest.raises(ConfigError, match="does not exist"):
        validation.check_data({"path": str(rows), "image_root": str(tmp_path / "missing")})
    validation.check_data({"path": str(rows), "image_root": str(tmp_path)})  # a folder: no error


@needs_deepspeed
def test_deepspeed_without_a_launcher_is_one_line_before_anything_loads(tmp_path, tiny_model, small_data, monkeypatch,
                                                                        nothing_loaded):
    """Started as a plain `python -m trainer.train`, DeepSpeed looked for an MPI job through mpi4py once the rows and
    the model were loaded: a 40-line traceback ending in `No module named 'mpi4py'`."""
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    message = _cli_error(_argv(STAGE1_5, out, tiny_model, small_data, f"--deepspeed={ZERO3}"), monkeypatch)
    assert message.startswith("configuration error: deepspeed needs a launcher that starts its processes: run the "
                              "same command under `torchrun --nproc_per_node N -m trainer.train ...` (N=1 too)"), message
    assert not out.exists()

