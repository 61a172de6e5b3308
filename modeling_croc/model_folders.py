"""What makes a model folder unloadable, said in one line: `ModelFolderError` (the folder's fault, not the code's),
`reading_weights` (what reading broken weight files raises, turned into one), `checked_from_pretrained` (a load that
refuses the weights its config.json does not describe) and `folder_processor` (a processor that is there but does
not load). Shared by every command that loads a folder (training, conversion, export, chat, LoRA merge) and by the
readers of the foreign layouts (`modeling_croc.convert`), which the loader imports: so they live below both."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import pickle
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded as its own config.json describes it: weights missing, with no place in
    the model or of another shape, a weights file or index that is not what it claims (cut short, not safetensors,
    not JSON), a shard the index names that is absent. The folder's fault, not the code's: callers that speak to a
    user (`trainer.model_loading`) say it in one line, naming the option that gave `folder`."""

    def __init__(self, folder: str | Path, problem: str) -> None:
        self.folder = Path(folder)
        self.problem = problem
        super().__init__(f"{folder}: {problem}")


@contextlib.contextmanager
def reading_weights(folder: str | Path) -> Iterator[None]:
    """Turn what reading `folder`'s weight files raises when the files are broken into a `ModelFolderError`:
    safetensors' own error (a file cut short, a header that is not JSON, a file that is not safetensors), torch's
    for a `pytorch_model.bin` (cut short, empty, a web page: its text would advise `weights_only=False`), an index
    that is not JSON, an absent shard or an unreadable file (`OSError`). Anything else (a bug) goes through."""
    from safetensors import SafetensorError

    try:
        yield
    except ModelFolderError:
        raise
    except SafetensorError as error:
        raise ModelFolderError(folder, f"a weights file is not valid safetensors ({error}): cut short or "
                                       "corrupt; copy or download it again") from None
    except json.JSONDecodeError as error:
        raise ModelFolderError(folder, f"a weights index is not valid JSON ({error})") from None
    except (pickle.UnpicklingError, EOFError) as error:  # a pytorch_model.bin that is a web page, empty
        raise ModelFolderError(folder, f"a weights file is not a PyTorch checkpoint ({type(error).__name__}): "
                                       "corrupt, or not weights at all; copy or download it again") from None
    except RuntimeError as error:
        if "PytorchStreamReader" not in str(error):  # torch's reader of a pytorch_model.bin cut short; else a bug
            raise
        raise ModelFolderError(folder, f"a weights file is not a valid PyTorch checkpoint "
                                       f"({' '.join(str(error).split())[:200]}): cut short or corrupt; copy or "
                                       "download it again") from None
    except OSError as error:  # an absent shard (FileNotFoundError), a weights file that is a folder, unreadable
        raise ModelFolderError(folder, f"its weights cannot be read: {' '.join(str(error).split())}") from None


def weight_gaps(model: Any, info: dict, *, may_lack: tuple[str, ...] = (), may_resize: tuple[str, ...] = ()
                ) -> list[str]:
    """`from_pretrained`'s loading `info` as what does not fit `model`, one phrase per kind (at most 8 names each),
    none when everything fits: weights missing, of the wrong shape (name, checkpoint shape, model shape), with no
    place in the model. `may_lack`: name prefixes that may be missing or left over (Croc's pool and VTR head, built
    only with their objectives); `may_resize`: prefixes whose shape may change (a resized pool). What the model's
    class leaves out of every load (`_keys_to_ignore_on_load_unexpected`: Qwen3.5's `mtp.*` layers) is no gap."""
    ignored = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
    missing = sorted(name for name in info.get("missing_keys", []) if not name.startswith(may_lack))
    mismatched = sorted((entry if isinstance(entry, tuple) else (entry,)) for entry in info.get("mismatched_keys", [])
                        if not str(entry[0] if isinstance(entry, tuple) else entry).startswith(may_resize))
    unexpected = sorted(name for name in info.get("unexpected_keys", []) if not name.startswith(may_lack)
                        and not any(re.search(pattern, name) for pattern in ignored))
    shapes = [" ".join(str(part) for part in entry) for entry in mismatched]
    return [f"{len(names)} weight{'s' if len(names) != 1 else ''} {what}: {shown[:8]}" for names, shown, what in (
        (missing, missing, "missing"),
        (mismatched, shapes, "of the wrong shape for its config.json (name, checkpoint, model)"),
        (unexpected, unexpected, "with no place in the model its config.json describes")) if names]


def checked_from_pretrained(model_class: Any, folder: str | Path, *, may_lack: tuple[str, ...] = (),
                            may_resize: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """`model_class.from_pretrained(folder, **kwargs)` refusing, as one `ModelFolderError`, what `from_pretrained`
    alone lets through or reports in many lines: a weight missing (left random, the model would run as if trained), one
    of another shape (transformers' multi-line RuntimeError), one with no place in the model its config.json
    describes (a config edited to fewer layers: the rest dropped unread), and a broken weights file
    (`reading_weights`). `may_lack`, `may_resize`: as `weight_gaps`."""
    with reading_weights(folder):
        model, info = model_class.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **kwargs)
    problems = weight_gaps(model, info, may_lack=may_lack, may_resize=may_resize)
    if problems:
        raise ModelFolderError(folder, f"{'; '.join(problems)}; its config.json does not describe these weights (was "
                                       "it edited after saving?), or it is no checkpoint of this architecture")
    return model


