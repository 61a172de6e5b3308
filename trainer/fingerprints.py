"""Fingerprints of what a run reads, as its run record (`trainer.run_record`) holds them: the training rows, the
weight files of the model source, and what the run reads from it besides config.json and the weights (the tokenizer,
the processors' settings, the chat template). Each is read from what the run loads, not from file names or times: a
copy of a folder, a Hub id's cached snapshot or a touched file give the same fingerprint, other contents another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from transformers.trainer import TRAINING_ARGS_NAME

# What the run reads from its model source besides config.json and the weights (`processor_fingerprint`). A resume
# loads it from `model.name_or_path` again, not from the checkpoint: a tokenizer or image processor edited (or another
# folder named) since would go on, unsaid, on another loss curve. It may be accepted: the user may mean it (a fixed
# tokenizer file), and the new files then serve every step from the resumed one on.
PROCESSOR = "processor"


def canonical(value: Any) -> Any:
    """JSON-ready, order-independent form of a config value (tuples as lists, dict keys sorted)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def short_digest(value: Any) -> str:
    """16 hex digits of the SHA-256 of `value` as sorted JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def rows_fingerprint(rows) -> dict[str, Any]:
    """The training rows as the record holds them: their count and a hash of their contents in order (id, image
    path, turns; an embedded image by its file name and size), so a resume on edited rows is refused even when the
    ids are the same (a `datasets` Dataset, read in Arrow batches, or a sequence of row dicts)."""
    digest = hashlib.sha256()

    def image_key(image: Any) -> Any:
        if isinstance(image, dict):  # an undecoded datasets.Image value
            return [image.get("path"), len(image.get("bytes") or b"")]
        return image

    if hasattr(rows, "select_columns"):
        from datasets import Image

        columns = [name for name in ("id", "image", "conversations") if name in rows.column_names]
        view = rows.select_columns(columns)
        if isinstance(view.features.get("image"), Image):
            view = view.cast_column("image", Image(decode=False))
        for batch in view.iter(batch_size=10_000):
            images = [image_key(image) for image in batch.get("image", [None] * len(batch["id"]))]
            digest.update(json.dumps([batch["id"], images, batch.get("conversations")], sort_keys=True,
                                     default=str).encode("utf-8"))
    else:
        for row in rows:
            digest.update(json.dumps([row.get("id"), image_key(row.get("image")), row.get("conversations")],
                                     sort_keys=True, default=str).encode("utf-8"))
    return {"count": len(rows), "content_sha256": digest.hexdigest()[:16]}


# Pieces read from each weight file for its fingerprint: enough to tell two trainings' weights apart (they differ all
# through), 1 MiB a file however large, so a resume of a 70B model is not preceded by reading it whole.
_WEIGHT_PIECES = 16
_WEIGHT_PIECE_BYTES = 1 << 16


def _weights_folder(name_or_path: str) -> Path | None:
    """The folder the weights of `name_or_path` load from: the local folder, or a Hub id's snapshot in the cache (no
    download: a first run records it before the weights are fetched, and is then not compared on it)."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import try_to_load_from_cache

    from modeling_croc.provenance import is_hub_id

    cached = try_to_load_from_cache(name_or_path, "config.json") if is_hub_id(name_or_path) else None
    return Path(cached).parent if isinstance(cached, str) else None


def weights_fingerprint(name_or_path: str | None) -> str | None:
    """The weight files `name_or_path` loads (its `*.safetensors`, or its `*.bin` but `training_args.bin` where it
    has none, as transformers chooses) by name, size and pieces spread over each (`_WEIGHT_PIECES`); None where no
    local folder or cached snapshot holds any. A copy of the folder elsewhere, a `--local-dir` download and the cached
    snapshot of the same Hub repository have the same fingerprint; other weights under the same config.json do not."""
    folder = _weights_folder(name_or_path) if name_or_path else None
    if folder is None:
        return None
    # `training_args.bin` is no weight file: the pickled arguments of the run that saved the folder, rewritten by a
    # rerun of that finished run (to push it), which left the weights as they were and refused the LoRA resume.
    files = {suffix: sorted(path for path in folder.iterdir() if path.suffix == suffix
                            and path.name != TRAINING_ARGS_NAME and path.is_file()) for suffix in (".safetensors", ".bin")}
    return _files_fingerprint(files[".safetensors"] or files[".bin"])


def earlier_weights_fingerprints(name_or_path: str) -> set[str]:
    """The fingerprints earlier versions of `weights_fingerprint` gave the local folder `name_or_path`: over all its
    `*.safetensors` and `*.bin`, then all but `training_args.bin`. A run record keeps the value its version computed,
    so an older LoRA run's record names its very base by one of these (they read local folders only)."""
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return set()
    files = sorted(path for path in folder.iterdir() if path.suffix in (".safetensors", ".bin") and path.is_file())
    return {found for found in (_files_fingerprint(files),
                                _files_fingerprint([path for path in files if path.name != TRAINING_ARGS_NAME]))
            if found}


