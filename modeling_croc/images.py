"""Image files -> the RGB pixels Croc trains and chats on, or the reason they cannot be used.

One reader for every place that opens an image file: the recipe validator (`data_recipes.validation`), the trainer's
dataset (`trainer.data`) and `modeling_croc.chat`. An image that passes validation is therefore read at training time
exactly as it was checked, and a model is prompted with the pixels it was trained on.

What it does beyond `Image.open(path).convert("RGB")`:

* decodes the whole file (`load()`): `Image.open` and `Image.verify()` read headers only, so truncated or corrupt
  JPEG data would pass a check and fail later, in the middle of a run;
* refuses, from the header and before decoding anything, an image whose size no square vision tower can use
  (`ImageLimits`): more than `MAX_IMAGE_PIXELS` pixels (decompression bombs, over-size scans), a long side more than
  `MAX_ASPECT_RATIO` times the short side (banners, strips), or a size for which the image processor would allocate
  an intermediate image of more than `MAX_PREPROCESS_PIXELS` pixels (`preprocessing_footprint`: LLaVA's pad to a
  square turns a 243-byte 1 x 40000 PNG into 40000 x 40000 pixels, CLIP's shortest-edge resize into 336 x 13.4M);
* composites transparency (RGBA, LA, PA, palette or colour-key transparency) onto a background colour: the trainer and
  the chat pass the colour the `pad` aspect ratio fills with (`modeling_croc.processing_croc.pad_colour`), so a
  transparent pixel looks like padding instead of whatever colour happens to be stored under it;
* rescales 16-bit greyscale (`I;16*`, and `I` within 16 bits) to 8 bits, v * 255 / 65535 rounded, where
  `convert("RGB")` clips every value above 255 to white.

What it leaves as LLaVA's loader does: EXIF orientation is not applied; an image is read as its pixels are stored (a
phone photo tagged "rotate 90 degrees" trains sideways), as the released code that the `official` preset reproduces
reads it.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .constants import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MAX_PREPROCESS_PIXELS

# Why an image cannot be used, in the order the checks run. `data_recipes.validation.REJECT_REASONS` includes these.
IMAGE_REJECT_REASONS: dict[str, str] = {
    "image_outside_root": "the image path is absolute or leaves the image root (`..`)",
    "missing_image": "the image file does not exist under the image root",
    "unreadable_image": "the file is empty, truncated or not an image PIL can decode",
    "extreme_aspect_ratio": f"the long side is more than {MAX_ASPECT_RATIO:g} times the short side (a banner or a "
                            "strip, which preprocessing pads or resizes to an enormous image)",
    "image_too_large": f"more than {MAX_IMAGE_PIXELS:,} pixels, or preprocessing would allocate an image of more than "
                       f"{MAX_PREPROCESS_PIXELS:,} pixels (a decompression bomb, an over-size scan or panorama)",
    "unsupported_image_mode": "a pixel format with no 8-bit RGB reading (floating point, integers beyond 16 bits)",
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageFileError(ValueError):
    """An image that cannot be used: `reason` is a key of `IMAGE_REJECT_REASONS`, `detail` says what was found."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class ImageLimits:
    """The image sizes a reader accepts, checked from the header before anything is decoded (`check_image_size`).

    Args:
        max_pixels: the largest decoded width x height.
        max_preprocess_pixels: the largest intermediate image any preprocessing step may allocate
            (`preprocessing_footprint`), in pixels.
        max_aspect_ratio: the largest long side / short side.

    Frozen and made of numbers, so it pickles into the process pool of `data_recipes.validation.check_image_files`.
    """

    max_pixels: int = MAX_IMAGE_PIXELS
    max_preprocess_pixels: int = MAX_PREPROCESS_PIXELS
    max_aspect_ratio: float = MAX_ASPECT_RATIO

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_preprocess_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"ImageLimits.{name} must be a positive integer (pixels), got {value!r}")
        ratio = self.max_aspect_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not ratio >= 1:
            raise ValueError(f"ImageLimits.max_aspect_ratio must be a number >= 1 (long side / short side), got "
                             f"{ratio!r}")