# The longest file or folder name (one path component) the usual file systems take, in bytes (NAME_MAX).
NAME_MAX = 255


def overlong_name(path: str | Path) -> str | None:
    """Why `path` cannot name a file or folder, in a few words: a component over `NAME_MAX` bytes (every look at it,
    `Path.exists()` among them, raises the system's "File name too long"); None when none is."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            return (f"the name {part[:40]}... is {len(os.fsencode(part))} bytes long, over the {NAME_MAX} a file or "
                    "folder name may have")
    return None


def nothing_at(value: str | Path) -> str:
    """`nothing at ABSOLUTE_PATH` for a model folder that is not there, and, when the folder above it is (a local
    path mistyped, or a stage not run yet), the closest folder there or what it holds: `tiny_out/stag2` was answered
    with advice to download `tiny_out/stag2` from the Hub."""
    path = Path(value).expanduser()
    said = f"nothing at {path.absolute()}"
    parent = path.parent
    if str(parent) == "." or not parent.is_dir():  # a bare name: most often a Hub id; the working folder is no hint
        return said
    try:
        names = sorted(entry.name for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError:
        return said
    close = difflib.get_close_matches(path.name, names, n=1)
    if close:
        return f"{said}; did you mean {parent / close[0]}?"
    if names:
        return f"{said}; {parent} holds {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
    return said


def model_folder_problem(folder: str | Path) -> str | None:
    """Why the local folder `folder` is no model folder, in one line, or None when it has a config.json. A LoRA run's
    adapters (`adapter_config.json` and its weights, no config.json) are said to be that, with the command that
    merges them into a model: every command given one (conversion, chat, training) otherwise said "it has no
    config.json", or transformers' "Unrecognized model ... Should have a `model_type` key", and never what to run."""
    path = Path(folder)
    if (path / "config.json").is_file():
        return None
    if (path / "adapter_config.json").is_file():
        return (f"{folder} is a LoRA adapter folder (adapter_config.json, no config.json), not a model: merge it into "
                f"one with `python -m trainer.merge_lora {shlex.quote(str(folder))} --out MERGED [--base BASE]` "
                "(BASE: the model it was trained on, when adapter_config.json's is not here) and use MERGED")
    return f"{folder} is not a model folder: it has no config.json"


def hub_model_problem(value: str) -> str | None:
    """Why the Hub id `value` (no local folder) cannot be had here, in a few words, or None when its config.json
    is at hand (the cache only, offline): offline and not cached, no network, no such or a gated repository, no
    model. Commands say it in one line before they load anything, rather than huggingface_hub's "couldn't connect"
    for what is most often a local folder not made yet."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        hf_hub_download(value, "config.json")
        return None
    except GatedRepoError:
        return "a gated Hub repository this machine's token may not read (accept its terms on the Hub, `hf auth login`)"
    except RepositoryNotFoundError:
        return "no Hub repository of that name (or a private one this machine's token cannot read)"
    except LocalEntryNotFoundError:
        return ("not in the Hub cache, and the Hub is " + ("switched off (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE
                else "unreachable") + f": download it where there is network (`hf download {value}`) or point to a "
                "local folder")
    except EntryNotFoundError:  # after its subclass LocalEntryNotFoundError
        return "a Hub repository without a config.json, not a model"
    except Exception as error:  # noqa: BLE001 (anything else the Hub client raises: one line, with its cause)
        return f"not readable from the Hub ({type(error).__name__}: {' '.join(str(error).split())[:200]})"


def check_weight_files(folder: str | Path) -> None:
    """Open every safetensors file of `folder` (its header and size, not its tensors): a file cut short or not
    safetensors is a `ModelFolderError` here, before a command reads anything else of it (a fingerprint of a cut
    file named it 'other weights')."""
    from safetensors import safe_open

    with reading_weights(folder):
        for path in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(path), framework="pt"):
                pass


# The files that say a folder holds a processor (its image processor's or its processor's config): a folder with
# neither is weights-only, or holds a tokenizer alone (a llava folder whose image processor comes from its tower);
# one with either whose processor does not load has broken or missing files.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def folder_processor(source: str | Path, load, errors: tuple[type[BaseException], ...]):
    """`load(source)`, or None for a folder without a processor (none of `PROCESSOR_FILES`). A folder that holds one
    but raises one of `errors` (a tokenizer.json or processor_config.json that is not JSON, the tokenizer files gone)
    is a `ModelFolderError` naming the error: saying it has no processor sent users looking for files that are
    there."""
    try:
        return load(source)
    except errors as error:
        present = [name for name in PROCESSOR_FILES if (Path(source) / name).is_file()]
        if not present or isinstance(error, ImportError):  # ImportError: a package the processor needs is absent
            return None
        raise ModelFolderError(source, f"its processor ({', '.join(present)} and the tokenizer) does not load: "
                                       f"{type(error).__name__}: {' '.join(str(error).split())[:300]}") from None


__all__ = [
    "PROCESSOR_FILES",
    "ModelFolderError",
    "check_weight_files",
    "hub_model_problem",
    "model_folder_problem",
    "nothing_at",
    "overlong_name",
    "NAME_MAX",
    "checked_from_pretrained",
    "weight_gaps",
    "folder_processor",
    "reading_weights",
]
