"""Publishing to the Hugging Face Hub without leaking anything: the upload-set rule the trainer (`--hub_dry_run DIR`,
`--push_to_hub`) and the data recipes (`--hub-folder DIR`, `--push-to-hub`) share; which folder a publish may write
is `publish_folder.py`'s rule.

The scan (:func:`scan_upload_set`, :func:`check_upload_set`), run on the exact files a push sends,
before every push, real or dry. It looks for

* Hugging Face tokens: the values this process knows (`HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`,
  `huggingface_hub.get_token()`, and what the caller adds, such as `--hub_token`), and anything shaped like one
  (`hf_` followed by 30 or more letters and digits), each in UTF-8 and in UTF-16 (what PowerShell's `>` writes);
* other credentials: the values of this process's credential variables (`WANDB_API_KEY`, `KAGGLE_KEY`,
  `AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`, `AZURE_DEVOPS_PAT`: a name ending in `_KEY`, `_PAT`, `_TOKEN`, `_SECRET`,
  `_PASSWORD`, ...; 16 characters or more, as keys are: a shorter value is as likely a word of a vocabulary; in
  UTF-8 and UTF-16), and
  the shapes of private keys (PEM, OpenSSH, PGP, PuTTY), cloud (AWS, an Azure `AccountKey=`), GitHub and
  OpenAI-style (`sk-...`), Stripe, Slack and Google API keys, a password or token in a URL (`scheme://user:...@`),
  a bearer token in an `Authorization` header, a docker login's `"auth"`, and credentials of 16 characters or more
  assigned to such a name (`NAME=value`, `"name": "value"`, `name: value  # comment`, `openai.api_key = "..."`,
  `wandb.login(key="...")`; quoted values may hold any punctuation; special tokens such as `<|image_pad|>`, shell
  references and words alone are not values), and a key-shaped value (16 or more letters and digits, two of each at
  least, after a prefix such as `proj-`) assigned to any other name ending in `_KEY` (`KAGGLE_KEY`,
  `"openai_key"`: `CACHE_KEY=images` or `"image_key": "pixel_values"` is a lookup key, not a credential);
* absolute local paths: this machine's home directory, the working directory and the caller's folders (each as given
  and resolved; a path of one component such as `/root` counts only when a name follows it), and any absolute path
  under a root that only ever holds local files (`/home/`, `/Users/`, `/root/`, `/tmp/`, `/mnt/`, `/scratch/`,
  mounted disks `/Volumes/` and `/media/`, macOS temporary folders, cluster file systems, `C:\\Users\\`), followed by
  a name, also with JSON-escaped slashes (`\\/home\\/...`). A path counts only where it starts a path: after a URL
  host or another path segment (`https://github.com/root/...`, `a/tmp/b`) it is not local;
* the user name (`getpass.getuser()`) as a whole path component between two separators (`/home/NAME/`,
  `C:\\Users\\NAME\\`) or as the user part of an e-mail-like `NAME@host`, never as a bare word: CI runs as `root`,
  a word that model code and vocabularies contain.

What is read: every file's relative name (it goes up as a repository path; with `__` also read as `/`, as lmms-eval
names an output folder by the model's path), and every byte of every file, in chunks of :data:`CHUNK_BYTES` that overlap so a match across a chunk
border is found once, except two binary layouts whose payload holds no text: a `.safetensors` file is scanned in its
header (the JSON of tensor names, dtypes, shapes and `__metadata__`; the tensor bytes after it are numbers), and a
Parquet file in its key-value metadata and column names (nested fields' too) and in the decoded values of every
string and binary column (embedded files, such as a datasets.Image column's bytes, one by one), nested ones (structs,
lists, a map's keys and values) included (the data pages are compressed, so their raw bytes would hide text). Row
values of a dataset's shards (`dataset_rows=True`, the data recipes' pushes) are upstream content, where a shell
command naming `/home/user/` or `/tmp/` is ordinary: only this process's tokens and this machine's own folders (its
home not where the account name is generic, `/home/ubuntu`) count there; a model push's Parquet file (an eval's
predictions) is the user's own output and gets every rule (and in the footer's min/max statistics, which are row values: the footer is not read raw).
A compressed file or archive (gzip, bzip2, xz, zip, tar; known by its first bytes, whatever its name) is read through
its layers, up to four deep (a tar.gz of rotated .log.gz files), since its raw bytes hide its text; one the standard
library cannot open (zstd, 7z, rar, lz4), deeper layers and a file that expands past 50 times its size (at least
64 MiB, at most 1 GiB: a decompression bomb) cannot be scanned. Text in UTF-16 or UTF-32 (a window of many zero bytes)
is read a second time, character by character. A file that is not a regular file (a named pipe would block the scan
for ever) is never opened, and it, like one that cannot be read (a Parquet file cut short, a file gone, such a
compressed file), is a finding too (:data:`UNREADABLE`): what goes up must have been scanned.

:func:`push_files` uploads a scanned folder's exact file list in one commit (`HfApi.create_commit`), scanning it again
right before.
"""

