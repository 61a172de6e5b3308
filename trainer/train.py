"""Train one Croc stage.

    python -m trainer.train CONFIG.yaml [--key=value ...]
    accelerate launch -m trainer.train CONFIG.yaml [...]
    torchrun --nproc_per_node N -m trainer.train CONFIG.yaml [...]

The config is checked completely (unknown keys, attention backend, model and data paths, checkpoint layout,
batch-size arithmetic, precision on the hardware, learning rates, every Croc field against the model's config.json)
before anything is loaded, then the training rows are read and validated (`trainer.data_loading`): any mistake in
either ends the run here with one line, `configuration error: ...` or `data error: ...`. Then the stage's model is
built or loaded, its parts frozen per stage (counts logged), trained with `CrocTrainer` (resuming from the newest
complete checkpoint in `output_dir` when there is one), and saved as a full folder (model + processor,
safetensors) that `from_pretrained` loads. LoRA runs also write `<output_dir>-merged`. `--push_to_hub` uploads with a Croc model
card; `--hub_dry_run DIR` writes what would be uploaded into DIR instead.
"""

from __future__ import annotations

if __name__ == "__main__":
    # First, before the imports below (seconds of torch and transformers): a preemption signal from here on is held
    # for the run's own handler, not the default action's status 143 (`trainer.early_signals`).
    from trainer.early_signals import hold_preemption_signals

    hold_preemption_signals()

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

import transformers
from huggingface_hub.errors import HfHubHTTPError, StrictDataclassError
from transformers import set_seed

from data_recipes import DataError
from modeling_croc.configuration_croc import CrocConfigError
from modeling_croc.write_failures import is_write_failure, write_failure_reason

from .argument_checks import check_deepspeed_launcher
from .checkpoint_io import checkpoint_folders, checkpoint_problem, read_trainer_state
from .cli import ConfigError, help_text, wants_help
from .collator import build_collator
from .croc_trainer import CrocTrainer
from .data_loading import build_train_dataset, load_training_rows
from .data_report import REPORT_FILE, epoch_repeats_line
from .disk_space import check_disk_space
from .eval_results import has_model_weights, scored_model
from .fingerprints import processor_fingerprint
from .hub import check_publishing_arguments, hub_dry_run, push, run_folders
from .lora import apply_lora
from .model_card import CARD_NAME, add_eval_results, run_provenance
from .model_checks import check_finite_start
from .model_loading import (
    apply_trainable_parts,
    count_trainable,
    format_trainable,
    load_model_and_processor,
    load_stage_processor,
)
from .output_lock import OutputDirLock
from .resolve import resolve_config
from .resume import (
    SAME_COMMAND_CONTINUES,
    check_every_process_runs_this_run,
    check_output_dir,
    continue_hint,
    finished_step,
    merged_folder,
    output_dir_lock,
    plan_resume,
)
from .run_card_file import claim_card, edited_card_message
from .run_control import RunPreempted, RunStopped, StopSignals, survive_a_lost_reader
from .run_record import build_run_record, croc_config_dict, write_run_record
from .sampler import grouped_epoch_rows
from .stage_chain import starting_folder_warnings
from .startup_agreement import StartupFailedElsewhere, report_failure

logger = logging.getLogger("trainer.train")


def _setup_logging(args) -> None:
    # transformers follows --log_level (warning by default); this project's loggers report at INFO on the main
    # process (trainable parameters, learning rates, calibration, resume) and follow transformers elsewhere.
    transformers_level = args.get_process_log_level()
    transformers.utils.logging.set_verbosity(transformers_level)
    ours = logging.INFO if args.should_log else transformers_level
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=transformers_level,
                        force=True)
    for name in ("trainer", "modeling_croc", "data_recipes"):
        logging.getLogger(name).setLevel(min(ours, transformers_level))


# Deprecations raised by other packages calling other packages, which no code of this project can avoid: DeepSpeed
# 0.19's ZeRO calls torch.distributed's old collective names on every step (276 lines in a 4-step tiny ZeRO-3 run).
# A "once" filter does not hold them back: every `warnings.catch_warnings()` that torch and transformers enter during
# a step resets the registry "once" relies on. They are silenced, and the run says so in one log line. peft's
# `get_peft_model` reads transformers' deprecated `model.is_gradient_checkpointing` (every LoRA run, once).
UPSTREAM_DEPRECATIONS = (r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
                         r"`is_gradient_checkpointing` is deprecated")


