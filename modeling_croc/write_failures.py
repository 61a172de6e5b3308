"""What a failed file write looks like, whichever writer raised it, for the one-line messages of every command that
writes a folder (the trainer's checkpoints and final folder, convert, merge_lora, croc_testing, the data recipes).

A full disk, a quota or a read-only folder reaches Python as an `OSError` from Python's own writes, but as
safetensors' `SafetensorError`, as a `RuntimeError` of torch.save's zip writer (which does not say why), and as a
plain `Exception("No space left on device (os error 28)")` from tokenizers (a Rust I/O error through its binding).
"""

from __future__ import annotations

import errno
import re

from safetensors import SafetensorError

# The OSErrors of a write that failed for want of room or rights, as against a file that is not there or not readable.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_TORCH_WRITER_FAILURE = ("PytorchStreamWriter", "inline_container")
_RUST_IO_ERROR = re.compile(r"\(os error \d+\)$")


def is_write_failure(error: BaseException) -> bool:
    """Whether `error`, raised by a step that only writes, is a file write that failed: any OSError, safetensors' own
    error, torch.save's zip writer's, or tokenizers' (a plain Exception ending in "(os error N)")."""
    if isinstance(error, (OSError, SafetensorError)):
        return True
    if type(error) is Exception and _RUST_IO_ERROR.search(str(error).strip()):
        return True
    return isinstance(error, RuntimeError) and any(part in str(error) for part in _TORCH_WRITER_FAILURE)


def is_out_of_room(error: BaseException) -> bool:
    """Whether `error`, raised by a step that reads and writes (a conversion), is a write that failed for want of
    room or rights (`NO_ROOM_ERRNOS`, or a writer's own error that is not about reading a file)."""
    if isinstance(error, OSError):
        return error.errno in NO_ROOM_ERRNOS
    return is_write_failure(error) and "deserializ" not in str(error).lower()


def write_failure_reason(error: BaseException) -> str:
    """A few words on a failed write (`is_write_failure`), for a one-line message: the system's reason and the file."""
    if getattr(error, "strerror", None):
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        return f"{error.strerror}{where}"
    text = " ".join(str(error).split())
    if isinstance(error, RuntimeError):  # torch's writer does not say why: the usual causes
        return f"a file write failed, the disk is full or a file-size limit was reached ({text})"
    return text
