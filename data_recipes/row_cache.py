"""A LLaVA-format JSON file read once into an Arrow file of the row schema, then memory-mapped by every reader.

Parsing `llava_v1_5_mix665k.json` (1 GB) into Python objects takes about half a minute and several GB at peak, and a
run did it in every process (8 per node on 8 GPUs) and again on every resume. The first reader writes the normalised
rows to `<HF_DATASETS_CACHE>/croc_rows/<key>.arrow`, as `datasets` keeps its own builders' output there; every later
read of the same file is a memory map of that file: no parse, and the rows live in the page cache, shared by the
processes of a node.

The key is the SHA-256 of the file's bytes (not its name or modification time, which a copy keeps or an edit in place
may not change), the reader's arguments and a digest of the code that normalises rows, so an edited file or a changed
reader never meets an old Arrow file. The file appears whole or not at all (written beside, flushed, then renamed);
readers that cannot write there (a read-only home, a full disk) read the JSON themselves, as before, and say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, DatasetInfo
from datasets import config as datasets_config

from .schema import READ_FEATURES, llava_json_batches, load_llava_json

logger = logging.getLogger(__name__)

# The modules whose code decides the rows read from a file: an edit to either makes a new key.
_READER_CODE = ("io.py", "schema.py", "row_cache.py")


def rows_cache_dir() -> Path | None:
    """Where the Arrow files are kept: `croc_rows` under `datasets`' cache (`HF_DATASETS_CACHE`, read now, so a
    test or a caller may move it); None where `datasets.disable_caching()` turned its caches off."""
    from datasets import is_caching_enabled

    if not is_caching_enabled():
        return None
    return Path(datasets_config.HF_DATASETS_CACHE).expanduser() / "croc_rows"


def rows_cache_key(path: str | Path, *, source: str = "llava_json", limit: int | None = None) -> str:
    """The name of `path`'s Arrow file: its bytes, the reader's arguments and the reader's code (one pass over the
    file: about 0.6 s a GB)."""
    reader = hashlib.sha256()
    here = Path(__file__).parent
    for name in _READER_CODE:
        reader.update((here / name).read_bytes())
    # The suffix is an argument too: `read_records` reads `.parquet` as Parquet, and a lone object as one row only in
    # a `.jsonl` file (a `.json` one is refused), so the same bytes under another suffix are other rows or an error.
    reader.update(f"{source}\0{limit}\0{Path(path).suffix}\0pyarrow {pa.__version__.split('.')[0]}".encode())
    return f"{_content_digest(path)}-{reader.hexdigest()[:16]}"


def _content_digest(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:32]


def cached_llava_json(path: str | Path, cache_dir: Path | None = None, *, source: str = "llava_json",
                      limit: int | None = None) -> Dataset:
    """`load_llava_json(path, source=, limit=)`, memory-mapped from its Arrow file in `cache_dir` (default
    :func:`rows_cache_dir`), written first when there is none. Where the file cannot be written or read back, the rows
    are read into memory as `load_llava_json` does, with one warning line."""
    cache_dir = cache_dir or rows_cache_dir()
    if cache_dir is None:
        return load_llava_json(path, source=source, limit=limit)
    arrow_file = cache_dir / f"{rows_cache_key(path, source=source, limit=limit)}.arrow"
    _remove_abandoned_partials(arrow_file)
    damaged = False
    if arrow_file.is_file():
        try:
            return _mapped(arrow_file)
        except (OSError, pa.ArrowException, ValueError) as error:
            logger.warning("rows of %s: the cached %s does not read (%s); reading the file again", path, arrow_file,
                           error)
            damaged = True
    try:
        _write(path, arrow_file, source=source, limit=limit, replace=damaged)
        return _mapped(arrow_file)
    except OSError as error:
        logger.warning("rows of %s: cannot keep them in %s (%s); this process reads the file itself, in memory",
                       path, cache_dir, error.strerror or error)
        return load_llava_json(path, source=source, limit=limit)


def _mapped(arrow_file: Path) -> Dataset:
    dataset = Dataset.from_file(str(arrow_file), info=DatasetInfo(features=READ_FEATURES.copy()))
    if dataset.features != READ_FEATURES:
        raise ValueError(f"its columns are {list(dataset.features)}, not the row schema's")
    return dataset


def _write(path: str | Path, arrow_file: Path, *, source: str, limit: int | None, replace: bool = False) -> None:
    """Write the rows of `path` to `arrow_file` (an Arrow stream, the format `datasets` maps), whole or not at all:
    a reader never maps a file another process or a crash left half written. `replace`: `arrow_file` is a damaged
    one, to be replaced; otherwise one another writer published meanwhile is kept."""
    arrow_file.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=arrow_file.parent, prefix=f".{arrow_file.stem}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as sink:
            # Held until the file is published: a partial file no process holds was left by a killed writer.
            with contextlib.suppress(OSError):  # a file system without locks (Lustre without -o flock): none swept
                fcntl.flock(sink.fileno(), fcntl.LOCK_EX)
            with pa.ipc.new_stream(sink, READ_FEATURES.arrow_schema) as writer:
                for batch in llava_json_batches(path, source=source, limit=limit):
                    writer.write_batch(batch)
            sink.flush()
            # mkstemp made it private; the cache is shared like `datasets`' own files: the umask decides.
            umask = os.umask(0o022)
            os.umask(umask)
            os.fchmod(sink.fileno(), 0o666 & ~umask)
            os.fsync(sink.fileno())
            # The key hashed the bytes before this parse read them: a file replaced or rewritten in between gave
            # rows of other bytes, which must not be kept under the old bytes' name (a copy of those would map them).
            if _content_digest(path) != arrow_file.stem.split("-")[0]:
                raise OSError(f"{path} changed while it was read")
            if replace:
                os.replace(partial, arrow_file)
            else:
                _publish_new(partial, arrow_file)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _publish_new(partial: str, arrow_file: Path) -> None:
    """Name `partial` `arrow_file` unless another writer (another node, on a shared file system) did first. Its file
    is then kept: its processes may be mapping it already, and a rename over it unlinks it under them (on NFS their
    next page read fails with a stale file handle, a SIGBUS). A hard link does not replace; a file system without
    hard links gets the rename, after a look for the other writer's file."""
    try:
        os.link(partial, arrow_file)
    except FileExistsError:
        pass
    except OSError:
        if not arrow_file.exists():
            os.replace(partial, arrow_file)
            return
    os.unlink(partial)


def _remove_abandoned_partials(arrow_file: Path) -> None:
    """Delete the partial files of `arrow_file` whose writer is gone (SIGKILL, the OOM killer, a preemption: nothing
    ran its cleanup). Each is as large as the rows written before it died, and no reader ever maps one; a writer
    holds a lock on its own until it is published, and a killed one's lock went with it."""
    for partial in arrow_file.parent.glob(f".{arrow_file.stem}.*.partial"):
        try:
            with open(partial, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                partial.unlink()
        except OSError:  # a live writer's, gone already, or not this user's to remove
            continue
