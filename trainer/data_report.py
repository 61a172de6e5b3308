"""What happened to the training rows, for the logs, the rejects file and the stop rule.

Every row read is accounted for: trained whole, trained truncated (cut to `model_max_length`, its image and at least
one answer token kept), rejected, or replaced. Two moments count: the start (rows the validator rejected,
`data_recipes.validation`, rows that cannot fit `model_max_length`, `trainer.data.LENGTH_REJECT_REASONS`, rows cut
to fit, and rows kept but noticed, such as repeated ids) and training (rows that could not be used when the dataset
asked for them, an unreadable image or a row the start could not measure: each is replaced by the next usable row
of its kind, so the batch keeps its size, and counted here). The report is logged at the start and at the end,
every rejected or replaced row is a line of `<output_dir>/rejects.jsonl`, and the training counts travel in every
checkpoint (`data_report.json`), so a resumed run continues the same counts and the same file.

Two rules stop a run for bad data, one budget, `data.max_reject_fraction`: at the start, where every row is known,
`data_recipes.exceeds_reject_budget` (more than that fraction of the rows read, and more than one); in training,
where the rows seen so far are a sample, `data_recipes.rate_exceeds_reject_budget` (the rate over that fraction with
99.9% confidence, and more than one bad row). Under `data.strict` any bad row stops it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_recipes import (
    NOTICES,
    REJECT_REASONS,
    RejectedRowsError,
    exceeds_reject_budget,
    format_counts,
    rate_exceeds_reject_budget,
)
from data_recipes.validation import display_id
from modeling_croc.publish_folder import file_digest

from .data import LENGTH_REJECT_REASONS
from .run_record import RUN_RECORD

logger = logging.getLogger(__name__)

REJECTS_FILE = "rejects.jsonl"
# Beside the rejects file a run refused for its rows wrote into a folder of no run: its size and SHA-256, so that the
# corrected command's run knows that file for the refused start's (`refused_start_only`), not the user's.
REFUSED_START_FILE = ".croc-refused-start.json"
REPORT_FILE = "data_report.json"  # in the output folder at the end, and in every checkpoint
# Every reason a run may reject or replace a row for: the validator's and the length rules'.
RUN_REJECT_REASONS: dict[str, str] = {**REJECT_REASONS, **LENGTH_REJECT_REASONS}
_EXAMPLES = 5  # row ids quoted per count in the report


@dataclass
class DataReport:
    """Counts of rejected, noticed and replaced rows of one run.

    Attributes:
        source: the data path, for messages.
        rows_read: rows read at the start (before validation).
        rejected: rows rejected at the start (validation and length), per reason (`RUN_REJECT_REASONS`).
        truncated: rows the start found longer than `model_max_length`, trained cut to it; `truncated_examples`
            quotes the first ids.
        notices: rows kept but counted (`data_recipes.NOTICES`).
        rows_seen: rows the training loop asked for (a row asked for in two epochs counts twice).
        replaced: rows asked for that could not be used (each replaced by the next usable row of its kind), per
            reason, counted like `rows_seen`.
        replaced_rows: one record per distinct replaced row ({id, index, image, reason, detail, step}): the rejects
            file's training lines.
        truncated_in_training: rows cut to fit when asked for (those the start could not measure: AnyRes images),
            counted like `rows_seen`.
        rows_in_skipped_steps: rows of the steps skipped for a non-finite loss or gradient norm
            (`max_nonfinite_steps`): asked for, counted in `rows_seen`, and not trained on.
        max_reject_fraction, strict: the stop rule (`data.max_reject_fraction`, `data.strict`).
        rejects_path: where rejected and replaced rows are written (None: nowhere).
        writes: whether this process writes files (the main process).
        logs: whether this process says the report's lines (the main process): every process holds the same counts,
            so a replica's lines would say them again, once per GPU.
    """

    source: str = ""
    rows_read: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_REJECT_REASONS, 0))
    truncated: int = 0
    truncated_examples: list[str] = field(default_factory=list)
    notices: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOTICES, 0))
    rows_seen: int = 0
    replaced: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_REJECT_REASONS, 0))
    replaced_rows: list[dict[str, Any]] = field(default_factory=list)
    truncated_in_training: int = 0
    rows_in_skipped_steps: int = 0
    # The start's rejected rows (validation and length), held until the run is allowed to write into its output
    # folder (`write_start`): a run refused before it starts leaves the folder's rejects file as it was.
    start_rejects: list[dict[str, Any]] = field(default_factory=list, repr=False)
    max_reject_fraction: float = 0.01
    strict: bool = False
    rejects_path: Path | None = None
    writes: bool = True
    logs: bool = True
    # What the build `source` is (or whose data.jsonl it is) dropped before this run read it, "" for nothing: the
    # start's own counts begin after the build, and a mixture that lost rows there said so only in the build's log.
    built: str = ""
    # What the start's refusal adds to its line (`trainer.data_loading`: where most rejects are missing images, where
    # the first was looked for and the image root that would hold it), "" for nothing.
    hint: str = ""
    # The indices of `replaced_rows`, built from them when first needed (None: not yet, or the rows were restored).
    _known: set[int] | None = field(default=None, init=False, repr=False, compare=False)
    # (step, rows) of the last step `record` counted, for `skip_step`.
    _last_step: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    # ---- the start ----
    def start_message(self) -> str:
        """One line: rows read, rejected per reason, truncated, notices, where the rejected rows are."""
        rejected = sum(self.rejected.values())
        truncated = (f", {self.truncated:,} trained cut to model_max_length (e.g. {', '.join(self.truncated_examples)})"
                     if self.truncated else "")
        return (f"training rows from {self.source}: {self.rows_read:,} read, {rejected:,} rejected "
                f"({format_counts(self.rejected)}){truncated}, kept with notices: {format_counts(self.notices)}"
                + (f"; rejected rows with their reasons: {self.rejects_path}" if rejected and self.rejects_path
                   else "") + (f"; {self.built}" if self.built else ""))

    def log_start(self) -> None:
        """Say `start_message` (a warning when the start, or the build before it, rejected rows)."""
        if self.logs:
            (logger.warning if sum(self.rejected.values()) or self.built else logger.info)("%s", self.start_message())

    def add_rejected(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count

    def add_truncated(self, row_id: str) -> None:
        self.truncated += 1
        if len(self.truncated_examples) < _EXAMPLES:
            self.truncated_examples.append(str(row_id))

    def write_start(self) -> None:
        """Write the rejects file afresh with the start's rejected rows (main process; the training lines follow)."""
        if not self.writes or self.rejects_path is None:
            return
        self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
        (self.rejects_path.parent / REFUSED_START_FILE).unlink(missing_ok=True)  # the file is a run's from here on
        with self.rejects_path.open("w", encoding="utf-8") as f:
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.start_rejects))

    def check_start(self) -> None:
        """Stop before the model loads if the start rejected more than the run accepts (the rejects file, which the
        message names, is written first: `write_refused_start`)."""
        rejected = sum(self.rejected.values())
        if self._over_budget(rejected, self.rows_read):
            raise RejectedRowsError(
                f"{rejected:,} of {self.rows_read:,} rows of {self.source} rejected ({format_counts(self.rejected)}), "
                f"more than {self._budget_words()}; rejected rows with their reasons: {self.write_refused_start()}"
                + (f"; {self.hint}" if self.hint else ""))

    def write_refused_start(self) -> str:
        """For a run refused for its rows before it starts: write the start's rejects where the refusal's line says,
        and say where (the rejects file). Not over the rejects file of a run the output folder already holds (its
        record beside it: the rerun of a finished run's command on a node without its images), which its data
        report names: a refused run leaves the folder's files as they were."""
        if self.rejects_path is not None and (self.rejects_path.parent / RUN_RECORD).is_file():
            return (f"none written, as {self.rejects_path} is the rejects file of the run output_dir holds, left as "
                    "it was (another output_dir writes them)")
        self.write_start()
        if self.writes and self.rejects_path is not None:
            size, digest = file_digest(self.rejects_path)
            (self.rejects_path.parent / REFUSED_START_FILE).write_text(
                json.dumps({"file": REJECTS_FILE, "size": size, "sha256": digest}) + "\n", encoding="utf-8")
        return str(self.rejects_path)

    # ---- training ----
    def record(self, rows: int, replaced_rows: list[dict[str, Any]], step: int, truncated: int = 0) -> None:
        """Count `rows` rows asked for by one optimiser step (all processes), the rows among them that were
        replaced (appended to the rejects file) and those cut to fit."""
        self._last_step = (int(step), int(rows))
        self.rows_seen += int(rows)
        self.truncated_in_training += int(truncated)
        if not replaced_rows:  # the common step: nothing to count, write or log
            return
        for row in replaced_rows:
            self.replaced[row["reason"]] = self.replaced.get(row["reason"], 0) + 1
        if self._known is None:
            self._known = {row["index"] for row in self.replaced_rows}
        known = self._known  # kept, not rebuilt: a set of every replaced row on each such step was O(bad rows)
        new = []
        for row in replaced_rows:
            if row["index"] not in known:  # a row replaced again in a later epoch is written once
                known.add(row["index"])
                shown = {"id": display_id(row["id"])} if "id" in row else {}  # 2, not 2.0 (pandas' float ids)
                new.append({**row, **shown, "step": int(step), "during": "training"})
        self.replaced_rows.extend(new)
        self._append(new)
        if self.logs:
            logger.warning("replaced %d row(s) that could not be used (%s); %d of %d rows seen so far",
                           len(replaced_rows), format_counts(Counter(row["reason"] for row in replaced_rows)),
                           sum(self.replaced.values()), self.rows_seen)

    def skip_step(self, step: int) -> None:
        """Count the rows of `step` (the last one `record` counted) as not trained on: the step was skipped for a
        non-finite value. They were counted as seen only, and the run's lines did not say that any went unused."""
        if self._last_step is not None and self._last_step[0] == step:
            self.rows_in_skipped_steps += self._last_step[1]

    def check_training(self) -> None:
        """Stop the run once more rows could not be used than the run accepts."""
        replaced = sum(self.replaced.values())
        over = replaced > 0 if self.strict else rate_exceeds_reject_budget(replaced, self.rows_seen,
                                                                              self.max_reject_fraction)
        if over:
            allows = self._budget_words() if self.strict else (
                f"data.max_reject_fraction={self.max_reject_fraction:g} of them allows (over it with 99.9% "
                "confidence, and more than one); raise it to go on regardless")
            raise RejectedRowsError(
                f"{replaced:,} of the {self.rows_seen:,} training rows seen so far could not be used "
                f"({format_counts(self.replaced)}), more than {allows}; the rows: {self.rejects_path}")

    def _over_budget(self, bad: int, seen: int) -> bool:
        return bad > 0 if self.strict else exceeds_reject_budget(bad, seen, self.max_reject_fraction)

    def _budget_words(self) -> str:
        if self.strict:
            return "none (data.strict=true)"
        return (f"data.max_reject_fraction={self.max_reject_fraction:g} of them (and more than one) allows; raise "
                "it to go on regardless")

    def _append(self, rows: list[dict[str, Any]]) -> None:
        if not rows or not self.writes or self.rejects_path is None:
            return
        self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejects_path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    # ---- checkpoints ----
    def state_dict(self) -> dict[str, Any]:
        """The training counts, as saved in a checkpoint."""
        return {"rows_seen": self.rows_seen, "replaced": dict(self.replaced), "replaced_rows": list(self.replaced_rows),
                "truncated_in_training": self.truncated_in_training,
                "rows_in_skipped_steps": self.rows_in_skipped_steps}

    def save(self, folder: str | Path) -> None:
        (Path(folder) / REPORT_FILE).write_text(json.dumps(self.state_dict(), indent=1, ensure_ascii=False) + "\n",
                                                encoding="utf-8")

    def restore(self, checkpoint: str | Path) -> None:
        """Continue from a checkpoint's counts, and put its replaced rows back into the rejects file (which the
        start of this run rewrote with the validation's rejects)."""
        file = Path(checkpoint) / REPORT_FILE
        if not file.is_file():  # a checkpoint from before the report existed: counts restart at zero
            return
        state = json.loads(file.read_text(encoding="utf-8"))
        self.rows_seen = int(state["rows_seen"])
        self.replaced = {**dict.fromkeys(RUN_REJECT_REASONS, 0), **state["replaced"]}
        self.replaced_rows = list(state["replaced_rows"])
        self._known = None
        self.truncated_in_training = int(state.get("truncated_in_training", 0))
        self.rows_in_skipped_steps = int(state.get("rows_in_skipped_steps", 0))
        self._append(self.replaced_rows)

    # ---- the end ----
    def final_message(self) -> str:
        """One line: the start's counts and the training's."""
        cut = f", {self.truncated_in_training:,} cut to fit" if self.truncated_in_training else ""
        skipped = (f", {self.rows_in_skipped_steps:,} in steps skipped for a non-finite value (not trained on)"
                   if self.rows_in_skipped_steps else "")
        return (f"{self.start_message()}; in training {sum(self.replaced.values()):,} of {self.rows_seen:,} rows "
                f"seen could not be used and were replaced ({format_counts(self.replaced)}){cut}{skipped}")

    def log_final(self) -> None:
        """Say `final_message` (a warning when any row was rejected or replaced)."""
        if self.logs:
            (logger.warning if sum(self.replaced.values()) or sum(self.rejected.values()) or self.rows_in_skipped_steps
             else logger.info)(
                "%s", self.final_message())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows_read": self.rows_read, "rejected": self.rejected,
                "truncated": self.truncated, "truncated_examples": self.truncated_examples,
                "notices": self.notices, **self.state_dict(),
                "rejects_file": None if self.rejects_path is None else str(self.rejects_path)}

    def write(self, folder: str | Path) -> None:
        """`data_report.json` in the output folder (main process)."""
        if self.writes:
            (Path(folder) / REPORT_FILE).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")