from __future__ import annotations

import bz2
import contextlib
import getpass
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from .publish_folder import PublishError

# The pattern tables, in their own module; imported here by name, where the scanner reads them (a test that sets
# `upload_scan.LOCAL_ROOTS` changes what the scan looks for) and where other modules import the public ones from.
from .upload_scan_patterns import (
    _MIN_ENVIRONMENT_SECRET_LENGTH,
    _MIN_SECRET_LENGTH,
    _NAME_BYTES,
    _RUN_DELIMITERS,
    _SECRET_ENVIRONMENT,
    _UTF16_TOKEN_PATTERNS,
    _WINDOWS_USERS,
    LOCAL_ROOTS,
    SECRET_PATTERNS,
    TOKEN_ENVIRONMENT,
    TOKEN_PATTERN,
    context_matches,
)

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

CHUNK_BYTES = 8 * 1024 * 1024
# At least the longest literal looked for (a path can be PATH_MAX long), so no match is cut by a chunk border.
_MIN_OVERLAP_BYTES = 4096
_LOOKBACK_BYTES = 2048

TOKEN = "a Hugging Face token"
SECRET = "a private key or credential"
LOCAL_PATH = "an absolute local path"
USER_NAME = "the user name"
# A file the scan could not read (a Parquet file cut short, a file gone or unreadable): nothing vouches for its bytes.
UNREADABLE = "a file the scanner cannot read"


class UploadLeakError(PublishError):
    """The upload set holds a token, a local path or the user name; `findings` lists every one."""

    def __init__(self, message: str, findings: list[Finding]) -> None:
        super().__init__(message)
        self.findings = findings


@dataclass(frozen=True)
class Finding:
    """One thing in an upload set that must not be published.

    Attributes:
        file: the file, relative to the scanned folder.
        where: `byte N`, `header byte N`, `column NAME` (decoded Parquet values) or `not scanned`.
        kind: :data:`TOKEN`, :data:`SECRET`, :data:`LOCAL_PATH`, :data:`USER_NAME` or :data:`UNREADABLE`.
        text: what was found, a token shortened so that the message does not leak it again (why the file could not
            be read, for :data:`UNREADABLE`).
    """

    file: str
    where: str
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.file} ({self.where}): {self.text!r}"


@dataclass(frozen=True)
class _Needle:
    literal: bytes  # what the byte search finds; the rule below then confirms the match
    kind: str
    # "exact-token"; "root" (a name must follow); "exact" (a path boundary must follow); "user" (not in a URL);
    # "email" (a host must follow)
    rule: str
    shown: str = ""  # an "exact-token" needle's redacted text (the literal may be UTF-16)


def known_tokens(*extra: str | None) -> list[str]:
    """The Hugging Face tokens this process can see (environment, `huggingface_hub.get_token()`), plus `extra`
    (`--hub_token`); each at most once, empty or placeholder-short values dropped."""
    from huggingface_hub import get_token

    values = [*extra, *(os.environ.get(name) for name in TOKEN_ENVIRONMENT), get_token()]
    return list(dict.fromkeys(v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH))


def known_secrets() -> list[str]:
    """The values of this process's credential environment variables (`_SECRET_ENVIRONMENT`: WANDB_API_KEY,
    OPENAI_API_KEY, ...) other than the Hugging Face tokens (:func:`known_tokens`); values shorter than
    `_MIN_ENVIRONMENT_SECRET_LENGTH` dropped."""
    values = (value for name, value in os.environ.items()
              if name not in TOKEN_ENVIRONMENT and _SECRET_ENVIRONMENT.search(name.upper()))
    return list(dict.fromkeys(v for v in values if len(v) >= _MIN_ENVIRONMENT_SECRET_LENGTH))


def local_folders(*extra: str | Path | None) -> list[str]:
    """This machine's folders that must not appear in an upload: home, working directory, and `extra`, each as
    given (absolute) and resolved."""
    found = []
    for folder in (Path.home(), Path.cwd(), *extra):
        if folder is None or str(folder) == "":
            continue
        expanded = os.path.expanduser(str(folder))
        found += [os.path.abspath(expanded), os.path.realpath(expanded)]
    return list(dict.fromkeys(found))


# Account names that name no person: the home folder of a cloud image, a container or a CI runner (/home/ubuntu,
# /home/user). Upstream rows quote such paths as often as this machine has one (a shell session in a code dataset).
_GENERIC_ACCOUNTS = frozenset({"ubuntu", "user", "root", "ec2-user", "admin", "jovyan", "runner", "debian", "centos",
                               "fedora", "azureuser", "vagrant", "docker", "coder", "gitpod", "codespace", "app"})