def _silence_upstream_deprecations(args) -> None:
    for message in UPSTREAM_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    if args.deepspeed and args.should_log:
        logger.info("DeepSpeed calls torch.distributed.reduce_scatter_tensor / all_gather_into_tensor, which torch "
                    "deprecates; their FutureWarnings (one per call) are not shown")


def _check_eval_results_are_of_the_model_written(args, resume_from: str | None) -> None:
    """`hub_eval_results` that scored a model (this run's, by the start check) in a run that trains a step: the
    model it writes is not the scored one, unless it trains it again to the same end (a finished run that kept no
    checkpoint, rerun to publish it, trains from step 0). Scores of the finished model `output_dir` holds go on its
    card now, and the run's card keeps them only if it ends on the same final losses (`_earlier_eval_results`);
    with no model there (moved away, or a first run) they can be no model's of this run, and are refused. A finished
    run resumed at its last step trains none: its card takes them at the end as given."""
    named = [(path, model) for path in args.hub_eval_results or [] if (model := scored_model(path)) is not None]
    if not named:
        return
    state = (read_trainer_state(resume_from) if resume_from is not None else None) or {}
    step, total = state.get("global_step", 0), args.max_steps if args.max_steps > 0 else state.get("max_steps")
    if isinstance(step, int) and isinstance(total, int) and step >= total:
        return
    output_dir = Path(args.output_dir)
    if not (has_model_weights(output_dir) and (output_dir / CARD_NAME).is_file()):
        path, model = named[0]
        raise ConfigError(f"hub_eval_results: {path} scored {model}, but {output_dir} holds no model now and this run "
                          f"trains (from step {step}): those scores are of another model; evaluate the model this "
                          f"run writes, then add them with `python -m trainer.model_card {output_dir} --eval-results "
                          "FILE`")
    if args.should_save:
        add_eval_results(output_dir, [path for path, _ in named], same_model=True)
        logger.warning("hub_eval_results: the scores of %s go on the card of the model %s holds now; this run trains "
                       "it again from step %d, and its card keeps them only if it ends on the same final losses (the "
                       "same model)", ", ".join(str(path) for path, _ in named), output_dir, step)
    args.hub_eval_results = [path for path in args.hub_eval_results if path not in {path for path, _ in named}]


def _share_process_group_with_deepspeed(args) -> None:
    """With `use_cpu`, accelerate starts a plain gloo process group and leaves DeepSpeed's communication module
    uninitialised, so ZeRO-3's `zero.Init` (run by `from_pretrained`) would size its batch for one process. Hand
    DeepSpeed the existing group first (a no-op where accelerate already did, e.g. on GPUs)."""
    import torch.distributed

    if not args.deepspeed or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    from deepspeed import comm

    if not comm.is_initialized():
        comm.init_distributed(dist_backend=torch.distributed.get_backend(), auto_mpi_discovery=False)