def epoch_repeats_line(epoch_rows: int | None, rows: int, processes: int, per_device: int,
                       grouped: bool = False) -> str | None:
    """The line saying that each epoch trains some rows twice, or None where none is: on several processes accelerate
    fills an epoch's last round of `processes x per_device` rows with the epoch's first rows (`epoch_rows`, the run
    record's count, repeats included); with `grouped` (`group_by_modality_length`, `sampler.grouped_epoch_rows`) the
    sampler fills each modality's last round with its own rows, on one process too. The rows trained and `rows_seen`
    then exceed the rows kept every epoch, which no line said."""
    repeats = (epoch_rows or rows) - rows
    if repeats <= 0:
        return None
    how = ("group_by_modality_length fills each modality's last round of "
           f"{processes} process(es) x {per_device} rows with {repeats:,} of its own rows again, so that no batch is "
           "short or mixed" if grouped else
           f"its last round of {processes} processes x {per_device} rows repeats the epoch's first {repeats:,} (as "
           "accelerate gives every process full batches)")
    return f"each epoch trains {epoch_rows:,} rows for the {rows:,} kept: {how}; the data report counts them as seen"


def refused_start_only(folder: str | Path, found: list[str]) -> bool:
    """Whether the run outputs `found` in `folder` (a folder of no run record) are only the rejects file a run refused
    for its rows left there, as it wrote it: the corrected command may write over it (the newcomer's rerun after a
    wrong image root was refused as a folder holding files the trainer did not write)."""
    folder = Path(folder)
    if found != [REJECTS_FILE]:
        return False
    try:
        written = json.loads((folder / REFUSED_START_FILE).read_text(encoding="utf-8"))
        return (written["file"] == REJECTS_FILE and not (folder / REJECTS_FILE).is_symlink()
                and file_digest(folder / REJECTS_FILE) == (written["size"], written["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


__all__ = ["REFUSED_START_FILE", "REJECTS_FILE", "REPORT_FILE", "RUN_REJECT_REASONS", "DataReport", "epoch_repeats_line",
           "refused_start_only"]