def _files_fingerprint(files: list[Path]) -> str | None:
    """`files` by name, size and `_WEIGHT_PIECES` pieces spread over each; None for no file."""
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as file:
            for piece in range(_WEIGHT_PIECES):
                file.seek(max(0, size - _WEIGHT_PIECE_BYTES) * piece // max(1, _WEIGHT_PIECES - 1))
                digest.update(file.read(_WEIGHT_PIECE_BYTES))
    return digest.hexdigest()[:16]


# Processor entries that name where a file was read from or which code to import, not what it computes: the same
# files in another folder, a Hub id's snapshot or a copy of it are the same processor.
_VOLATILE_PROCESSOR_KEYS = ("auto_map", "_name_or_path", "name_or_path", "transformers_version", "processor_class",
                            "_processor_class", "chat_template")
# The parts of `processor_fingerprint` a refusal names, with the files of the model source they are read from.
_PROCESSOR_PARTS = {
    "tokenizer_vocabulary": "the tokenizer's vocabulary, merges, normaliser or token ids (tokenizer.json, or the "
                            "vocabulary files)",
    "tokenizer_special_tokens": "the tokenizer's added or special tokens (tokenizer_config.json, "
                                "special_tokens_map.json, added_tokens.json)",
    "tokenizer_chat_template": "the tokenizer's chat template (chat_template.jinja, tokenizer_config.json)",
    "chat_template": "the processor's chat template (chat_template.jinja, chat_template.json)",
    "class": "the processor's class (processor_config.json)",
}


def _tokenizer_parts(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer as the length check fingerprints it (`trainer.data._tokenizer_fingerprint`, the one digest both
    compare), and its pieces by digest, so that a refusal can say which one changed. A tokenizer without a
    `tokenizers` backend, which that digest leaves out, is fingerprinted here by its vocabulary."""
    from .data import _tokenizer_fingerprint

    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    added = {str(index): str(token) for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    special = [added, tokenizer.special_tokens_map, getattr(tokenizer, "split_special_tokens", None)]
    chat_template = getattr(tokenizer, "chat_template", None)
    whole = _tokenizer_fingerprint(tokenizer) or short_digest([type(tokenizer).__qualname__, vocabulary, *special,
                                                           chat_template])
    return {"tokenizer": whole, "tokenizer_vocabulary": short_digest(vocabulary),
            "tokenizer_special_tokens": short_digest(special), "tokenizer_chat_template": short_digest(chat_template)}


def processor_fingerprint(processor: Any) -> dict[str, Any] | None:
    """What the run reads from its model source besides config.json and the weights, recorded under `PROCESSOR`: the
    tokenizer (`_tokenizer_parts`), the processor's and its image (and video) processor's settings as values
    (`to_dict`: image mean and std, sizes, patch size, image token ...; a refusal shows them), its chat template and
    class. Read from the loaded objects, not the files: a copy of the folder, a relative path to it, a Hub id's
    cached snapshot or files only touched give the same; a file rewritten with other values does not. None without
    a processor."""
    if processor is None:
        return None
    tokenizer = getattr(processor, "tokenizer", None)
    try:
        settings = processor.to_dict()
    except (AttributeError, TypeError, ValueError):  # not a ProcessorMixin: its image processor alone
        image_processor = getattr(processor, "image_processor", None)
        settings = {"image_processor": image_processor.to_dict()} if image_processor is not None else {}
    settings.pop("tokenizer", None)
    return canonical({
        "class": type(processor).__qualname__,
        **(_tokenizer_parts(tokenizer) if tokenizer is not None else {}),
        "chat_template": short_digest(getattr(processor, "chat_template", None)),
        "settings": _without_keys(settings, _VOLATILE_PROCESSOR_KEYS),
    })


def _without_keys(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {key: _without_keys(item, keys) for key, item in value.items() if key not in keys}
    return value


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested settings dict as `{"image_processor.image_mean": [...], ...}`, what a refusal names."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def describe_processor_change(before: Any, now: Any) -> str:
    """What differs between two `processor_fingerprint`s, by name: the settings with their values, the tokenizer's
    and chat template's parts with the files they come from."""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return f"{PROCESSOR} {before!r} -> {now!r}"
    said = [what for part, what in _PROCESSOR_PARTS.items() if before.get(part) != now.get(part)]
    if before.get("tokenizer") != now.get("tokenizer") and not any(part.startswith("tokenizer_") and
                                                                    before.get(part) != now.get(part)
                                                                    for part in _PROCESSOR_PARTS):
        said.append("the tokenizer's class or settings (tokenizer_config.json)")
    old, new = _flat(before.get("settings") or {}), _flat(now.get("settings") or {})
    changed = sorted(key for key in {*old, *new} if old.get(key) != new.get(key))
    if changed:
        shown = ", ".join(f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        said.append(f"the processor's settings (processor_config.json, preprocessor_config.json): {shown}{more}")
    return f"{PROCESSOR}: " + "; ".join(said or ["its files"])


__all__ = ["PROCESSOR", "canonical", "describe_processor_change", "earlier_weights_fingerprints", "processor_fingerprint",
           "rows_fingerprint", "short_digest", "weights_fingerprint"]
