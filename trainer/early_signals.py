"""Preemption signals that arrive before the run's own handler (`trainer.run_control.StopSignals`) is installed.

`python -m trainer.train` spends its first seconds importing torch and transformers and checking the config (ten on a
loaded node), and its last ones tearing the process group down. A SIGTERM there, from Slurm or Kubernetes, used to end
the process with the default action (status 143), which a job script that requeues on `PREEMPTED_EXIT_CODE` takes for
a failure. `hold_preemption_signals` is the first thing the command runs: it records such a signal and does nothing
else; `StopSignals` adopts it when it takes over (the run then stops before its first step, with nothing to save, as
for a signal received while the model loads), and when it gives the handlers back, after the run is over, the
default actions come back (a process stuck in its teardown can still be ended). A signal the run's config does not name as a preemption signal is
delivered again with its default action once the config is read, as if it had just arrived. Ctrl-C outside the run's
handler ends the command at once with status 130 and one line, not an import's traceback.

Imports nothing but the standard library: it must be in place before the heavy imports start.
"""

from __future__ import annotations

import signal
import sys

# What a scheduler or a user sends to ask a process to end (Slurm's --signal, a CPU-time limit, a closed terminal).
# Others mean something else (SIGCHLD: a child ended; SIGSEGV, SIGBUS, SIGFPE: a fault a flag-only handler would
# return into forever) and are refused as preemption signals.
PREEMPTION_SIGNAL_CHOICES: tuple[str, ...] = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2",
                                              "SIGXCPU")

_received: signal.Signals | None = None


def _record(number: int, frame) -> None:
    global _received
    if _received is None:
        _received = signal.Signals(number)


def _interrupt(number: int, frame) -> None:
    # Ctrl-C while no step can be in progress: the command ends at once, in one line, not with the traceback of
    # whichever import it was in.
    print("interrupted (Ctrl-C) while the command started or ended; no training step was in progress",
          file=sys.stderr)
    raise SystemExit(130)


def hold_preemption_signals() -> None:
    """Record (and otherwise ignore) every signal that may be a preemption signal; Ctrl-C ends the command at once,
    in one line. Call on the main thread, before anything slow."""
    for name in PREEMPTION_SIGNAL_CHOICES:
        signal.signal(signal.Signals[name], _interrupt if name == "SIGINT" else _record)


def release_held_signals(kept: tuple[signal.Signals, ...]) -> None:
    """Give the signals still held here, but for `kept` (the run's own preemption signals), their default action
    back: held past the start, a Ctrl-\\ (SIGQUIT) or a closed terminal (SIGHUP) no preemption setting names would
    have been recorded and ignored for the whole run."""
    for name in PREEMPTION_SIGNAL_CHOICES:
        number = signal.Signals[name]
        if number not in kept and signal.getsignal(number) in (_record, _interrupt):
            signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)


def after_the_run(handler):
    """The handler a signal gets back when the run's own lets go of it: its default action where it was held from
    the start (a late SIGTERM ends the command as it would have ended any), else `handler`."""
    if handler is _record:
        return signal.SIG_DFL
    return signal.default_int_handler if handler is _interrupt else handler


def take_held_signal() -> signal.Signals | None:
    """The first signal recorded since `hold_preemption_signals` (None if none, or if it was not installed), forgotten
    once taken."""
    global _received
    received, _received = _received, None
    return received


def deliver_with_default_action(number: signal.Signals) -> None:
    """Deliver `number` to this process as if no handler had held it: what the signal does by default (ends the
    process, for every one `hold_preemption_signals` holds)."""
    signal.signal(number, signal.SIG_DFL)
    signal.raise_signal(number)
