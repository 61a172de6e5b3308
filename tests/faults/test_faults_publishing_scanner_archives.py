"""Compressed files in an upload set: their raw bytes hide their text, so a token in `logs.txt.gz` or a home path in
`notes.zip` went up unseen. They are read decompressed (gzip, bzip2, xz, each zip member), known by their first bytes
whatever their name; what the standard library cannot open (zstd, a stream cut short), more than four layers and a
file expanding past its limit (a decompression bomb) are refused as unscanned; layers inside layers (a tar.gz of
rotated .log.gz files) are read through. A torch.save archive of plain tensors, and clean compressed files, pass."""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zipfile

import pytest
import torch
from publish_cases import TOKEN

from modeling_croc import upload_scan
from modeling_croc.upload_scan import Finding, scan_upload_set

USER = "alice"
LEAK = f"step 10 loss 1.2\nlogged in with {TOKEN}\n".encode()
SHOWN = f"hf_...({len(TOKEN)} characters)"
AT = LEAK.index(b"hf_")


@pytest.mark.parametrize(("name", "write"), [
    ("train.log.gz", lambda path: path.write_bytes(gzip.compress(LEAK))),
    ("train.log.bz2", lambda path: path.write_bytes(bz2.compress(LEAK))),
    ("train.log.xz", lambda path: path.write_bytes(lzma.compress(LEAK))),
    ("misnamed.txt", lambda path: path.write_bytes(gzip.compress(LEAK))),  # known by its bytes, not its name
])
def test_a_compressed_stream_is_read_decompressed(tmp_path, name, write):
    write(tmp_path / name)
    assert TOKEN.encode() not in (tmp_path / name).read_bytes()
    found = scan_upload_set(tmp_path, [name], user_name=USER)
    assert found == [Finding(name, f"decompressed byte {AT}", upload_scan.TOKEN, SHOWN)]


def test_each_member_of_a_zip_archive_is_read(tmp_path):
    with zipfile.ZipFile(tmp_path / "notes.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("clean.txt", "nothing here\n")
        archive.writestr("run/launch.sh", LEAK)
    assert scan_upload_set(tmp_path, ["notes.zip"], user_name=USER) == [
        Finding("notes.zip", f"member run/launch.sh byte {AT}", upload_scan.TOKEN, SHOWN)]


def test_a_tar_inside_gzip_is_read_through(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train.log").write_bytes(LEAK)
    with tarfile.open(tmp_path / "logs.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "logs" / "train.log", arcname="train.log")
    assert scan_upload_set(tmp_path, ["logs.tar.gz"], user_name=USER) == [
        Finding("logs.tar.gz", f"decompressed member train.log byte {AT}", upload_scan.TOKEN, SHOWN)]


def test_a_match_across_decompressed_chunks_is_found_once(tmp_path, monkeypatch):
    monkeypatch.setattr(upload_scan, "CHUNK_BYTES", 16)
    (tmp_path / "train.log.gz").write_bytes(gzip.compress(b"x" * 37 + LEAK))
    assert scan_upload_set(tmp_path, ["train.log.gz"], user_name=USER) == [
        Finding("train.log.gz", f"decompressed byte {37 + AT}", upload_scan.TOKEN, SHOWN)]


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("weights.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 20, "compressed (zstd), which the scanner cannot read"),
    ("cut.gz", gzip.compress(LEAK, mtime=0)[:20], "Compressed file ended before the end-of-stream marker was reached"),
], ids=["zstd", "cut-gzip"])
def test_what_cannot_be_read_decompressed_is_refused_as_unscanned(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    found = scan_upload_set(tmp_path, [name], user_name=USER)
    assert len(found) == 1 and found[0].kind == upload_scan.UNREADABLE and reason in found[0].text, found


def _tar_gz(path, members: dict) -> None:
    import io

    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


@pytest.mark.parametrize(("name", "write", "where"), [
    # found by a hostile tester with no finding: rotated logs in a tar.gz, gzip of gzip, a zip member that is a zip
    ("logs.tar.gz", lambda path: _tar_gz(path, {"logs/run.log.gz": gzip.compress(LEAK)}),
     f"decompressed member logs/run.log.gz decompressed byte {AT}"),
    ("twice.gz", lambda path: path.write_bytes(gzip.compress(gzip.compress(LEAK))), f"decompressed decompressed byte {AT}"),
    ("nested.zip", lambda path: _zip(path, {"plugin.jar": _zip_bytes({"run.log": LEAK})}),
     f"member plugin.jar member run.log byte {AT}"),
    ("bundle.zip", lambda path: _zip(path, {"inner.log.gz": gzip.compress(LEAK)}),
     f"member inner.log.gz decompressed byte {AT}"),
])
def test_layers_inside_layers_are_read_through(tmp_path, name, write, where):
    write(tmp_path / name)
    assert scan_upload_set(tmp_path, [name], user_name=USER) == [Finding(name, where, upload_scan.TOKEN, SHOWN)]


def _zip_bytes(members: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _zip(path, members: dict) -> None:
    path.write_bytes(_zip_bytes(members))


def test_a_member_that_only_looks_compressed_is_read_as_it_is(tmp_path):
    """A tensor's bytes in a torch.save archive may start with a magic by chance: not refused, read as they are."""
    (tmp_path / "state.zip").write_bytes(_zip_bytes({"data/0": b"\x1f\x8b\x08" + b"\x00" * 20 + LEAK}))
    assert scan_upload_set(tmp_path, ["state.zip"], user_name=USER) == [
        Finding("state.zip", f"member data/0 byte {23 + AT}", upload_scan.TOKEN, SHOWN)]


def test_a_tar_member_named_under_a_home_folder_is_found(tmp_path):
    _tar_gz(tmp_path / "backup.tar.gz", {"home/alice/notes.txt": b"nothing\n"})
    found = scan_upload_set(tmp_path, ["backup.tar.gz"], user_name=USER)
    assert found and all(finding.where == "decompressed member name 'home/alice/notes.txt'" for finding in found)


def test_a_decompression_bomb_is_refused_without_reading_it_through(tmp_path, monkeypatch):
    """785 bytes of bzip2 expand to a gigabyte of zeros: the scan read on for many minutes. Past its limit (50 times
    the file, at least 64 MiB; here 1 MiB) it stops and refuses the file as unscanned."""
    monkeypatch.setattr(upload_scan, "_EXPANSION_FLOOR", 1 << 20)
    (tmp_path / "zeros.bz2").write_bytes(bz2.compress(b"\x00" * (4 << 20)))
    found = scan_upload_set(tmp_path, ["zeros.bz2"], user_name=USER)
    assert len(found) == 1 and found[0].kind == upload_scan.UNREADABLE
    assert found[0].text == (f"it expands past {1 << 20:,} bytes (a decompression bomb?), which the scanner does not "
                             "read through: upload it unpacked")


def test_clean_compressed_files_and_a_torch_archive_pass(tmp_path):
    torch.save({"weight": torch.randn(64, 64), "step": 3}, tmp_path / "extra_state.pt")
    (tmp_path / "notes.md.gz").write_bytes(gzip.compress(b"# notes\nloss went down\n"))
    with zipfile.ZipFile(tmp_path / "plots.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("loss.csv", "step,loss\n1,2.0\n")
    assert scan_upload_set(tmp_path, ["extra_state.pt", "notes.md.gz", "plots.zip"], user_name=USER) == []