def format_layout(args) -> str:
    """How a step is spread over processes, nodes and micro-batches: the first line to check on a multi-node run."""
    processes = args.world_size
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    nodes = max(processes // max(per_node, 1), 1)
    return (f"{processes} process(es) on {nodes} node(s): global batch = {args.per_device_train_batch_size} per device "
            f"x {processes} process(es) x {args.gradient_accumulation_steps} accumulation step(s) = "
            f"{args.per_device_train_batch_size * processes * args.gradient_accumulation_steps} samples per step"
            + (f"; packed (budget {args.packing_max_length})" if args.packing else ""))


def short_epoch_warning(dataset, args) -> str | None:
    """What to say when an epoch holds fewer rows than one step takes: the Trainer then trains each epoch as one
    short step, which the layout line's global batch does not describe (a 51-row epoch under a global batch of 512:
    51 samples a step). With `group_by_modality_length` an epoch holds each modality's rows filled up to whole device
    batches (`trainer.sampler`), still short of a step when accumulating. None when steps are as described, or rows
    are packed (a step's rows are then packs)."""
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    rows = len(dataset)
    if args.packing or rows >= batch:
        return None
    if args.group_by_modality_length:
        rows = grouped_epoch_rows(dataset.modality_lengths, args.per_device_train_batch_size, args.world_size)
        if rows >= batch:
            return None
    return (f"an epoch holds {rows} training rows, fewer than the global batch of {batch}: each step trains one "
            f"epoch's {rows} rows, not {batch}; lower global_batch_size (or add rows) for steps of the size set")


def main(argv: list[str] | None = None) -> CrocTrainer | None:
    """Run the stage described by `argv` (`CONFIG.yaml [--key=value ...]`); returns the trainer after saving, or None
    when `output_dir` already holds this run finished (`trainer.resume.finished_step`: nothing is trained or written).

    Raises `ConfigError` / `DataError` (before the model loads; right after it for weights holding NaN or infinite
    values), `RunPreempted` (a preemption signal: a checkpoint
    was written, rerun to continue) or `TrainingDiverged` (a non-finite step: nothing non-finite was written)."""
    model_args, data_args, args, stage = resolve_config(sys.argv[1:] if argv is None else argv)
    check_deepspeed_launcher(args)  # a resolve needs none: `--help` and the config checks run without a launcher
    # before anything is written, into output_dir or a publish folder
    check_publishing_arguments(args, run_folders(model_args, data_args, args))
    _setup_logging(args)
    _silence_upstream_deprecations(args)
    set_seed(args.seed)
    # From here on a preemption signal is recorded, not fatal: the run stops at the end of a step with a checkpoint
    # (or, before the first step, with nothing to save).
    with StopSignals(args.preemption_signals) as signals, output_dir_lock(args) as lock:
        try:
            return _run(model_args, data_args, args, stage, signals, lock)
        except KeyboardInterrupt as interrupt:  # Ctrl-C twice: what a rerun does depends on what is saved
            interrupt.add_note(_interrupted_line(args))
            raise


def _interrupted_line(args) -> str:
    """The line a run stopped by Ctrl-C twice ends with: whether a rerun resumes, and from where (as any stopped
    run says it, `continue_hint`: with `auto_resume=false` or another checkpoint named, the same command would not).
    The newest checkpoint is judged by its files' sizes only: the user asked to stop now, not to hash a 7B one."""
    newest = next((folder for folder in checkpoint_folders(args.output_dir)
                   if checkpoint_problem(folder, hashes=False) is None), None)
    hint = None if newest is None else continue_hint(args, newest)
    if newest is None:
        then = "no checkpoint was written yet, so rerunning the same command starts the run over"
    elif hint == SAME_COMMAND_CONTINUES:
        then = f"rerunning the same command resumes from {newest.name}, the newest checkpoint in output_dir"
    else:
        then = f"{newest.name} is the newest checkpoint in output_dir: {hint}"
    return f"interrupted (Ctrl-C twice): the step in progress was not saved; {then}"


def _run(model_args, data_args, args, stage, signals: StopSignals, lock: OutputDirLock | None = None
         ) -> CrocTrainer | None:
    # Everything about the data is decided before anything heavy loads: the rows are read and validated, then fitted
    # to model_max_length with the stage's tokenizer (no weights), each one trained whole, cut, or rejected. What
    # output_dir refuses without the run's record (another program's files, a resume with nothing to resume, a model
    # source whose processor is not the resumed checkpoint's) first.
    processor = load_stage_processor(model_args, args)
    if processor is None:
        raise ConfigError(f"{model_args.name_or_path} has no processor (tokenizer and image processor files); save "
                          "the processor into the model folder")
    # Stage 1.5's bound on image sizes serves its one-to-one matching only: checkpoints and the final folder keep the
    # source's sizes, so stage 2 and inference from them see images as the model family does.
    saved_processor = (load_stage_processor(model_args, args, bound_to_pool=False)
                       if hasattr(processor, "limit_visual_tokens") else processor)
    processor_print = processor_fingerprint(saved_processor)
    check_output_dir(args, processor_print)
    training_rows = load_training_rows(data_args, args, image_processor=processor.image_processor)
    train_dataset = build_train_dataset(training_rows, processor, args, num_proc=data_args.num_proc)
    try:
        croc_config = croc_config_dict(model_args, args)
    except (CrocConfigError, StrictDataclassError) as error:
        raise ConfigError(f"model config: {error}") from None
    if args.should_log:
        # Allowed (an ablation may mean it), but days of training from the wrong folder are more often a wrong path
        # in a config.
        for line in starting_folder_warnings(model_args.name_or_path, stage.name, croc_config, args.croc_preset):
            logger.warning("%s", line)
    record = build_run_record(model_args, data_args, args, croc_config, train_dataset.rows,
                              training_rows.start_rejections, training_rows.fit_verdicts,
                              data_rows=train_dataset.rows_fingerprint, processor_print=processor_print)
    check_every_process_runs_this_run(args, record, lock)
    resume_from = plan_resume(args, record)  # the checkpoint (verified, same run) or None; before the model loads
    grouped = args.group_by_modality_length
    epoch_rows = (grouped_epoch_rows(train_dataset.modality_lengths, args.per_device_train_batch_size,
                                     args.world_size) if grouped else record.get("epoch_rows"))
    repeats = epoch_repeats_line(epoch_rows, len(train_dataset), args.world_size, args.per_device_train_batch_size,
                                 grouped=grouped)
    if repeats and args.should_log:
        logger.info("%s", repeats)
    done = finished_step(args, record, resume_from, bool(args.push_to_hub or args.hub_dry_run or model_args.use_peft))
    if done is not None:
        logger.info("%s holds this run, finished at step %d: nothing to train (another configuration is refused; "
                    "another output_dir trains anew)", args.output_dir, done)
        return None
    _check_eval_results_are_of_the_model_written(args, resume_from)
    # A README.md the user edited is kept and the card written beside it (`run_card_file.save_run_card`, which says so
    # at the end): said before the hours of training too, while there is time to move it. Claimed once the run is
    # sure to train: a rerun of a finished run writes nothing.
    if args.should_save and not claim_card(args.output_dir):
        logger.warning("%s", edited_card_message(args.output_dir))
    _share_process_group_with_deepspeed(args)
    try:
        # A model folder that does not load (weights its config.json does not describe, a file cut short) is a
        # `ConfigError` from here; it comes before the run writes anything, so output_dir is left as it was.
        model, _ = load_model_and_processor(model_args, args)
    except (CrocConfigError, StrictDataclassError) as error:
        # A Croc field the model cannot run with, found from its config before the weights (a source whose
        # config.json `resolve_config` could not read ahead, such as an uncached Hub id).
        raise ConfigError(f"model config: {error}") from None
    if resume_from is None or model_args.use_peft:  # a resumed run's weights are the checkpoint's (LoRA's base is not)
        check_finite_start(model, _model_source(model_args), args)
    # The run may write into output_dir from here on, once the model loaded: its record goes first, so whatever
    # moment it is stopped at, the folder is known as this run's (a final save cut short is rewritten by the rerun,
    # not refused).
    try:
        if args.process_index == 0:
            write_run_record(args.output_dir, record, status="running")
        training_rows.report.write_start()
    except OSError as error:  # a full disk or a quota: one line, before the first step
        raise ConfigError(f"output_dir {args.output_dir} cannot be written ({error.strerror or error}); nothing was "
                          "trained; free space and rerun the same command") from None
    counts = apply_trainable_parts(model, args.trainable_parts)
    if model_args.use_peft:
        model = apply_lora(model, model_args, args, resume_from)
        counts = count_trainable(model)
    # The main process writes the weights (another process its own shards or RNG state at most, which the bounds do
    # not describe; save_on_each_node is refused).
    if args.process_index == 0:
        check_disk_space(model, args, adapter_only=bool(model_args.use_peft),
                         merged_dir=merged_folder(args.output_dir) if model_args.use_peft else None)
    if args.should_log:
        logger.info("%s", format_trainable(counts, stage.name))
        logger.info("learning rates: %s", args.group_learning_rates)
        logger.info("%s", format_layout(args))
        short = short_epoch_warning(train_dataset, args)
        if short:
            logger.warning("%s", short)

    trainer = CrocTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=build_collator(processor, packing=args.packing, packing_max_length=args.packing_max_length,
                                     report_rows=True),
        processing_class=saved_processor,
        provenance=run_provenance(model_args, data_args),
        data_report=training_rows.report,
        run_record=record,
        stop_signals=signals,
        output_lock=lock,
    )
    trainer.train(resume_from_checkpoint=resume_from)
    report = training_rows.report
    # Each write into output_dir below (and the push of what it holds) first makes sure the folder is still this
    # run's: a run that lost its lock while training stops here, on every process, with one line.
    control = trainer.run_control
    if trainer.preempted:
        control.check_output_dir_lock()
        try:
            report.write(args.output_dir)
        except OSError as error:
            # The checkpoint (which holds its own copy of the report) is written: the exit status must still tell
            # the scheduler to requeue the run, not that it failed.
            logger.warning("could not write %s into %s (%s); checkpoint-%d holds it", REPORT_FILE, args.output_dir,
                           error, trainer.state.global_step)
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{trainer.state.global_step}")
        raise RunPreempted(f"stopped by {trainer.run_control.stopped_by} after step {trainer.state.global_step}: "
                           f"checkpoint-{trainer.state.global_step} written in {args.output_dir}; "
                           f"{continue_hint(args, checkpoint)}")
    control.check_output_dir_lock()
    with _final_writes(trainer, "the final model folder"):
        trainer.save_model()
        trainer.save_state()
        # Every stage folder carries its card: the next stage inherits base models, licences and datasets from it.
        trainer.create_model_card(model_name=args.hub_model_id or None)
        report.log_final()
        report.write(args.output_dir)
        if trainer.is_world_process_zero():
            write_run_record(args.output_dir, record, status="finished", step=trainer.state.global_step)
        if model_args.use_peft and trainer.is_world_process_zero():
            _merge(model_args, args, record)
    control.check_output_dir_lock()
    if args.hub_dry_run:
        with _final_writes(trainer, f"the dry run's folder {args.hub_dry_run}"):
            hub_dry_run(trainer, args.hub_dry_run, run_folders(model_args, data_args, args))
    elif args.push_to_hub:
        try:
            push(trainer, keep_clear_of=run_folders(model_args, data_args, args))
        except (OSError, ValueError, HfHubHTTPError) as error:
            # A rerun pushes after resuming from the last step's checkpoint; without one it would train again. No
            # `hf upload` of output_dir: it would send what the push keeps local (training_args.bin with the token,
            # checkpoints, rejected rows), and, after a refusal, the very file the scan found.
            last = Path(args.output_dir) / f"checkpoint-{trainer.state.global_step}"
            rerun = ("rerun the same command: it resumes from the last checkpoint, trains nothing more and pushes"
                     if last.is_dir() else "a rerun trains again, as the run kept no checkpoint of its last step")
            if isinstance(error, ConfigError):  # the leak check or a link: nothing was uploaded
                raise RunStopped(f"the push to {args.hub_model_id or 'the Hub'} was refused, nothing was uploaded: "
                                 f"{error}; the trained model is complete in {args.output_dir}: once that is "
                                 f"resolved, {rerun}") from None
            raise RunStopped(f"the push to {args.hub_model_id or 'the Hub'} failed ({type(error).__name__}: "
                             f"{error}); the trained model is complete in {args.output_dir}: {rerun}") from None
    if trainer.is_world_process_zero():
        what = ("the LoRA adapters to " + args.output_dir + " and the merged model to " + str(merged_folder(args.output_dir))
                if model_args.use_peft and model_args.name_or_path else "the model to " + args.output_dir)
        logger.info("stage %s finished at step %d: saved %s (the next stage's model.name_or_path)", stage.name,
                    trainer.state.global_step, what)
    return trainer


