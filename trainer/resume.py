"""Before the model loads: which checkpoint a run resumes from, whether it may, and who may write `output_dir`.

Run by `trainer.train.main` after the rows are read and before anything heavy: the main process decides (it takes
the output folder's lock, verifies checkpoints against their manifests, compares run records) and every other
process follows its verdict, so all of them resume the same checkpoint or stop with the same one line.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from modeling_croc.families import remote_code_files

from .checkpoint_io import (
    NO_MANIFEST,
    NO_MANIFEST_WAY_ON,
    SAFE_INDEX,
    SAFE_WEIGHTS,
    STAGING_DIR,
    checkpoint_folders,
    checkpoint_problem,
    checkpoint_step,
    note_added_reports,
)
from .cli import ConfigError
from .data_report import refused_start_only
from .output_lock import OutputDirLock, OutputDirLocked, lock_token
from .run_record import (
    COMPUTATION,
    FIXED,
    computation_changes,
    keys_differing_between_processes,
    processor_refusal,
    read_run_record,
    record_differences,
    record_digests,
    resume_refusal,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


def main_process_decides(args, decide: Callable[[], T]) -> T:
    """`decide()` on the main process; its result (or its `ConfigError`, one line) on every process."""
    outcome: list[Any] = [None, None]
    if args.process_index == 0:
        try:
            outcome = [decide(), None]
        except ConfigError as error:
            outcome = [None, str(error)]
    if args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(outcome, from_process=0)
    if outcome[1] is not None:
        raise ConfigError(outcome[1])
    return outcome[0]


def check_every_process_runs_this_run(args, record: dict[str, Any], lock: OutputDirLock | None) -> None:
    """Refuse, on every process with the same line, a run whose processes would not train one run: the main process's
    record is the run's, but a node reading other rows (a node-local copy of the data that differs) or another
    configuration (another YAML, another version of this project) trained what no record describes, without a word;
    and where output_dir is not one folder every node sees (a node-local disk, a relative path from another working
    directory), another node's part of each checkpoint stayed in its own folder, found at the first resume. Compared
    once, before the model loads: each process's record, key by key, by digest; and the lock token each node's first
    process reads in output_dir against the main process's own (the lock is taken before, `output_dir_lock`)."""
    if args.world_size <= 1:
        return
    from accelerate.utils import gather_object

    mine = {"keys": record_digests(record), "host": socket.gethostname(),
            "first_on_node": args.local_process_index == 0,
            "token": lock.holder.token if lock is not None else None,
            "seen": lock_token(args.output_dir) if args.local_process_index == 0 else None}
    problem = _disagreement(args.output_dir, gather_object([mine]))
    if problem is not None:
        raise ConfigError(problem)


def _disagreement(output_dir: str, processes: list[dict[str, Any]]) -> str | None:
    """What `check_every_process_runs_this_run` refuses, from every process's part (the same on each)."""
    main = processes[0]
    for rank, other in enumerate(processes[1:], start=1):
        differ = keys_differing_between_processes(main["keys"], other["keys"])
        if differ:
            return (f"process {rank} (on {other['host']}) would train another run than process 0 (on {main['host']}): "
                    f"its {', '.join(differ)} differ; every node must read the same rows with the same configuration "
                    "(the same data files, config file and project version)")
    token = main["token"]
    for rank, other in enumerate(processes):
        if token is not None and other["first_on_node"] and other["seen"] != token:
            return (f"output_dir {output_dir} is not the same folder on {other['host']} (process {rank}) as on "
                    f"{main['host']} (process 0): a checkpoint is written into one folder every node must see; put "
                    "output_dir on a filesystem every node shares, as an absolute path")
    return None


@contextlib.contextmanager
def output_dir_lock(args) -> Iterator[OutputDirLock | None]:
    """Hold `output_dir`'s lock (main process) for the run; every process stops if another run holds it. Yields the
    lock on the main process (for `RunControl`, which stops the run if it is taken over), None elsewhere."""
    lock = OutputDirLock(args.output_dir)

    def take() -> bool:
        try:
            lock.acquire()
        except OutputDirLocked as error:
            raise ConfigError(str(error)) from None
        except OSError as error:
            raise ConfigError(f"output_dir {args.output_dir} cannot be created or written ({error.strerror})") from None
        return True

    held = main_process_decides(args, take)
    try:
        yield lock if held and args.process_index == 0 else None
    finally:
        if held and args.process_index == 0:
            lock.release()