def resolve_image_path(image_root: str | os.PathLike, image: str) -> Path:
    """`image_root / image`, refusing an `image` that is absolute or climbs out of the root with `..`.

    The test is on the path as written, not on the resolved file: a symbolic link inside the root (a dataset folder
    mounted elsewhere) is the data's own layout, while a row naming `/etc/...` or `../../x` is a data error.
    """
    if image and "\x00" in image:
        raise ImageFileError("missing_image", f"{image!r} holds a NUL character, which no file name can")
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
    except (OSError, ValueError):  # ValueError: a NUL in the name
        raise ImageFileError("missing_image", str(path)) from None
    if not os.path.isfile(path):
        raise ImageFileError("missing_image", f"{path} is not a file")
    if size == 0:
        raise ImageFileError("unreadable_image", f"{path} is empty (0 bytes)")


@contextmanager
def _opened(source: str | os.PathLike | BinaryIO) -> Iterator[Image.Image]:
    """`Image.open(source)` (the header only) with this module's reasons: a missing file, one PIL cannot identify or
    one over PIL's own decompression-bomb limit raise `ImageFileError`, as does anything failing in the `with` body
    (decoding). The file is closed on exit when it was opened here."""
    if isinstance(source, (str, os.PathLike)):
        check_image_path(source)
    name = source if isinstance(source, (str, os.PathLike)) else "embedded image bytes"
    with warnings.catch_warnings():
        # Sizes are checked against `ImageLimits`; PIL's own warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                yield image
        except ImageFileError:
            raise
        except Image.DecompressionBombError as error:
            raise ImageFileError("image_too_large", f"{name}: {error}") from None
        except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error, ValueError...)
            raise ImageFileError("unreadable_image", f"{name}: {type(error).__name__}: {error}") from None


def read_image_size(source: str | os.PathLike | BinaryIO) -> tuple[int, int]:
    """(width, height) of the image at `source` (a path, or an open binary file such as the `io.BytesIO` of a
    `datasets.Image` value's bytes) from its header alone: nothing is decoded. An open file is left at the position
    it had. Raises `ImageFileError` ("missing_image", "unreadable_image", or "image_too_large" past PIL's own
    decompression-bomb error level, 2 * PIL.Image.MAX_IMAGE_PIXELS) as `load_image` does."""
    position = None
    if not isinstance(source, (str, os.PathLike)) and source.seekable():
        position = source.tell()
    try:
        with _opened(source) as image:
            return image.size
    finally:
        if position is not None:
            source.seek(position)


def check_image_size(width: int, height: int, limits: ImageLimits | None = None, image_processor: Any = None) -> None:
    """Raise `ImageFileError` when a `width` x `height` image is outside `limits` (default `ImageLimits()`).

    Reasons, in this order: "unreadable_image" for a side of 0 pixels; "extreme_aspect_ratio" when long side / short
    side > `max_aspect_ratio`, or when the image processor's resize would leave a side of 0 pixels (Pixtral's, a long
    side over `longest_edge` times the short one); "image_too_large" when width x height > `max_pixels`, or when
    `preprocessing_footprint(width, height, image_processor)` > `max_preprocess_pixels`. The detail names the size,
    what was found, the limit and its `ImageLimits` field, e.g. "1 x 40000: aspect ratio 40000 > 200
    (max_aspect_ratio)".
    """
    limits = ImageLimits() if limits is None else limits
    if width <= 0 or height <= 0:
        raise ImageFileError("unreadable_image", f"{width} x {height}: the header gives a side of 0 pixels")
    long_side, short_side = max(width, height), min(width, height)
    ratio = long_side / short_side
    if ratio > limits.max_aspect_ratio:
        raise ImageFileError("extreme_aspect_ratio", f"{width} x {height}: aspect ratio "
                             f"{_ratio_text(ratio, limits.max_aspect_ratio)} > {limits.max_aspect_ratio:g} "
                             "(max_aspect_ratio)")
    squeezed = _short_side_resized_away(width, height, image_processor)
    if squeezed is not None:
        raise ImageFileError("extreme_aspect_ratio", f"{width} x {height}: {squeezed}")
    if width * height > limits.max_pixels:
        raise ImageFileError("image_too_large", f"{width} x {height} = {width * height:,} pixels > "
                             f"{limits.max_pixels:,} (max_pixels)")
    pixels, step = _largest_step(width, height, image_processor)
    if pixels > limits.max_preprocess_pixels:
        raise ImageFileError("image_too_large", f"{width} x {height}: preprocessing allocates {pixels:,} pixels ({step}) "
                             f"> {limits.max_preprocess_pixels:,} (max_preprocess_pixels)")