def _model_source(model_args) -> str:
    """The model source as the user named it: a folder or Hub id, or stage 1's separate parts."""
    if model_args.name_or_path:
        return str(model_args.name_or_path)
    return f"model.vision_tower {model_args.vision_tower} with model.language_model {model_args.language_model}"


@contextlib.contextmanager
def _final_writes(trainer: CrocTrainer, what: str):
    """A write that fails at the end of a run (a full disk, a quota) is one line naming what was not written and
    where the run can be resumed from; the checkpoints are untouched."""
    try:
        yield
    except Exception as error:  # torch.save raises RuntimeError, tokenizers a plain Exception: `is_write_failure`
        if not is_write_failure(error):
            raise
        reason = write_failure_reason(error) if not isinstance(error, OSError) else error
        raise RunStopped(f"could not write {what}: {reason}; training finished and the checkpoints are as they were "
                         "(what was written of the folder is rewritten by a rerun); "
                         f"{trainer.last_checkpoint_message()}") from None


def _merge(model_args, args, record: dict) -> None:
    from .merge_lora import merge_lora

    if not model_args.name_or_path:
        logger.warning("LoRA adapters saved in %s; not merged: the base is not a saved folder", args.output_dir)
        return
    merged = merged_folder(args.output_dir)
    # The record goes first, as into output_dir: a merge cut short leaves a folder known as this run's, which the
    # rerun writes again rather than refuses as someone else's.
    merged.mkdir(parents=True, exist_ok=True)
    write_run_record(merged, record, status="merging")
    with _whole_models(args):
        merge_lora(args.output_dir, merged)
    write_run_record(merged, record, status="merged")


