"""A LLaVA-format file is parsed once into an Arrow file of the row schema (`data_recipes.row_cache`); every later
read maps it. The mapped rows equal the parsed ones, and nothing but the same bytes read by the same code reuses
them: an edit that keeps the size and modification time, a changed reader, a damaged or unwritable cache all read
the file again."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
from pathlib import Path

import datasets
import pytest
from recipe_fakes import caption_row, text_row, write_json, write_jsonl

from data_recipes import DataError, load_llava_json, row_cache
from data_recipes.row_cache import cached_llava_json, rows_cache_dir

ROWS = [
    caption_row(7, "a/1.jpg", "first"),
    caption_row("000000033471", "a/2.jpg", "second"),
    text_row(12, "Hi?", "Hello."),
    {**text_row(None, "Q2?", "A2."), "image": ""},
    {"id": "several", "image": ["b/1.jpg", "b/2.jpg"], "conversations": []},  # a `problem` row
    "not an object",
]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    return tmp_path / "hf_datasets" / "croc_rows"


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Every file the reader parses."""
    calls = []
    batches = row_cache.llava_json_batches

    def counted(path, **kwargs):
        calls.append(str(path))
        return batches(path, **kwargs)

    monkeypatch.setattr(row_cache, "llava_json_batches", counted)
    return calls


def _arrow_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("writer,suffix", [(write_json, ".json"), (write_jsonl, ".jsonl")])
def test_the_second_read_maps_the_rows_the_first_parsed(tmp_path, cache, parses, writer, suffix):
    path = tmp_path / f"rows{suffix}"
    writer(path, ROWS)
    first = cached_llava_json(path, source="mine")
    second = cached_llava_json(path, source="mine")
    assert parses == [str(path)]
    assert rows_cache_dir() == cache and len(_arrow_files(cache)) == 1
    expected = load_llava_json(path, source="mine").to_list()
    assert first.to_list() == expected and second.to_list() == expected
    assert second.features == load_llava_json(path, source="mine").features
    assert [Path(f["filename"]).parent for f in second.cache_files] == [cache]  # memory-mapped, not in memory
    assert second[4]["problem"].startswith("multiple_images") and second[5]["problem"].startswith("malformed_row")