def _short_side_resized_away(width: int, height: int, image_processor: Any) -> str | None:
    """Why Pixtral's resize (Mistral 3) would give this image a side of 0 pixels, or None. It scales the long side
    down to `longest_edge` and floors the short side: a strip longer than `longest_edge` times its width loses that
    side, and the image processor raises mid-run. `max_aspect_ratio` (200) only prevents it for a `longest_edge` of
    200 px or more; stage 1.5 bounds `longest_edge` to the prompt pool (`fit_images_to_pool`), and a small pool makes
    it smaller."""
    image_processor = getattr(image_processor, "image_processor", image_processor)
    if image_processor is None or not any(_base_name(cls) == "PixtralImageProcessor"
                                          for cls in type(image_processor).__mro__):
        return None
    longest = _field(getattr(image_processor, "size", None), "longest_edge")
    long_side, short_side = max(width, height), min(width, height)
    if not longest or long_side <= longest:
        return None
    # As transformers' `get_resize_output_image_size` (pixtral) computes it: floor(side / ratio).
    if math.floor(short_side / (long_side / longest)) >= 1:
        return None
    return (f"aspect ratio {_ratio_text(long_side / short_side, longest)} > {longest} ({type(image_processor).__name__} "
            f"resizes the long side to longest_edge={longest} px, leaving the short side 0 px)")


def check_image_header(
    source: str | os.PathLike | BinaryIO, limits: ImageLimits | None = None, image_processor: Any = None
) -> tuple[int, int]:
    """(width, height) of the image at `source` from its header (`read_image_size`), checked against `limits` and the
    footprint of `image_processor` (`check_image_size`) without decoding a pixel: `load_image`'s checks up to and
    including the size, in the same order and with the same reasons and details."""
    width, height = read_image_size(source)
    _check_size_of(source, width, height, limits, image_processor)
    return width, height


def _check_size_of(source: Any, width: int, height: int, limits: ImageLimits | None, image_processor: Any) -> None:
    """`check_image_size`, its detail prefixed with the file it is about."""
    try:
        check_image_size(width, height, limits, image_processor)
    except ImageFileError as error:
        name = source if isinstance(source, (str, os.PathLike)) else "embedded image bytes"
        raise ImageFileError(error.reason, f"{name}: {error.detail}") from None


def _ratio_text(ratio: float, limit: float) -> str:
    """The ratio with at most two decimals, unless rounding would make it look no larger than the limit."""
    text = f"{ratio:.2f}".rstrip("0").rstrip(".")
    return text if float(text) > limit else repr(ratio)