# Files a run writes at the top of its output folder: a folder holding one of them (or one of the code files the save
# copies in, `remote_code_files`) without this trainer's run record holds something the run would overwrite (another
# program's model, a dataset's card and rejects, the user's own `losses.py`, ...).
RUN_OUTPUTS = ("config.json", SAFE_WEIGHTS, SAFE_INDEX, "adapter_config.json", "adapter_model.safetensors",
               "README.md", "rejects.jsonl", "data_report.json", "trainer_state.json", "training_args.bin",
               "all_results.json", "train_results.json", "generation_config.json", "processor_config.json",
               "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def _would_overwrite(folder: Path) -> list[str]:
    return [name for name in (*RUN_OUTPUTS, *sorted(remote_code_files())) if (folder / name).exists()]


def merged_folder(output_dir: str | Path) -> Path:
    """Where a LoRA run writes its merged model (`trainer.train`): `<output_dir>-merged`."""
    return Path(f"{str(output_dir).rstrip('/')}-merged")


def plan_resume(args, record: dict[str, Any]) -> str | None:
    """The checkpoint this run resumes from (None: it starts fresh), decided on the main process. `ConfigError` when
    the configuration differs from the checkpoint's in a way the run cannot continue from or would silently
    ignore (`trainer.run_record`), when `output_dir` holds checkpoints none of which is intact, or a model another
    run (or something else) wrote."""
    return main_process_decides(args, lambda: _plan(args, record))


def check_output_dir(args, processor: dict[str, Any] | None = None) -> None:
    """The refusals of `plan_resume` that need no run record (a folder holding files no run of this trainer wrote,
    `resume_from_checkpoint=true` with no checkpoint, checkpoints none of which is intact, `resume_accept_changes`
    with nothing to resume), made before the training rows are read: the record counts the rows, and reading and
    checking them (every image's header or pixels) can take hours before such a one-line refusal. `processor`: the
    run's `processor_fingerprint`, compared with the resumed checkpoint's already (`processor_refusal`)."""
    main_process_decides(args, lambda: _plan(args, None, processor))


def _plan(args, record: dict[str, Any] | None, processor: dict[str, Any] | None = None) -> str | None:
    """`plan_resume`'s decision; with `record` None, only what can be decided without it (the processor, where
    `processor` is given, is compared)."""
    output_dir = Path(args.output_dir)
    accepted = list(args.resume_accept_changes or [])
    explicit = args.resume_from_checkpoint
    if isinstance(explicit, str):
        if STAGING_DIR in Path(explicit).expanduser().absolute().parts:
            # A save not renamed into place (the run was stopped mid-save, or the lock lost): every start removes
            # the staging folder, this checkpoint with it, before the first step.
            raise ConfigError(f"resume_from_checkpoint {explicit} lies in {STAGING_DIR}, where a save is written "
                              "before it is complete and which every start clears: move it out of there (and check "
                              "it) to resume it")
        problem = checkpoint_problem(explicit)
        if problem is not None:
            raise ConfigError(f"resume_from_checkpoint {explicit} cannot be resumed: {problem}; name another "
                              "checkpoint, or leave the option out to resume from the newest intact one"
                              + (f"; {NO_MANIFEST_WAY_ON}" if problem == NO_MANIFEST else ""))
        _check_within_max_steps(explicit, args)
        _check_processor(explicit, processor, accepted)
        if record is not None:
            _check_record(explicit, record, accepted)
            note_added_reports(explicit)
        # The folders it writes into hold nothing of another model or run, as for any resume: a checkpoint named
        # from elsewhere says nothing of them (one of output_dir itself vouches for output_dir's own record).
        inside = Path(explicit).resolve().parent == output_dir.resolve()
        for folder, what in ((output_dir, "output_dir"), (merged_folder(output_dir), "the LoRA merge folder")):
            _check_folder(folder, what, record, accepted, explicit if inside and folder == output_dir else None)
        return str(explicit)
    checkpoint = None
    if explicit is True or args.auto_resume:
        problems = []
        for folder in checkpoint_folders(output_dir):
            problem = checkpoint_problem(folder)
            if problem is None:
                checkpoint = str(folder)
                if record is not None:
                    note_added_reports(folder)
                break
            problems.append(f"{folder.name}: {problem}")
            if record is not None:  # said once, by the decision that resumes
                logger.warning("skipping checkpoint %s: %s (kept; not resumed)", folder, problem)
        if checkpoint is None and problems:
            # Starting over here would rotate these folders away (save_total_limit): nothing is deleted unasked.
            raise ConfigError(f"output_dir {output_dir} holds checkpoints but none can be resumed ("
                              + "; ".join(problems[:3]) + "); move them out of the way to start over, or fix them"
                              + (f"; {NO_MANIFEST_WAY_ON}" if any(problem.endswith(f": {NO_MANIFEST}")
                                                                  for problem in problems) else ""))
        if checkpoint is None and explicit is True:
            raise ConfigError(f"resume_from_checkpoint=true but {output_dir} holds no checkpoint")
    if checkpoint is None and accepted:
        raise ConfigError("resume_accept_changes is set but there is no checkpoint to resume: nothing to accept")
    if checkpoint is not None:
        _check_within_max_steps(checkpoint, args)
        _check_processor(checkpoint, processor, accepted)
    if checkpoint is not None and record is not None:
        _check_record(checkpoint, record, accepted)
    for folder, what in ((output_dir, "output_dir"), (merged_folder(output_dir), "the LoRA merge folder")):
        _check_folder(folder, what, record, accepted, checkpoint if folder == output_dir else None)
    return checkpoint


def _check_processor(checkpoint: str, processor: dict[str, Any] | None, accepted: list[str]) -> None:
    saved = read_run_record(checkpoint) if processor is not None else None
    refusal = None if saved is None else processor_refusal(saved, processor, accepted, Path(checkpoint).name)
    if refusal is not None:
        raise ConfigError(refusal)


def _check_within_max_steps(checkpoint: str, args) -> None:
    """A checkpoint past `max_steps` cannot go on to it: the Trainer would end at once, past it, and save the
    checkpoint's weights as the final model (a `max_steps` lowered below the newest checkpoint, accepted)."""
    step = checkpoint_step(checkpoint)
    if args.max_steps > 0 and step is not None and step > args.max_steps:
        raise ConfigError(f"{checkpoint} is at step {step}, past max_steps={args.max_steps}: name a checkpoint at or "
                          "before that step with --resume_from_checkpoint, or raise max_steps")


def _check_folder(folder: Path, what: str, record: dict[str, Any] | None, accepted: list[str],
                  resumed: str | None) -> None:
    """A folder the run writes into holds nothing it would overwrite but this run's own files: a run record equal to
    this run (a run that started, was stopped or finished with this configuration), or nothing of a run at all.
    `resumed`: the checkpoint of `folder` this run resumes (verified against its manifest), or None."""
    if not folder.exists():
        return
    saved = read_run_record(folder)
    if saved is None:
        found = _would_overwrite(folder)
        if found and resumed is not None and read_run_record(resumed) is not None:
            # The folder's own record is gone (a cleanup job's, a hand's), not the run: an intact checkpoint of it
            # carries the record the run wrote, which this resume is compared with (`_check_record`) before anything
            # is written; a different run is refused there, by its differences. The files beside it are the ones
            # this run writes, and the run writes its record again once the model has loaded.
            if record is not None:  # said once, by the decision that resumes
                logger.warning("%s %s has no run record (croc_run.json), yet its %s holds this run's: resuming "
                               "from it (the run writes its record again)", what, folder, Path(resumed).name)
            return
        recorded = next((checkpoint for checkpoint in checkpoint_folders(folder)
                         if read_run_record(checkpoint) is not None), None) if found else None
        if recorded is not None:
            # Not "files this trainer did not write": its checkpoint says a run of it did, and only the record is
            # gone; this run resumes none of its checkpoints (auto_resume=false, or one named from elsewhere).
            raise ConfigError(f"{what} {folder} has lost its run record (croc_run.json) while {recorded.name} holds "
                              f"the record of the run that wrote it ({', '.join(found[:4])}); this run resumes none "
                              f"of its checkpoints, so it would overwrite them: resume it (--resume_from_checkpoint="
                              f"{recorded}, or auto_resume on), or choose another output_dir")
        if found and not refused_start_only(folder, found):
            raise ConfigError(f"{what} {folder} already holds {', '.join(found[:4])}, which this trainer's run did "
                              "not write (no croc_run.json); training would overwrite them: choose another output_dir "
                              "(the files of a version from before run records are continued or published by that "
                              "version)")
        return
    if not resumed and record is not None:
        # This run resumes nothing of the recorded one (none of its checkpoints, or one named from elsewhere): the
        # way on is another folder, not `resume_accept_changes`, which only applies to a resumed checkpoint.
        differences = [difference for difference in record_differences(saved, record)
                       if difference.key in FIXED or difference.key not in accepted]
        if differences:
            raise ConfigError(f"{what} {folder} holds another run ({saved.get('status', 'finished')}), which "
                              f"differs from this one in {'; '.join(d.describe() for d in differences)}; this run "
                              "resumes none of its "
                              "checkpoints, so its files would be overwritten: give this run another output_dir (a "
                              "next stage starts from the previous stage's final folder), or restore those values")


def _check_record(checkpoint: str, record: dict[str, Any], accepted: list[str]) -> None:
    saved = read_run_record(checkpoint)
    if saved is None:
        raise ConfigError(f"{checkpoint} has no run record (croc_run.json): it was not written by this trainer's "
                          "run; it is not resumed")
    refusal = resume_refusal(saved, record, accepted, Path(checkpoint).name)
    if refusal is not None:
        raise ConfigError(refusal)
    changed = computation_changes(saved)
    if changed is not None:
        logger.warning("%s was written by an earlier version of this trainer; from the resumed step on, this version "
                       "computes differently: %s (the loss curve goes on, not as the earlier version would have "
                       "drawn it)", checkpoint, changed)
    written = saved.get("computation")
    if isinstance(written, int) and not isinstance(written, bool) and written > COMPUTATION:
        # A later version's fixes are not in this one: the run would go on as this version computes, unsaid.
        logger.warning("%s was written by a later version of this trainer (computation %d; this one computes as "
                       "version %d): from the resumed step on the run goes on without that version's fixes; resume "
                       "it with that version", checkpoint, written, COMPUTATION)


def finished_step(args, record: dict[str, Any], resume_from: str | None, publishes: bool) -> int | None:
    """The step at which `output_dir` holds this very run finished (its record `finished`, this configuration, its
    final weights there), when rerunning it would only train again, or None (decided on the main process).

    A rerun of a finished run resumes, like any other: from a checkpoint at its last step it trains nothing. A run
    that keeps no checkpoint (`save_strategy: "no"`), or whose newest is older (a Ctrl-C's), would train again from
    the start or from there, hours on 8 GPUs; so it stops at once instead. Not when the run publishes or merges
    after training (`publishes`: those need the trained model in memory), nor when it asks not to resume
    (`auto_resume=false`) or names a checkpoint."""
    if publishes or not args.auto_resume or args.resume_from_checkpoint not in (None, False):
        return None

    def decide() -> int | None:
        output_dir = Path(args.output_dir)
        saved = read_run_record(output_dir)
        if saved is None or saved.get("status") != "finished" or not isinstance(saved.get("step"), int):
            return None
        if resume_refusal(saved, record, [], "") is not None:
            return None
        if not (output_dir / "config.json").is_file() or not any(
                (output_dir / name).is_file() for name in (SAFE_WEIGHTS, SAFE_INDEX)):
            return None
        if resume_from is not None and _step(resume_from) >= saved["step"]:
            return None  # resuming from the last step trains nothing: the usual path
        return saved["step"]

    return main_process_decides(args, decide)


def _step(checkpoint: str | Path) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def continue_hint(args, checkpoint: str | Path) -> str:
    """How to go on from `checkpoint` (one this run wrote in `output_dir`), for the messages of a stopped run. The
    same command resumes from the newest intact checkpoint only when it names none: with `resume_from_checkpoint`
    set to another folder (a roll-back after a divergence) it would go back there, and a requeued job would redo the
    same steps after every preemption; with `auto_resume=false` it would start over."""
    explicit = args.resume_from_checkpoint
    if isinstance(explicit, str) and Path(explicit).resolve() != Path(checkpoint).resolve():
        return (f"continue with --resume_from_checkpoint={checkpoint} (the same command "
                f"would go back to {explicit} and train those steps again)")
    if explicit in (None, False) and not args.auto_resume:
        return (f"continue with --resume_from_checkpoint={checkpoint} (with auto_resume=false the same command "
                "would start over)")
    return SAME_COMMAND_CONTINUES


SAME_COMMAND_CONTINUES = "rerun the same command to continue"


__all__ = ["continue_hint", "finished_step", "main_process_decides", "output_dir_lock", "plan_resume"]
