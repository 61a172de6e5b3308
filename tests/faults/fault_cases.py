"""The faults of issue 13, as files and rows, with the outcome each must have (shared by the tests/faults modules;
the module name is unique on purpose: the test tree has no __init__.py files).

`write_fault_folder(root)` lays out a LLaVA-style folder: `images/` with good and broken image files, a file outside
the root, and `rows.json` holding one row per case plus good rows. `ROW_OUTCOMES` says what the validator must make
of every row: a reject reason, or None (kept).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modeling_croc.constants import MAX_IMAGE_PIXELS

# 16-bit grey values and their 8-bit readings, computed by hand: round(v * 255 / 65535) (= v / 257).
GREY16 = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
GREY16_AS_8BIT = [0, 128, 255, 4]
# An RGBA strip: (stored colour, alpha). Alpha 0 must become the background exactly whatever colour is stored, 255
# the colour itself, 51 (= 0.2) the blend (200 * 51 + 122 * 204 + 127) // 255 = 138 on a 122 background.
RGBA_PIXELS = [((0, 255, 0), 0), ((200, 10, 250), 255), ((200, 200, 200), 51)]


def _conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def image_row(row_id: str, image: str, answer: str = "A shape.") -> dict[str, Any]:
    return {"id": row_id, "image": image, "conversations": _conversation("<image>\nDescribe the image.", answer)}


def text_row(row_id: str, answer: str = "Four.") -> dict[str, Any]:
    return {"id": row_id, "conversations": _conversation("What is two plus two?", answer)}


def jpeg_bytes(seed: int = 0, size: int = 64) -> bytes:
    noise = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG cut at 60%: `Image.verify()` passes it, decoding fails ("image file is truncated")."""
    data = jpeg_bytes(1)
    return data[: len(data) * 6 // 10]


def corrupt_jpeg() -> bytes:
    """A JPEG whose Huffman table is overwritten: headers intact (`verify()` passes), the data does not decode."""
    data = bytearray(jpeg_bytes(2))
    table = data.index(b"\xff\xc4")
    for i in range(table + 5, table + 25):
        data[i] = 0xFF if i % 2 else 0x00
    return bytes(data)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` 8-bit grey pixels and holds almost none: a decompression bomb's header,
    which a reader must refuse from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def write_good_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (56, 56)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (245, 245, 245))
    image.paste(colour, (12, 12, size[0] - 12, size[1] - 12))
    image.save(path)


def write_rgba(path: Path) -> None:
    pixels = np.array([[[*colour, alpha] for colour, alpha in RGBA_PIXELS]], dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)


def write_la(path: Path) -> None:
    # Grey 90 fully transparent, grey 90 opaque.
    Image.fromarray(np.array([[[90, 0], [90, 255]]], dtype=np.uint8), "LA").save(path)


def write_grey16(path: Path) -> None:
    Image.fromarray(GREY16).save(path)  # mode I;16: a 16-bit greyscale PNG


GOOD_COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30), (140, 60, 180), (245, 135, 30)]

# Image files under images/ (name -> writer); "missing.png" is named by a row but never written.
IMAGE_FILES = {
    "empty.jpg": lambda p: p.write_bytes(b""),
    "truncated.jpg": lambda p: p.write_bytes(truncated_jpeg()),
    "corrupt.jpg": lambda p: p.write_bytes(corrupt_jpeg()),
    "bomb.png": lambda p: p.write_bytes(png_header(100_000, 100_000)),
    # Over PIL's warning level (and this project's limit) but under its error level: PIL alone would decode it.
    "oversize.png": lambda p: p.write_bytes(png_header(10_000, MAX_IMAGE_PIXELS // 10_000 + 1)),
    "rgba.png": write_rgba,
    "la.png": write_la,
    "grey16.png": write_grey16,
    # A 160-byte banner: 40,000 pixels, but 1 x 40000 (aspect ratio 40000 > 200) that the pad aspect ratio would make
    # a 40000 x 40000 square (issue 20).
    "banner.png": lambda p: Image.new("L", (1, 40_000), 128).save(p),
    # 32-bit floating point (a scientific TIFF): no defined 8-bit range, so refused rather than guessed.
    "float.tif": lambda p: Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(p),
}

# Every case of the issue that is a row: id -> (row or a non-object record, the validator's verdict).
# Verdicts of image rows whose file decodes at training time are the same on every path; see the tests for when
# each is found (start or training).
ROW_CASES: dict[str, tuple[Any, str | None]] = {
    "missing": (image_row("missing", "images/missing.png"), "missing_image"),
    "zero-byte": (image_row("zero-byte", "images/empty.jpg"), "unreadable_image"),
    "truncated-jpeg": (image_row("truncated-jpeg", "images/truncated.jpg"), "unreadable_image"),
    "corrupt-jpeg": (image_row("corrupt-jpeg", "images/corrupt.jpg"), "unreadable_image"),
    "bomb": (image_row("bomb", "images/bomb.png"), "image_too_large"),
    "oversize": (image_row("oversize", "images/oversize.png"), "image_too_large"),
    "banner": (image_row("banner", "images/banner.png"), "extreme_aspect_ratio"),
    "rgba": (image_row("rgba", "images/rgba.png"), None),
    "la": (image_row("la", "images/la.png"), None),
    "grey16": (image_row("grey16", "images/grey16.png"), None),
    "float-image": (image_row("float-image", "images/float.tif"), "unsupported_image_mode"),
    "dotdot": (image_row("dotdot", "images/../../outside.png"), "image_outside_root"),
    "absolute": (None, "image_outside_root"),  # filled in by write_fault_folder: needs the folder's absolute path
    "turn-order": ({"id": "turn-order", "conversations": [
        {"from": "human", "value": "Q1"}, {"from": "human", "value": "Q2"},
        {"from": "gpt", "value": "A1"}, {"from": "gpt", "value": "A2"}]}, "bad_turn_order"),
    "gpt-first": ({"id": "gpt-first", "conversations": [
        {"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]}, "bad_turn_order"),
    "empty-user-turn": ({"id": "empty-user-turn", "image": "images/good-0.png", "conversations": _conversation(
        " \n ", "A red square.")}, "empty_turn"),
    "two-markers": ({"id": "two-markers", "image": "images/good-0.png", "conversations": _conversation(
        "<image>\n<image>\nDescribe.", "A red square.")}, "too_many_image_markers"),
    "no-marker": ({"id": "no-marker", "image": "images/good-0.png", "conversations": _conversation(
        "Describe the image.", "A red square.")}, "no_image_marker"),
    "marker-on-text": ({"id": "marker-on-text", "conversations": _conversation("<image>\nQ?", "A.")},
                       "too_many_image_markers"),
    "not-an-object": ("this row is a string", "malformed_row"),
    "turn-not-an-object": ({"id": "turn-not-an-object", "conversations": ["Q?", "A."]}, "malformed_row"),
    # A JSON `\ud800` escape with no pair: Python reads it, Arrow and tokenizers cannot encode it.
    "lone-surrogate": ({"id": "lone-surrogate", "conversations": _conversation("What is \ud800?", "A.")},
                       "invalid_text"),
    "bad-from": ({"id": "bad-from", "conversations": [
        {"from": "user", "value": "Q?"}, {"from": "assistant", "value": "A."}]}, "unknown_role"),
    "two-images": ({"id": "two-images", "image": ["images/good-0.png", "images/good-1.png"],
                    "conversations": _conversation("<image>\nDescribe.", "Two shapes.")}, "multiple_images"),
    "duplicate-row": (image_row("good-1", "images/good-1.png", "A shape, again."), "duplicate_row"),  # = good-1
    "duplicate-id": (text_row("text-0", "Still four."), None),  # same id as text-0, other turns: kept, counted
}


def good_rows() -> list[dict[str, Any]]:
    rows = [image_row(f"good-{i}", f"images/good-{i}.png", f"A shape of colour {i}.") for i in range(6)]
    rows[1] = image_row("good-1", "images/good-1.png", "A shape, again.")  # the original of duplicate-row
    return rows + [text_row(f"text-{i}", f"{2 + i}.") for i in range(4)]


def write_fault_folder(root: Path) -> dict[str, Any]:
    """Write the folder; returns {"rows": [...], "expected": {row id: verdict}, "not_an_object_id": str}."""
    images = root / "images"
    for i, colour in enumerate(GOOD_COLOURS):
        write_good_image(images / f"good-{i}.png", colour)
    for name, writer in IMAGE_FILES.items():
        writer(images / name)
    write_good_image(root.parent / "outside.png", (0, 0, 0))  # exists, but outside the image root
    cases = dict(ROW_CASES)
    cases["absolute"] = (image_row("absolute", str((images / "good-2.png").absolute())), "image_outside_root")
    rows: list[Any] = good_rows()
    expected: dict[str, str | None] = {row["id"]: None for row in rows}
    not_an_object_id = ""
    for case, (row, verdict) in cases.items():
        if not isinstance(row, dict):
            # A record that is not an object has no id of its own: rows name it by source and position.
            not_an_object_id = f"llava_json-{len(rows)}"
            expected[not_an_object_id] = verdict
        elif case == "duplicate-row":
            expected["good-1#2"] = verdict  # the second row with id good-1
        elif case == "duplicate-id":
            expected["text-0#2"] = verdict
        else:
            expected[row["id"]] = verdict
        rows.append(row)
    (root / "rows.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return {"rows": rows, "expected": expected, "not_an_object_id": not_an_object_id}


def verdicts(rows: list[dict[str, Any]], reasons: list[str | None]) -> dict[str, Any]:
    """{row id: reason} for validated rows in file order, a repeated id getting `#2`, `#3`..."""
    seen: dict[str, int] = {}
    out = {}
    for row, reason in zip(rows, reasons):
        row_id = row["id"]
        seen[row_id] = seen.get(row_id, 0) + 1
        key = row_id if seen[row_id] == 1 else f"{row_id}#{seen[row_id]}"
        out[key] = reason
    return out