def _row_folders(folders: Iterable[str]) -> list[str]:
    """`folders` less this machine's home when its account name is generic (`_GENERIC_ACCOUNTS`): what dataset rows
    are searched for. Such a home names no one, and upstream rows quote `/home/ubuntu/...`; files keep it."""
    home = Path.home()
    generic = {os.path.abspath(home), os.path.realpath(home)} if home.name in _GENERIC_ACCOUNTS else set()
    return [folder for folder in folders if folder not in generic]


def _current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no entry for this uid (some containers)
        return None


class _Scanner:
    """The compiled needles of one scan: one byte regex per leading byte, an alternation of literals that share it
    (Python's regex engine then skips to that byte at memchr speed), and a confirmation in Python for the rare
    hits."""

    def __init__(self, tokens: Iterable[str], folders: Iterable[str], user_name: str | None,
                 row_values: bool = False, secrets: Iterable[str] = ()) -> None:
        # A known value also as UTF-16 (what PowerShell's `>` and Notepad write), little- and big-endian.
        needles = [_Needle(value.encode(encoding), kind, "exact-token", _redacted(value.encode()))
                   for values, kind in ((tokens, TOKEN), (secrets, SECRET)) for value in values
                   for encoding in ("utf-8", "utf-16-le", "utf-16-be")]
        paths = []
        for folder in folders:
            parts = PurePosixPath(folder).parts
            if len(parts) > 2:
                paths.append(_Needle(folder.encode(), LOCAL_PATH, "exact"))
            elif len(parts) == 2 and not row_values:  # "/root", "/work": a local root when a name follows
                paths.append(_Needle(folder.encode() + b"/", LOCAL_PATH, "root"))
        if not row_values:
            paths += [_Needle(f"/{root}/".encode(), LOCAL_PATH, "root") for root in LOCAL_ROOTS]
            if user_name and len(user_name) >= 2:
                paths += [_Needle(f"{sep}{user_name}{sep}".encode(), USER_NAME, "user") for sep in ("/", "\\")]
                needles.append(_Needle(f"{user_name}@".encode(), USER_NAME, "email"))
        # JSON may escape a slash (`"\/home\/alice\/data"`, PHP's and some Java writers' default).
        needles += paths + [_Needle(n.literal.replace(b"/", b"\\/"), n.kind, n.rule)
                             for n in paths if b"/" in n.literal]
        # Longest first: a deeper local folder is reported rather than the root it lies under.
        self.needles = sorted(dict.fromkeys(needles), key=lambda n: len(n.literal), reverse=True)
        self.row_values = row_values
        self.overlap = max([_MIN_OVERLAP_BYTES, *(2 * len(n.literal) for n in self.needles)])
        by_first_byte: dict[int, list[bytes]] = {}
        for literal in sorted({n.literal for n in self.needles}, key=len, reverse=True):
            by_first_byte.setdefault(literal[0], []).append(literal)
        self.searches = [re.compile(b"|".join(re.escape(literal) for literal in group))
                         for group in by_first_byte.values()]

    def scan(self, data: bytes, start: int = 0, end: int | None = None, *,
             wide: bool = True) -> list[tuple[int, str, str]]:
        """(offset, kind, text) of every finding that starts in `data[start:end]` (`data` may run on past `end`, so a
        match across the border is confirmed with the bytes after it); `wide`: UTF-16 and UTF-32 text read too
        (`_scan_wide`)."""
        end = len(data) if end is None else end
        found = self._scan_wide(data, start, end) if wide and not self.row_values else []
        if not self.row_values:
            for pattern in (TOKEN_PATTERN, *_UTF16_TOKEN_PATTERNS):
                for match in pattern.finditer(data, start):
                    if match.start() >= end:
                        break
                    found.append((match.start(), TOKEN, _redacted(match.group().replace(b"\x00", b""))))
            secrets = []
            for pattern in SECRET_PATTERNS:
                for match in pattern.finditer(data, start):
                    if match.start() >= end:
                        break
                    secrets.append((match.start(), match.end(), _secret_name(match.group())))
            # One finding per credential: a Slack key assigned to SLACK_BOT_TOKEN is found by both shapes.
            covered = -1
            for at, until, text in sorted(secrets, key=lambda secret: (secret[0], -secret[1])):
                if at >= covered:
                    found.append((at, SECRET, text))
                covered = max(covered, until)
            context = [(match.start(), match.end(), _secret_name(match.group()))
                       for match in context_matches(data, start, end)
                       if not any(at < match.end() and match.start() < until for at, until, _ in secrets)]
            for match in _WINDOWS_USERS.finditer(data, start):
                if match.start() >= end:
                    break
                drive = match.start() - 1
                if drive >= 0 and chr(data[drive]).isalpha() and (drive == 0 or data[drive - 1] not in _NAME_BYTES):
                    found.append((drive, LOCAL_PATH, _excerpt(data, drive)))
        for search in self.searches:
            # `search` from one byte past each hit, not `finditer`: needles overlap (`/home/` and `/alice/` share
            # a slash).
            match = search.search(data, start)
            while match is not None and match.start() < end:
                finding = self._confirm(data, match.start())
                if finding is not None:
                    found.append(finding)
                match = search.search(data, match.start() + 1)
        if not self.row_values:
            found += _uncovered(context, found)
        # One finding per place: a known token is also shaped like one. A value in UTF-16-LE also reads as its
        # UTF-16-BE form one byte earlier (the zero byte before it is the previous character's): one finding.
        places = {(offset, kind): (offset, kind, text) for offset, kind, text in reversed(found)}
        return sorted(finding for finding in places.values()
                      if places.get((finding[0] + 1, finding[1]), (0, "", ""))[2] != finding[2])

    def _scan_wide(self, data: bytes, start: int, end: int) -> list[tuple[int, str, str]]:
        """Findings in ASCII text written as UTF-16 (PowerShell's `>`) or UTF-32 (a numpy string array) in
        `data[start:end]`: each byte position of a character in its 2 or 4 bytes is read as text where the other
        positions are mostly zeros. A window of few zeros (weights, UTF-8 text) costs one count."""
        if end <= start or data.count(0, start, end) * 3 < end - start:  # wide ASCII text is half zeros or more
            return []
        found = []
        for step in (2, 4):
            for phase in range(step):
                others = [data[other::step] for other in range(step) if other != phase]
                if any(other.count(0) * 2 < len(other) for other in others):
                    continue
                low, high = (max(0, -(-(start - phase) // step)), -(-(end - phase) // step))
                hits = self.scan(data[phase::step], low, high, wide=False)
                # A token is reported as one (in UTF-16 its own patterns find it), and a name it is assigned to
                # (`HF_TOKEN=hf_...`) not again.
                tokens = [at for at, kind, _ in hits if kind == TOKEN]
                found += [(phase + at * step, kind, text) for at, kind, text in hits
                          if not (kind == TOKEN and step == 2)
                          and not (kind == SECRET and any(0 < token - at <= 64 for token in tokens))]
        return found

    def _confirm(self, data: bytes, at: int) -> tuple[int, str, str] | None:
        before = data[at - 1] if at > 0 else None
        for needle in self.needles:
            if not data.startswith(needle.literal, at):
                continue
            after_at = at + len(needle.literal)
            after = data[after_at] if after_at < len(data) else None
            if needle.rule == "exact-token":
                return at, needle.kind, needle.shown
            if needle.rule == "exact" and before not in _NAME_BYTES and after not in _NAME_BYTES:
                return at, LOCAL_PATH, _excerpt(data, at)
            if needle.rule == "root" and before not in _NAME_BYTES and after is not None and after in _NAME_BYTES:
                return at, LOCAL_PATH, _excerpt(data, at)
            if needle.rule == "user" and not _in_url(data, at):
                return at, USER_NAME, _excerpt(data, _run_start(data, at))
            if needle.rule == "email" and before not in _NAME_BYTES and after is not None and chr(after).isalnum():
                return at, USER_NAME, _excerpt(data, at)
        return None


def _uncovered(context: list[tuple[int, int, str]], found: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The credentials found by their context (`_CONTEXT_PATTERNS`: start, end, name) in which no token or secret of
    `found` starts, one per place: that one is reported where it stands."""
    starts = sorted(at for at, kind, _ in found if kind in (TOKEN, SECRET))
    kept: dict[int, tuple[int, str, str]] = {}
    covered = -1
    for at, until, text in sorted(context, key=lambda match: (match[0], -match[1])):
        if at >= covered and not any(at <= start < until for start in starts):
            kept.setdefault(at, (at, SECRET, text))
        covered = max(covered, until)
    return list(kept.values())


def _redacted(token: bytes) -> str:
    text = token.decode("ascii", "replace")
    return f"{text[:3]}...({len(text)} characters)" if text.startswith("hf_") else f"({len(text)}-character secret)"


def _secret_name(match: bytes) -> str:
    """What a secret is, without its value: the PEM header, or the name a credential is assigned to."""
    text = match.decode("ascii", "replace")
    if text.startswith(("-----", "PuTTY")):
        return text
    if text.startswith("machine"):
        return " ".join(text.split()[:2]) + " ... password ..."
    if "://" in text:  # the URL's scheme and user, not its password
        return text[:text.rindex(":") + 1] + "...@"
    name = re.split(r"[\"' \t=:]", text.strip(" \t\"'"), maxsplit=1)[0]
    return f"{name}=..." if name != text else f"{text[:4]}...({len(text)} characters)"


def _excerpt(data: bytes, at: int, limit: int = 100) -> str:
    """The text from `at` to the end of its run (the next space, quote or bracket), at most `limit` bytes."""
    stop = at
    while stop < min(len(data), at + limit) and data[stop] not in _RUN_DELIMITERS and 0x20 <= data[stop] != 0x7F:
        stop += 1
    return data[at:stop].decode("utf-8", "replace")


def _run_start(data: bytes, at: int, limit: int = _LOOKBACK_BYTES) -> int:
    """Where the run (text between spaces, quotes or brackets) holding position `at` starts."""
    start = at
    while start > 0 and data[start - 1] not in _RUN_DELIMITERS and at - start < limit:
        start -= 1
    return start


def _in_url(data: bytes, at: int) -> bool:
    """Whether position `at` lies in a URL (`https://host/...`, not `file://`): its path components are remote."""
    run = data[_run_start(data, at):at].replace(b"\\/", b"/")  # a URL in JSON may escape its slashes
    return b"://" in run and not run.startswith(b"file://")


def _scan_stream(scanner: _Scanner, path: Path, start: int = 0, length: int | None = None) -> list[tuple[int, str, str]]:
    """Every finding in `length` bytes of `path` from `start` (all to the end by default), read in chunks of
    :data:`CHUNK_BYTES`. Each window also holds the `_LOOKBACK_BYTES` before its chunk (the byte before a match, the
    URL a path component belongs to) and `scanner.overlap` bytes after it (the rest of a match crossing the border);
    a finding belongs to the chunk it starts in, so each is reported once."""
    size = path.stat().st_size
    stop = size if length is None else min(size, start + length)
    found = []
    with path.open("rb") as handle:
        position = start
        while position < stop:
            chunk_end = min(position + CHUNK_BYTES, stop)
            window_start = max(position - _LOOKBACK_BYTES, 0)
            handle.seek(window_start)
            window = handle.read(min(chunk_end + scanner.overlap, stop) - window_start)
            found += [(window_start + offset, kind, text) for offset, kind, text
                      in scanner.scan(window, position - window_start, chunk_end - window_start)]
            position = chunk_end
    return found


def _scan_sequential(scanner: _Scanner, handle: BinaryIO) -> list[tuple[int, str, str]]:
    """`_scan_stream` for a stream read once, front to back (a decompressed file): each chunk is scanned once
    `scanner.overlap` bytes after it are read, with the `_LOOKBACK_BYTES` before it in its window."""
    found = []
    before, ahead, offset = b"", handle.read(CHUNK_BYTES), 0  # `ahead`: the bytes from `offset` not scanned yet
    while ahead:
        while len(ahead) < CHUNK_BYTES + scanner.overlap and (more := handle.read(CHUNK_BYTES)):
            ahead += more
        chunk = ahead[:CHUNK_BYTES]
        window = before + ahead[:CHUNK_BYTES + scanner.overlap]
        found += [(offset - len(before) + at, kind, text)
                  for at, kind, text in scanner.scan(window, len(before), len(before) + len(chunk))]
        before = (before + chunk)[-_LOOKBACK_BYTES:]
        offset += len(chunk)
        ahead = ahead[CHUNK_BYTES:]
    return found


# First bytes of compressed files: read decompressed (the standard library's own formats), or refused.
_DECOMPRESSORS = {b"\x1f\x8b\x08": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}
_UNSCANNABLE = {b"\x28\xb5\x2f\xfd": "zstd", b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!\x1a\x07": "rar",
                b"\x04\x22\x4d\x18": "lz4"}
_ZIP = b"PK\x03\x04"
_TAR_MAGIC_AT = 257  # "ustar" in a tar header (POSIX and GNU)
# Layers of compression and archives read inside one another (a tar.gz of rotated .log.gz files is three).
_MAX_LAYERS = 4
# What a file may expand to, all layers together: a few hundred bytes of bzip2 expand to a gigabyte of zeros, which
# the scan would read for many minutes. Past this it is refused as unscanned ("upload it unpacked").
_EXPANSION_FLOOR, _EXPANSION_RATIO, _EXPANSION_CEILING = 64 << 20, 50, 1 << 30


def _compression(head: bytes) -> str | None:
    """The container a stream's first bytes show: "zip", "stream" (gzip, bzip2, xz), "tar", a format the scanner
    cannot read (zstd, ...), or None."""
    if head.startswith(_ZIP):
        return "zip"
    if any(head.startswith(magic) for magic in _DECOMPRESSORS):
        return "stream"
    if head[_TAR_MAGIC_AT:_TAR_MAGIC_AT + 5] == b"ustar":
        return "tar"
    return next((name for magic, name in _UNSCANNABLE.items() if head.startswith(magic)), None)


class _Expansion:
    """The decompressed bytes a file's layers have produced, against its limit."""

    def __init__(self, compressed_size: int) -> None:
        self.limit = min(_EXPANSION_CEILING, max(_EXPANSION_FLOOR, _EXPANSION_RATIO * compressed_size))
        self.total = 0

    def reader(self, stream: BinaryIO) -> BinaryIO:
        expansion = self

        class Counted(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer) -> int:
                data = stream.read(len(buffer))
                expansion.total += len(data)
                if expansion.total > expansion.limit:
                    raise OSError(f"it expands past {expansion.limit:,} bytes (a decompression bomb?), which the "
                                  "scanner does not read through: upload it unpacked")
                buffer[:len(data)] = data
                return len(data)

        return io.BufferedReader(Counted(), buffer_size=1 << 20)


class _LayerError(OSError):
    """A layer of compression or archive that does not open (cut short, another format with the same first bytes)."""


def _scan_layers(scanner: _Scanner, stream: BinaryIO, where: str, expansion: _Expansion,
                 depth: int) -> list[tuple[str, str, str]]:
    """Findings in `stream`, read through every layer of compression or archive its first bytes show (`where`
    prefixes each place). Raises `_LayerError` for a layer that does not open, OSError for what is not read (too
    many layers, a format the standard library lacks, an expansion past its limit)."""
    stream = stream if hasattr(stream, "peek") else io.BufferedReader(stream)
    kind = _compression(stream.peek(_TAR_MAGIC_AT + 8)[:_TAR_MAGIC_AT + 8])
    if kind is None:
        return [(f"{where}byte {at}", found, text) for at, found, text in _scan_sequential(scanner, stream)]
    if depth >= _MAX_LAYERS:
        raise OSError(f"{where.strip() or 'it'} is compressed more than {_MAX_LAYERS} layers deep, which the scanner "
                      "does not read: upload it unpacked")
    if kind not in ("stream", "zip", "tar"):
        raise OSError(f"{where}compressed ({kind}), which the scanner cannot read: upload it unpacked")
    try:
        if kind == "stream":
            opener = next(opener for magic, opener in _DECOMPRESSORS.items() if stream.peek(8).startswith(magic))
            with opener(fileobj=stream, mode="rb") if opener is gzip.GzipFile else opener(stream) as inner:
                return _scan_layers(scanner, expansion.reader(inner), where + "decompressed ", expansion, depth + 1)
        if kind == "tar":
            hits = []
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    # Its names (a member under /home/alice/...) and link targets, then its bytes.
                    names = f"{member.name}\n{member.linkname}".encode("utf-8", "surrogateescape")
                    hits += [(f"{where}member name {member.name!r}", found, text)
                             for _, found, text in scanner.scan(names)]
                    if member.isfile():
                        hits += _scan_layers(scanner, expansion.reader(archive.extractfile(member)),
                                             f"{where}member {member.name} ", expansion, depth + 1)
            return hits
        with tempfile.TemporaryFile() if not stream.seekable() else contextlib.nullcontext(stream) as seekable:
            if seekable is not stream:  # a zip inside a stream: zipfile reads its directory at the end
                shutil.copyfileobj(stream, seekable)
            hits = []
            with zipfile.ZipFile(seekable) as archive:
                for member in archive.infolist():
                    if member.is_dir():
                        continue
                    place = f"{where}member {member.filename} "
                    try:
                        with archive.open(member) as handle:
                            hits += _scan_layers(scanner, expansion.reader(handle), place, expansion, depth + 1)
                    except _LayerError:
                        # Bytes that only looked compressed (a tensor of a torch.save archive starting with a magic
                        # by chance): read as they are.
                        with archive.open(member) as handle:
                            hits += [(f"{place}byte {at}", found, text)
                                     for at, found, text in _scan_sequential(scanner, expansion.reader(handle))]
            return hits
    except (EOFError, lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, NotImplementedError,
            gzip.BadGzipFile, zlib.error, ValueError) as error:
        raise _LayerError(f"{where}a {kind} layer that does not open ({' '.join(str(error).split())})") from None


def _scan_compressed(scanner: _Scanner, path: Path) -> list[tuple[str, str, str]]:
    """Findings in a compressed file or archive, read through its layers (`_scan_layers`)."""
    expansion = _Expansion(path.stat().st_size)
    with path.open("rb") as raw:
        return _scan_layers(scanner, raw, "", expansion, 0)


def _safetensors_header_length(path: Path) -> int | None:
    """Bytes of the 8-byte length prefix plus the JSON header of a safetensors file; None when it is not one."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        return None
    length = int.from_bytes(prefix, "little")
    return 8 + length if 8 + length <= path.stat().st_size else None


def _string_values(array) -> Iterable[tuple[str, bytes]]:
    """(field path, newline-joined values) of every string array inside an Arrow array (structs, lists, maps and
    extension types followed; a map's keys and values both)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if isinstance(kind, pa.ExtensionType):
        yield from _string_values(array.storage)
    elif pa.types.is_struct(kind):
        for index, child in enumerate(array.flatten()):
            for name, values in _string_values(child):
                yield f"{kind.field(index).name}.{name}" if name else kind.field(index).name, values
    elif pa.types.is_map(kind):  # before the lists: a map array is a list array of (key, value) structs
        for name, child in (("key", array.keys), ("value", array.items)):
            for field_path, values in _string_values(child):
                yield f"{name}.{field_path}" if field_path else name, values
    elif any(test(kind) for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list,
                                     pa.types.is_list_view, pa.types.is_large_list_view)):
        yield from _string_values(array.flatten())
    elif pa.types.is_dictionary(kind):
        yield from _string_values(array.dictionary)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        values = pc.drop_null(array).cast(pa.string())
        if len(values):
            joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values), "\n")
            yield "", joined[0].as_py().encode("utf-8")
    elif (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
          or pa.types.is_fixed_size_binary(kind)):
        # Embedded files (a datasets.Image column's bytes): whatever a row's file held travels with it, a token in
        # a file that only claimed to be an image included. Each value on its own: they are not text.
        for value in pc.drop_null(array):
            yield "", value.as_py()


def _field_names(fields) -> Iterable[str]:
    """The names of `fields` and of every field nested in them (a struct's fields, a list's or map's children)."""
    import pyarrow as pa

    for field in fields:
        yield field.name
        kind = field.type.storage_type if isinstance(field.type, pa.ExtensionType) else field.type
        if pa.types.is_map(kind):
            yield from _field_names([kind.key_field, kind.item_field])
        elif pa.types.is_struct(kind):
            yield from _field_names(kind.fields)
        elif hasattr(kind, "value_field"):  # the list types
            yield from _field_names([kind.value_field])


def _scan_parquet(file_scanner: _Scanner, row_scanner: _Scanner, path: Path) -> list[tuple[str, str, str]]:
    """The key-value metadata and column names (nested ones included) of a Parquet file with every rule; the decoded
    values of its string columns with the row rules (their min/max statistics in the footer are row values too, so
    the footer bytes are not scanned raw)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    found = []
    try:
        parquet = pq.ParquetFile(path)
        for key, value in (parquet.metadata.metadata or {}).items():
            found += [(f"metadata {key.decode('utf-8', 'replace')}", kind, text)
                      for _, kind, text in file_scanner.scan(key + b"\n" + value)]
        names = "\n".join(_field_names(parquet.schema_arrow)).encode("utf-8")
        found += [("column names", kind, text) for _, kind, text in file_scanner.scan(names)]
        embedded = any(pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type) or
                       pa.types.is_nested(field.type) for field in parquet.schema_arrow)
        # Rows with embedded files are read a few hundred at a time (a batch of 4096 images would be gigabytes).
        for batch in parquet.iter_batches(batch_size=256 if embedded else 4096):
            for name, column in zip(batch.schema.names, batch.columns):
                for field_path, values in _string_values(column):
                    column_name = f"{name}.{field_path}" if field_path else name
                    found += [(f"column {column_name}", kind, text) for _, kind, text in row_scanner.scan(values)]
    except pa.ArrowException as error:  # cut short, not Parquet at all, or a type pyarrow cannot read
        found.append(_unreadable(error))
    return list(dict.fromkeys(found))


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_TAR_MAGIC_AT + 8)


def _unreadable(error: BaseException) -> tuple[str, str, str]:
    """The finding for a file the scan could not read: why, on one line."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return "not scanned", UNREADABLE, reason[:300]


def scan_upload_set(folder: str | Path, files: Sequence[str], *, tokens: Iterable[str | None] = (),
                    folders: Iterable[str | Path | None] = (), user_name: str | None = None,
                    dataset_rows: bool = False) -> list[Finding]:
    """Every token, absolute local path and user name in `files` (relative to `folder`) and in their names, as the
    module docstring describes. Returns the findings, file by file in the order of `files`; an empty list means the
    set may go up.

    Args:
        tokens: secrets to look for on top of :func:`known_tokens` (`--hub_token`).
        folders: local folders to look for on top of home and the working directory (`output_dir`, data roots).
        user_name: the user name to look for; default `getpass.getuser()`.
        dataset_rows: the Parquet files are a dataset's rows (a data recipe's shards): their string values are
            upstream content, scanned with the row rules. Otherwise (a model push: a user's `eval/preds.parquet`)
            they are the user's own output, scanned with every rule, as the same rows in a .csv are.
    """
    folder = Path(folder)
    secrets = known_tokens(*tokens)
    others = [value for value in known_secrets() if value not in secrets]
    paths = local_folders(*folders)
    user = _current_user() if user_name is None else user_name
    file_scanner = _Scanner(secrets, paths, user, secrets=others)
    row_scanner = (_Scanner(secrets, _row_folders(paths), user, row_values=True, secrets=others) if dataset_rows
                   else file_scanner)
    findings = []
    for name in files:
        hits = _scan_name(file_scanner, name) + _scan_file(file_scanner, row_scanner, folder / name, name)
        findings += [Finding(name, where, kind, text) for where, kind, text in hits]
    return findings


def _scan_name(scanner: _Scanner, name: str) -> list[tuple[str, str, str]]:
    """Findings in a file's relative name, which goes up as a repository path: as it is (a token, the user name
    between two slashes) and, for a part that opens with `__`, with `__` read as `/`: lmms-eval names an output
    folder by the model's path so, an absolute one as `__home__alice__runs__x`, a Hub id as `alice__croc-7b` (a
    namespace, which may be the user's name and is no local fact)."""
    absolute = [part.replace("__", "/") for part in name.split("/") if part.startswith("__")]
    forms = [name, *absolute]
    text = "\n".join(forms).encode("utf-8", "surrogateescape")
    return list(dict.fromkeys(("file name", kind, found) for _, kind, found in scanner.scan(text)))


def _scan_file(file_scanner: _Scanner, row_scanner: _Scanner, path: Path, name: str) -> list[tuple[str, str, str]]:
    """Findings in the bytes of one file of the set (`name`: its relative name). Never opens what is not a regular
    file: a named pipe would block the scan (and the push) forever, a device never ends."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return [("not scanned", UNREADABLE, "not a regular file (a named pipe, socket or device): keep it out of "
                                                "the upload")]
        if name.endswith(".parquet"):
            return _scan_parquet(file_scanner, row_scanner, path)
        if name.endswith(".safetensors") and (header := _safetensors_header_length(path)) is not None:
            return [(f"header byte {offset}", kind, text)
                    for offset, kind, text in _scan_stream(file_scanner, path, 0, header)]
        if _compression(_head(path)) is not None:
            return _scan_compressed(file_scanner, path)
        return [(f"byte {offset}", kind, text) for offset, kind, text in _scan_stream(file_scanner, path)]
    except (OSError, EOFError, lzma.LZMAError) as error:  # gone, unreadable, a folder, a stream cut short:
        return [_unreadable(error)]  # what goes up would be unscanned bytes


def check_upload_set(folder: str | Path, files: Sequence[str], *, tokens: Iterable[str | None] = (),
                     folders: Iterable[str | Path | None] = (), user_name: str | None = None,
                     dataset_rows: bool = False) -> None:
    """:func:`scan_upload_set`, raising :class:`UploadLeakError` (one line: the first finding, then how many more
    and in which files) when it finds anything, a file it could not read included (`dataset_rows`: as there)."""
    findings = scan_upload_set(folder, files, tokens=tokens, folders=folders, user_name=user_name,
                               dataset_rows=dataset_rows)
    if not findings:
        return
    others = sorted({finding.file for finding in findings[1:]})
    more = f"; {len(findings) - 1} more finding(s) in {', '.join(others)}" if len(findings) > 1 else ""
    advice = ("repair the file or keep it out of the upload" if findings[0].kind == UNREADABLE
              else "remove it from the file or keep the file out of the upload")
    raise UploadLeakError(f"refusing to publish {folder}: {findings[0]}{more}; {advice} (nothing was uploaded)",
                          findings)


def push_files(folder: str | Path, files: Sequence[str], repo_id: str, *, repo_type: str, commit_message: str,
               token: str | None = None, private: bool | None = None, revision: str | None = None,
               delete_patterns: Sequence[str] = (), folders: Iterable[str | Path | None] = (),
               dataset_rows: bool = False) -> CommitInfo:
    """Upload exactly `files` of `folder` (relative paths, kept as paths in the repository) to `repo_id` in one
    commit, after :func:`check_upload_set`; the repository is created when missing (`private` applies then).

    `delete_patterns`: remote files matching these that the commit does not rewrite are deleted in the same commit
    (the shards of an earlier, larger push). `dataset_rows`: the Parquet files are a dataset's rows
    (:func:`scan_upload_set`)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils import filter_repo_objects

    check_upload_set(folder, files, tokens=[token], folders=folders, dataset_rows=dataset_rows)
    api = HfApi()
    repo = api.create_repo(repo_id, token=token, private=private, repo_type=repo_type, exist_ok=True)
    operations: list = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name))
                        for name in files]
    if delete_patterns:
        remote = api.list_repo_files(repo.repo_id, repo_type=repo_type, revision=revision, token=token)
        stale = [name for name in filter_repo_objects(remote, allow_patterns=list(delete_patterns))
                 if name not in set(files)]
        operations = [CommitOperationDelete(path_in_repo=name) for name in stale] + operations
    return api.create_commit(repo.repo_id, operations, commit_message=commit_message, token=token,
                             repo_type=repo_type, revision=revision)


__all__ = [
    "CHUNK_BYTES",
    "LOCAL_PATH",
    "LOCAL_ROOTS",
    "SECRET",
    "SECRET_PATTERNS",
    "TOKEN",
    "TOKEN_ENVIRONMENT",
    "TOKEN_PATTERN",
    "UNREADABLE",
    "USER_NAME",
    "Finding",
    "UploadLeakError",
    "check_upload_set",
    "known_secrets",
    "known_tokens",
    "local_folders",
    "push_files",
    "scan_upload_set",
]