def preprocessing_footprint(width: int, height: int, image_processor: Any = None) -> int:
    """The pixel count of the largest image any step of `image_processor`'s preprocessing allocates for a `width` x
    `height` input: the decoded input itself, a padded square, a resize's output and Pillow's intermediate, a centre
    crop, and for AnyRes the padded grid and the stack of crops. A stack of N crops counts N x width x height.

    Modelled on the installed transformers' image processors (their PIL and torchvision backends alike):

    * `LlavaImageProcessor` (the `pad` aspect ratio, `modeling_croc.processing_croc.with_image_aspect_ratio`): with
      `do_pad`, a square of the long side; then the resize and the centre crop below;
    * `CLIPImageProcessor`: shortest edge resized to `size["shortest_edge"]` keeping the aspect ratio (336 x 13.4M
      for a 1 x 40000 banner at 336), then a centre crop;
    * `SiglipImageProcessor`: a resize to the fixed `size["height"]` x `size["width"]`;
    * `LlavaOnevisionImageProcessor` (AnyRes): the grid resolution `select_best_resolution` picks from
      `image_grid_pinpoints`, the image resized into it and padded to it, the crops stacked with the base image
      resized to `size`; and, since a sample of several images is padded to a square instead, that square too.

    Every resize counts Pillow's horizontal-pass buffer as well (new width x old height when both sides change:
    `ImagingResampleInner`, src/libImaging/Resample.c), which a fixed-size resize of a tall strip makes the largest.
    A shortest-edge resize that also has a `longest_edge` is counted without the cap (an upper bound).

    `image_processor` may also be a whole processor (a `CrocProcessor`): its `image_processor` is used. None: the
    largest over the preprocessing this project uses (pad to a square or not, then a shortest-edge resize to 336 or
    384 with a centre crop, or a fixed 384 x 384 resize; and OneVision's AnyRes at 384 with its default grid), so a
    builder that does not know the model is conservative. An image processor of another class, or with a `size`
    none of these rules read, falls back to the same rule.
    """
    return _largest_step(width, height, image_processor)[0]


# The preprocessing of the vision towers this project trains with, for a caller that does not name its processor:
# (name, pad to square first, resize `size`, centre crop (width, height) or None).
_REFERENCE_PIPELINES: tuple[tuple[str, bool, dict[str, int], tuple[int, int] | None], ...] = tuple(
    (f"{'pad' if pad else 'square'} at {side} px", pad, size, crop)
    for pad in (False, True)
    for side, size, crop in (
        (336, {"shortest_edge": 336}, (336, 336)),  # CLIP ViT-L/14-336 (LLaVA-1.5)
        (384, {"shortest_edge": 384}, (384, 384)),
        (384, {"height": 384, "width": 384}, None),  # SigLIP so400m/14-384
    )
)
_ANYRES_BASE = 384  # OneVision's SigLIP input; its grid is the class default `image_grid_pinpoints`


def _largest_step(width: int, height: int, image_processor: Any) -> tuple[int, str]:
    """(pixels, what allocates them) of the largest step of `preprocessing_footprint`."""
    # A whole processor (a `CrocProcessor`) stands for its image processor.
    image_processor = getattr(image_processor, "image_processor", image_processor)
    steps = _processor_steps(width, height, image_processor) if image_processor is not None else None
    if steps is None:
        steps = [step for name, pad, size, crop in _REFERENCE_PIPELINES
                 for step in _square_steps(width, height, name, pad=pad, size=size, crop=crop)]
        steps += _anyres_steps(width, height, "AnyRes at 384 px", size={"height": _ANYRES_BASE, "width": _ANYRES_BASE},
                               pinpoints=_default_pinpoints(), patch=_ANYRES_BASE, crop=None)
    return max(steps, key=lambda step: step[0])