@contextlib.contextmanager
def _whole_models(args):
    """Models built inside load whole, not partitioned. Under ZeRO-3 transformers builds every model it loads in
    `deepspeed.zero.Init`, a collective call; the merge runs on the main process alone, the others done: a LoRA run
    under ZeRO-3 trained, saved its adapters and ended in a broadcast to processes that had left (a traceback, or
    a hang until the collective timeout), its merged folder never written."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    config = getattr(args, "hf_deepspeed_config", None)
    if config is None or not config.is_zero3():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def cli() -> None:
    """Console entry: a configuration or data problem exits (status 1) with one line, not a traceback; so do a
    diverged run and a failed checkpoint write (status 1) and a preempted one (status `PREEMPTED_EXIT_CODE`)."""
    survive_a_lost_reader()  # first: the log handlers made from here on write through it
    if wants_help(sys.argv[1:]):
        print(help_text())
        return
    try:
        trainer = main()
    except StartupFailedElsewhere as error:  # its line says what kind of error it was
        sys.exit(f"run not started: {_one_line(error)}")
    except ConfigError as error:
        line = f"configuration error: {_one_line(error)}"
        report_failure(line)  # to the run's other processes, if they wait for this one to start
        sys.exit(line)
    except DataError as error:
        line = f"data error: {_one_line(error)}"
        report_failure(line)
        sys.exit(line)
    except RunStopped as error:
        print(f"run stopped: {_one_line(error)}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt as interrupt:
        # Before the run handles Ctrl-C (imports, the config's checks) nothing was written.
        notes = getattr(interrupt, "__notes__", None)
        print(notes[-1] if notes else "interrupted (Ctrl-C) before the run started; nothing was written",
              file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # a traceback of its own: the other processes still learn it, in one line
        report_failure(f"{type(error).__name__}: {_one_line(error)}")
        raise
    _leave_process_group(main_works_alone=_main_process_works_alone(trainer))


def _main_process_works_alone(trainer: CrocTrainer | None) -> bool:
    """Whether the main process still works alone when the run is done: an upload, a dry run's folder (every file
    copied and scanned) or a LoRA merge (the base loaded, merged and saved)."""
    if trainer is None:
        return False
    args = trainer.args
    return bool(args.push_to_hub or args.hub_dry_run or hasattr(trainer.model, "get_base_model"))


def _leave_process_group(main_works_alone: bool) -> None:
    """End a launched run's process group once the run is done, as `accelerate`'s `end_training` does, every process
    at once: a finished ZeRO-3 run on two loaded CPU cores ended with `std::terminate` (exit -6) after every file was
    written, in the process that finished first, once while left to the interpreter's shutdown and once while it
    tore its connections down with the main process still writing the run record. While the main process works
    alone (an upload, a dry run, a LoRA merge) the others do not wait for it: that work can outlast the collective
    timeout (`ddp_timeout`), and a process ended by it makes the launcher stop the main one mid-work."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if not main_works_alone:
            dist.barrier()
        dist.destroy_process_group()


# How torch re-raises an error of a DataLoader worker in the training process: the same type, whose message is
# "Caught <type> in DataLoader worker process N.\nOriginal Traceback ...", the worker's whole traceback.
_WORKER_ERROR = "Caught {} in DataLoader worker process"


def _one_line(error: Exception) -> str:
    text = str(error)
    if text.startswith(_WORKER_ERROR.format(type(error).__name__)):
        # A row a worker could not replace (an image root gone mid-run) raised a one-line DataError there: its message
        # is the traceback's last line, after the type's name.
        text = text.rstrip().splitlines()[-1].partition(": ")[2] or text
    return " ".join(text.split())


if __name__ == "__main__":
    cli()