def test_the_file_is_named_by_its_bytes_not_its_name_size_or_time(tmp_path, cache, parses):
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    before = path.stat()
    cached_llava_json(path)
    # An edit in place of the same length, its modification time put back (as `cp -p` or `rsync -t` can leave it).
    path.write_text(path.read_text().replace("first", "FIRST"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    edited = cached_llava_json(path)
    assert edited[0]["conversations"][1]["value"] == "FIRST"
    assert len(parses) == 2 and len(_arrow_files(cache)) == 2
    # A copy under another name holds the same bytes: its rows are mapped, not parsed again.
    copy = tmp_path / "elsewhere" / "copy.json"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert cached_llava_json(copy).to_list() == edited.to_list() and len(parses) == 2


@pytest.mark.parametrize("change", ["source", "limit", "reader code"])
def test_another_reading_of_the_same_bytes_is_another_file(tmp_path, cache, parses, monkeypatch, change):
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    cached_llava_json(path)
    if change == "reader code":
        monkeypatch.setattr(row_cache, "_READER_CODE", (*row_cache._READER_CODE, "validation.py"))
        rows = cached_llava_json(path)
    else:
        rows = cached_llava_json(path, **({"source": "other"} if change == "source" else {"limit": 2}))
        assert rows.to_list() == load_llava_json(path, **({"source": "other"} if change == "source"
                                                          else {"limit": 2})).to_list()
    assert len(parses) == 2 and len(_arrow_files(cache)) == 2


def test_a_damaged_cached_file_is_read_again_and_replaced(tmp_path, cache, parses, caplog):
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    cached_llava_json(path)
    [name] = _arrow_files(cache)
    (cache / name).write_bytes((cache / name).read_bytes()[:200])  # a disk that lost its tail
    with caplog.at_level(logging.WARNING, logger="data_recipes.row_cache"):
        rows = cached_llava_json(path)
    assert rows.to_list() == load_llava_json(path).to_list() and len(parses) == 2
    assert "does not read" in caplog.text and _arrow_files(cache) == [name]
    assert cached_llava_json(path).to_list() == rows.to_list() and len(parses) == 2


def test_a_cache_that_cannot_be_written_reads_in_memory_and_says_so(tmp_path, cache, caplog):
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    cache.parent.write_text("a file where the cache folder should be (no permission bits stop root)")
    with caplog.at_level(logging.WARNING, logger="data_recipes.row_cache"):
        rows = cached_llava_json(path)
    assert rows.to_list() == load_llava_json(path).to_list() and rows.cache_files == []
    assert "cannot keep them" in caplog.text and "this process reads the file itself" in caplog.text


def test_a_write_failing_midway_leaves_no_file_and_reads_in_memory(tmp_path, cache, monkeypatch, caplog):
    """A full disk under the cache: nothing half written stays behind for a later reader to map."""
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    fsync = os.fsync

    def full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(row_cache.os, "fsync", full)
    with caplog.at_level(logging.WARNING, logger="data_recipes.row_cache"):
        rows = cached_llava_json(path)
    monkeypatch.setattr(row_cache.os, "fsync", fsync)
    assert rows.to_list() == load_llava_json(path).to_list()
    assert "No space left on device" in caplog.text and _arrow_files(cache) == []


def test_a_file_that_does_not_parse_raises_its_line_and_leaves_nothing(tmp_path, cache):
    path = tmp_path / "rows.json"
    path.write_text('[{"id": 1, "conversations": []},\n {"id": 2,,}]')
    with pytest.raises(DataError, match=r"rows.json:2:\d+: JSON does not parse"):
        cached_llava_json(path)
    assert _arrow_files(cache) == []


def test_the_cached_file_is_as_shared_as_the_umask_says(tmp_path, cache):
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    previous = os.umask(0o027)
    try:
        cached_llava_json(path)
    finally:
        os.umask(previous)
    [name] = _arrow_files(cache)
    assert stat.S_IMODE((cache / name).stat().st_mode) == 0o640


def test_with_datasets_caching_off_the_rows_are_read_in_memory(tmp_path, cache, parses):
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    datasets.disable_caching()
    try:
        assert rows_cache_dir() is None
        rows = cached_llava_json(path)
    finally:
        datasets.enable_caching()
    assert rows.to_list() == load_llava_json(path).to_list() and rows.cache_files == [] and _arrow_files(cache) == []


def test_the_same_bytes_under_another_suffix_are_read_as_that_suffix_says(tmp_path, cache):
    # A lone object is one row in a `.jsonl` file and a refused file as `.json`: the name's suffix is part of the key.
    lone = tmp_path / "one.jsonl"
    lone.write_text(json.dumps(text_row(1, "Hi?", "Hello.")))
    assert len(cached_llava_json(lone)) == 1
    same_bytes = tmp_path / "one.json"
    same_bytes.write_bytes(lone.read_bytes())
    with pytest.raises(DataError, match="the top level is an object"):
        cached_llava_json(same_bytes)


def test_a_file_replaced_while_it_is_parsed_is_not_kept_under_its_old_bytes(tmp_path, cache, monkeypatch, caplog):
    """A pipeline rewrites data.path (write beside, rename) between the key's hash and the parse: the rows read are
    the new file's, and a copy of the old bytes must still read as the old rows."""
    path = tmp_path / "rows.json"
    write_json(path, [text_row(1, "Hi?", "old")])
    old_copy = tmp_path / "old_copy.json"
    old_copy.write_bytes(path.read_bytes())
    batches = row_cache.llava_json_batches

    def replaced_first(file, **kwargs):
        write_json(tmp_path / "new.json", [text_row(1, "Hi?", "new")])
        os.replace(tmp_path / "new.json", path)
        monkeypatch.setattr(row_cache, "llava_json_batches", batches)
        return batches(file, **kwargs)

    monkeypatch.setattr(row_cache, "llava_json_batches", replaced_first)
    with caplog.at_level(logging.WARNING, logger="data_recipes.row_cache"):
        assert cached_llava_json(path)[0]["conversations"][1]["value"] == "new"
    assert "changed while it was read" in caplog.text and _arrow_files(cache) == []
    assert cached_llava_json(old_copy)[0]["conversations"][1]["value"] == "old"


def test_a_file_another_writer_published_meanwhile_is_kept_not_renamed_over(tmp_path, cache, monkeypatch):
    """Two nodes' first processes parse the same file into a shared cache: the one that finishes second keeps the
    first one's file, which that node's processes have mapped (a rename over it unlinks it under them: on NFS a
    SIGBUS at their next page read)."""
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    batches = row_cache.llava_json_batches
    theirs = []

    def other_writer_first(file, **kwargs):
        monkeypatch.setattr(row_cache, "llava_json_batches", batches)
        cached_llava_json(path)  # the other node: parses, publishes, maps
        [name] = [name for name in _arrow_files(cache) if not name.startswith(".")]  # beside this one's partial
        theirs.append((name, (cache / name).stat().st_ino))
        return batches(file, **kwargs)

    monkeypatch.setattr(row_cache, "llava_json_batches", other_writer_first)
    rows = cached_llava_json(path)
    [(name, inode)] = theirs
    assert _arrow_files(cache) == [name]  # no partial file left beside it
    assert (cache / name).stat().st_ino == inode and rows.to_list() == load_llava_json(path).to_list()


def test_a_partial_file_a_killed_writer_left_is_removed_and_a_live_ones_kept(tmp_path, cache):
    """SIGKILL (the OOM killer, a preemption) runs no cleanup: the writer's partial file stays, as large as the rows it
    wrote. The next read removes it; one a live writer holds (its lock) is left alone."""
    path = tmp_path / "rows.json"
    write_json(path, ROWS)
    cache.mkdir(parents=True)
    key = row_cache.rows_cache_key(path)
    dead, live = cache / f".{key}.dead.partial", cache / f".{key}.live.partial"
    dead.write_bytes(b"\0" * 4096)
    live.write_bytes(b"\0" * 4096)
    with open(live, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        cached_llava_json(path)
        assert _arrow_files(cache) == [live.name, f"{key}.arrow"]
        cached_llava_json(path)  # a mapping read sweeps too: a killed first read is followed by mapped ones
        assert live.exists()