def _processor_steps(width: int, height: int, image_processor: Any) -> list[tuple[int, str]] | None:
    """The steps of a known image processor class, or None for another class or a `size` the rules do not read."""
    kind = next((name for name in (_base_name(cls) for cls in type(image_processor).__mro__) if name in _KNOWN), None)
    if kind is None:
        return None
    name = type(image_processor).__name__
    do_resize = getattr(image_processor, "do_resize", True)
    size = getattr(image_processor, "size", None) if do_resize is not False else None
    crop_size = getattr(image_processor, "crop_size", None)
    crop = None
    if getattr(image_processor, "do_center_crop", False) and crop_size is not None:
        crop = (_field(crop_size, "width"), _field(crop_size, "height"))
        if not all(crop):
            return None
    if kind == "LlavaOnevisionImageProcessor":
        if size is None:
            return None
        size_height, size_width = _field(size, "height"), _field(size, "width")
        shortest = _field(size, "shortest_edge")
        if not (size_height and size_width) and not shortest:
            return None
        base = {"height": size_height, "width": size_width} if size_height and size_width else \
            {"height": shortest, "width": shortest}
        patch = _field(crop_size, "height") or size_height or shortest
        return _anyres_steps(width, height, name, size=size, pinpoints=image_processor.image_grid_pinpoints,
                             patch=patch, crop=crop, base=base)
    pad = kind == "LlavaImageProcessor" and bool(getattr(image_processor, "do_pad", False))
    return _square_steps(width, height, name, pad=pad, size=size, crop=crop)


# Image processor classes whose preprocessing `preprocessing_footprint` models, without the backend suffix.
_KNOWN = ("LlavaOnevisionImageProcessor", "LlavaImageProcessor", "CLIPImageProcessor", "SiglipImageProcessor")


def _base_name(cls: type) -> str:
    name = cls.__name__
    for suffix in ("Pil", "Fast"):
        name = name.removesuffix(suffix)
    return name


def _field(size: Any, key: str) -> int | None:
    """`size[key]` of an image processor's `size` / `crop_size`: a `SizeDict` (transformers 5) or a dict (4.x)."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)


def _resized(width: int, height: int, size: Any) -> tuple[int, int] | None:
    """(width, height) after transformers' resize to `size`: the shortest edge to `shortest_edge` keeping the aspect
    ratio (the long side rounded down, as `get_resize_output_image_size` does), or the fixed height and width."""
    shortest = _field(size, "shortest_edge")
    if shortest:
        short_side, long_side = (width, height) if width <= height else (height, width)
        new_long = int(shortest * long_side / short_side)
        return (shortest, new_long) if width <= height else (new_long, shortest)
    new_height, new_width = _field(size, "height"), _field(size, "width")
    if new_height and new_width:
        return new_width, new_height
    return None


def _resize_pixels(width: int, height: int, new_width: int, new_height: int) -> int:
    """Pixels a PIL resize holds at once: its output and, when both sides change, the new_width x height image of
    its first (horizontal) pass."""
    both = new_width != width and new_height != height
    return max(new_width * new_height, new_width * height if both else 0)


def _square_steps(width: int, height: int, name: str, *, pad: bool, size: Any,
                  crop: tuple[int, int] | None) -> list[tuple[int, str]] | None:
    """Steps of LLaVA / CLIP / SigLIP preprocessing: the input, pad to a square (`pad`), resize (`size`, None: no
    resize), centre crop (`crop` as (width, height), None: none)."""
    steps = [(width * height, f"{name}: the decoded {width} x {height} image")]
    if pad and width != height:
        side = max(width, height)
        steps.append((side * side, f"{name}: pad to a {side} x {side} square"))
        width = height = side
    if size is not None:
        target = _resized(width, height, size)
        if target is None:
            return None
        steps.append((_resize_pixels(width, height, *target),
                      f"{name}: resize {width} x {height} to {target[0]} x {target[1]}"))
        width, height = target
    if crop is not None:
        crop_width, crop_height = crop
        # transformers' centre crop first pads an image smaller than the crop with zeros to cover it.
        padded = crop_width > width or crop_height > height
        pixels = max(crop_width, width) * max(crop_height, height) if padded else crop_width * crop_height
        steps.append((pixels, f"{name}: centre crop to {crop_width} x {crop_height}"))
    return steps


def _anyres_steps(width: int, height: int, name: str, *, size: Any, pinpoints: Sequence[Sequence[int]], patch: int,
                  crop: tuple[int, int] | None, base: Any = None) -> list[tuple[int, str]]:
    """Steps of OneVision's AnyRes preprocessing (single image: grid; several images per sample: pad to square)."""
    from transformers.image_processing_utils import select_best_resolution

    base = size if base is None else base
    base_width, base_height = _resized(width, height, base) or (width, height)
    grid_height, grid_width = select_best_resolution((height, width), [list(p) for p in pinpoints])
    # Resized to fit the grid keeping the aspect ratio (the side that limits first fills it), as
    # `get_patch_output_size` computes it, then padded to the whole grid.
    if grid_width / width < grid_height / height:
        fit_width, fit_height = grid_width, min(math.ceil(height * grid_width / width), grid_height)
    else:
        fit_width, fit_height = min(math.ceil(width * grid_height / height), grid_width), grid_height
    # Each crop (patch x patch) and the base image are resized to `size` (and centre-cropped), then stacked.
    crop_width, crop_height = _resized(patch, patch, size) or (patch, patch)
    if crop is not None:
        crop_width, crop_height = max(crop_width, crop[0]), max(crop_height, crop[1])
    crops = math.ceil(grid_height / patch) * math.ceil(grid_width / patch)
    side = max(width, height)
    square_width, square_height = _resized(side, side, size) or (side, side)
    return [
        (width * height, f"{name}: the decoded {width} x {height} image"),
        (_resize_pixels(width, height, fit_width, fit_height), f"{name}: resize into the {grid_width} x "
         f"{grid_height} grid"),
        (grid_width * grid_height, f"{name}: pad to the {grid_width} x {grid_height} grid"),
        (_resize_pixels(width, height, base_width, base_height), f"{name}: resize the base image"),
        ((crops + 1) * crop_width * crop_height, f"{name}: {crops} crops and the base image stacked"),
        # A sample of several images: each padded to a square of its long side, then resized to `size`.
        (side * side, f"{name}: pad to a {side} x {side} square (a sample of several images)"),
        (_resize_pixels(side, side, square_width, square_height), f"{name}: resize the square"),
    ]


