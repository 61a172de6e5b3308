"""Image files -> the RGB pixels Croc trains and chats on, or the reason they cannot be used.

One reader for every place that opens an image file: the recipe validator (`data_recipes.validation`), the trainer's
dataset (`trainer.data`) and `modeling_croc.chat`. An image that passes validation is therefore read at training time
exactly as it was checked, and a model is prompted with the pixels it was trained on.

What it does beyond `Image.open(path).convert("RGB")`:

* decodes the whole file (`load()`): `Image.open` and `Image.verify()` read headers only, so truncated or corrupt
  JPEG data would pass a check and fail later, in the middle of a run;
* refuses an image with more than `MAX_IMAGE_PIXELS` pixels from its header, before decoding anything (decompression
  bombs, over-size scans);
* composites transparency (RGBA, LA, PA, palette or colour-key transparency) onto a background colour: the trainer and
  the chat pass the colour the `pad` aspect ratio fills with (`modeling_croc.processing_croc.pad_colour`), so a
  transparent pixel looks like padding instead of whatever colour happens to be stored under it;
* rescales 16-bit greyscale (`I;16*`, and `I` within 16 bits) to 8 bits, v * 255 / 65535 rounded, where
  `convert("RGB")` clips every value above 255 to white.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from .constants import MAX_IMAGE_PIXELS

# Why an image cannot be used, in the order the checks run. `data_recipes.validation.REJECT_REASONS` includes these.
IMAGE_REJECT_REASONS: dict[str, str] = {
    "image_outside_root": "the image path is absolute or leaves the image root (`..`)",
    "missing_image": "the image file does not exist under the image root",
    "unreadable_image": "the file is empty, truncated or not an image PIL can decode",
    "image_too_large": f"more than {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb or an over-size image)",
    "unsupported_image_mode": "a pixel format with no 8-bit RGB reading (floating point, integers beyond 16 bits)",
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageFileError(ValueError):
    """An image that cannot be used: `reason` is a key of `IMAGE_REJECT_REASONS`, `detail` says what was found."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def resolve_image_path(image_root: str | os.PathLike, image: str) -> Path:
    """`image_root / image`, refusing an `image` that is absolute or climbs out of the root with `..`.

    The test is on the path as written, not on the resolved file: a symbolic link inside the root (a dataset folder
    mounted elsewhere) is the data's own layout, while a row naming `/etc/...` or `../../x` is a data error.
    """
    if not image or os.path.isabs(image) or image.startswith(("/", "\\")) or Path(image).drive:
        raise ImageFileError("image_outside_root", f"{image!r} is an absolute path; rows name images relative to "
                             "the image root")
    normal = os.path.normpath(image)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise ImageFileError("image_outside_root", f"{image!r} leaves the image root {str(image_root)!r}")
    return Path(image_root) / normal


def check_image_path(path: str | os.PathLike) -> None:
    """Cheap checks of an image file without opening it: it exists, is a file and is not empty."""
    try:
        size = os.stat(path).st_size
    except OSError:
        raise ImageFileError("missing_image", str(path)) from None
    if not os.path.isfile(path):
        raise ImageFileError("missing_image", f"{path} is not a file")
    if size == 0:
        raise ImageFileError("unreadable_image", f"{path} is empty (0 bytes)")


def load_image(
    path: str | os.PathLike | BinaryIO,
    background: Sequence[int] = (0, 0, 0),
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """The image at `path` (or in an open binary file: the bytes a `datasets.Image` column embeds) as a fully decoded
    8-bit RGB image; raises `ImageFileError` with a reason otherwise.

    Args:
        background: RGB colour transparent pixels are composited onto (the trainer passes `pad_colour(...)`).
        max_pixels: the largest width x height accepted, checked from the header before decoding.
    """
    if isinstance(path, (str, os.PathLike)):
        check_image_path(path)
    with warnings.catch_warnings():
        # The size is checked below against `max_pixels`; PIL's own warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageFileError("image_too_large", f"{path}: {width} x {height} = {width * height:,} "
                                         f"pixels > {max_pixels:,}")
                image.load()
                return to_rgb(image, background)
        except ImageFileError:
            raise
        except Image.DecompressionBombError as error:
            raise ImageFileError("image_too_large", f"{path}: {error}") from None
        except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error, ValueError...)
            raise ImageFileError("unreadable_image", f"{path}: {type(error).__name__}: {error}") from None


def to_rgb(image: Image.Image, background: Sequence[int] = (0, 0, 0)) -> Image.Image:
    """A decoded image as 8-bit RGB: transparency composited onto `background`, 16-bit grey rescaled."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageFileError("unsupported_image_mode", f"mode {mode} with values outside 0..65535")
        # Round to nearest: v * 255 / 65535 (= v / 257), so 65535 -> 255 and 32896 -> 128 instead of clipping.
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        raise ImageFileError("unsupported_image_mode", "mode F (32-bit floating point) has no defined 8-bit range")
    has_alpha = "A" in image.getbands() or "a" in mode or "transparency" in image.info
    try:
        if not has_alpha:
            return image.convert("RGB")
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
    except ValueError as error:  # a mode PIL cannot turn into RGB (e.g. LAB)
        raise ImageFileError("unsupported_image_mode", f"mode {mode}: {error}") from None
    alpha = rgba[..., 3:4]
    colour = np.asarray(tuple(background)[:3], dtype=np.uint32)
    # Integer "over" onto an opaque background, rounded: alpha 0 gives the background exactly, 255 the pixel.
    blended = (rgba[..., :3] * alpha + colour * (255 - alpha) + 127) // 255
    return Image.fromarray(blended.astype(np.uint8), "RGB")


__all__ = ["IMAGE_REJECT_REASONS", "ImageFileError", "check_image_path", "load_image", "resolve_image_path",
           "to_rgb"]
