"""What makes a model folder unloadable, said in one line: `ModelFolderError` (the folder's fault, not the code's),
`reading_weights` (what reading broken weight files raises, turned into one), and `folder_processor` (a processor
that is there but does not load). Shared by the loader (`modeling_croc.loading`) and the readers of the foreign
layouts (`modeling_croc.convert`), which the loader imports: so they live below both."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path


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
    safetensors' own error (a file cut short, a header that is not JSON, a file that is not safetensors), an
    index that is not JSON, an absent shard or an unreadable file (`OSError`). Anything else (a bug) goes through."""
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
    except OSError as error:  # an absent shard (FileNotFoundError), a weights file that is a folder, unreadable
        raise ModelFolderError(folder, f"its weights cannot be read: {' '.join(str(error).split())}") from None


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


__all__ = ["PROCESSOR_FILES", "ModelFolderError", "folder_processor", "reading_weights"]