@functools.cache
def _default_pinpoints() -> list[list[int]]:
    """OneVision's grid resolutions, 384 x 384 to 2304 x 2304: the image processor class's default."""
    from transformers import LlavaOnevisionImageProcessorPil

    return LlavaOnevisionImageProcessorPil.image_grid_pinpoints


def load_image(
    path: str | os.PathLike | BinaryIO,
    background: Sequence[int] = (0, 0, 0),
    max_pixels: int | None = None,
    *,
    limits: ImageLimits | None = None,
    image_processor: Any = None,
) -> Image.Image:
    """The image at `path` (or in an open binary file: the bytes a `datasets.Image` column embeds) as a fully decoded
    8-bit RGB image; raises `ImageFileError` with a reason otherwise.

    The checks run in a fixed order, so a file always gets the same reason: missing file, unreadable header, size
    (`check_image_size` on the header's width and height, before a pixel is decoded), decoding, pixel format.

    Args:
        background: RGB colour transparent pixels are composited onto (the trainer passes `pad_colour(...)`).
        max_pixels: the largest width x height accepted; kept for older callers, `limits.max_pixels` says the same.
        limits: the size limits (default `ImageLimits()`, with `max_pixels` if given).
        image_processor: the image processor the pixels are prepared with, which sizes the preprocessing footprint
            (`preprocessing_footprint`; None: the largest over the preprocessing this project uses).
    """
    if limits is None:
        limits = ImageLimits() if max_pixels is None else ImageLimits(max_pixels=max_pixels)
    elif max_pixels is not None:
        raise ValueError("load_image takes max_pixels or limits, not both: pass ImageLimits(max_pixels=...)")
    with _opened(path) as image:
        _check_size_of(path, *image.size, limits, image_processor)
        image.load()
        return to_rgb(image, background)


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


__all__ = [
    "IMAGE_REJECT_REASONS",
    "ImageFileError",
    "ImageLimits",
    "check_image_header",
    "check_image_path",
    "check_image_size",
    "load_image",
    "preprocessing_footprint",
    "read_image_size",
    "resolve_image_path",
    "to_rgb",
]
