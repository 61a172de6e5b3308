"""Issue 20, item 2: images within physical sense. A 160-byte 1 x 40000 PNG decodes to only 40,000 pixels, yet LLaVA's
pad to a square would allocate 40000 x 40000 and CLIP's shortest-edge resize 336 x 13.4M: every check refuses such a
file from its header, before a pixel is decoded or preprocessed, and the preprocessing footprint the limit is checked
against is compared with hand-computed numbers and with what the real image processors allocate."""

from __future__ import annotations

import io
import pickle
import sys
from dataclasses import FrozenInstanceError

import numpy as np
import PIL.ImageFile
import pytest
import torch
from fault_cases import image_row, jpeg_bytes, png_header, write_good_image
from PIL import Image
from transformers import BatchFeature, LlavaOnevisionImageProcessorPil, SiglipImageProcessorPil

from croc_testing.tiny import TINY_ONEVISION_PINPOINTS, tiny_croc_processor
from data_recipes.validation import check_image_file, check_image_files
from modeling_croc import with_image_aspect_ratio
from modeling_croc.constants import MAX_ASPECT_RATIO, MAX_PREPROCESS_PIXELS
from modeling_croc.images import (
    IMAGE_REJECT_REASONS,
    ImageFileError,
    ImageLimits,
    check_image_header,
    check_image_size,
    load_image,
    preprocessing_footprint,
    read_image_size,
)
from trainer.data import CrocSupervisedDataset

BANNER = (1, 40000)
BANNER_DETAIL = "1 x 40000: aspect ratio 40000 > 200 (max_aspect_ratio)"


@pytest.fixture(scope="module")
def processors() -> dict:
    """The image processors of every aspect-ratio mode and model kind, at the tiny models' sizes, plus the real sizes
    where the footprint depends on them (CLIP at 336, OneVision at 384 with its default grid)."""
    tiny = tiny_croc_processor()  # CLIP preprocessing at 56 px: shortest edge 56, centre crop 56 x 56
    siglip = tiny_croc_processor(tokenizer=tiny.tokenizer)
    siglip.image_processor = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    clip336 = tiny_croc_processor(image_size=336, tokenizer=tiny.tokenizer)
    return {
        "square": tiny.image_processor,
        "pad": with_image_aspect_ratio(tiny, "pad").image_processor,
        "siglip": siglip.image_processor,
        "siglip-pad": with_image_aspect_ratio(siglip, "pad").image_processor,
        "onevision": LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                                     image_grid_pinpoints=TINY_ONEVISION_PINPOINTS),
        "onevision-384": LlavaOnevisionImageProcessorPil(),
        "square-336": clip336.image_processor,
        "pad-336": with_image_aspect_ratio(clip336, "pad").image_processor,
    }


@pytest.fixture
def banner(tmp_path):
    """A real, decodable 1 x 40000 grey PNG of 160 bytes."""
    path = tmp_path / "banner.png"
    Image.new("L", BANNER, 128).save(path)
    with Image.open(path) as image:
        assert path.stat().st_size < 300 and image.size == BANNER
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding any image fails the test (and is recorded, in case a reader catches the error)."""
    decoded = []

    def refuse(image, *args, **kwargs):
        decoded.append(image.size)
        raise AssertionError(f"a {image.size} image was decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    return decoded


# --- the banner: refused from its header by every reader ---------------------------------------------------------


@pytest.mark.parametrize("reader", ["header", "decode", "decode=True", "load_image", "load_image_bytes",
                                    "check_image_header"])
def test_a_banner_is_refused_by_every_reader_before_decoding(reader, banner, no_decoding, processors):
    if reader in ("header", "decode"):
        reason, detail = check_image_file(str(banner), mode=reader, image_processor=processors["pad"])
    elif reader == "decode=True":  # the older keyword, as validate_dataset passes it
        reason, detail = check_image_file(str(banner), decode=True)
    else:
        with pytest.raises(ImageFileError) as caught:
            if reader == "load_image":
                load_image(banner)
            elif reader == "load_image_bytes":  # a datasets.Image value's bytes
                load_image(io.BytesIO(banner.read_bytes()), image_processor=processors["square"])
            else:
                check_image_header(banner)
        reason, detail = caught.value.reason, caught.value.detail
    assert reason == "extreme_aspect_ratio" and detail.endswith(": " + BANNER_DETAIL), detail
    assert no_decoding == []


def test_training_replaces_a_banner_row_without_preprocessing_it(banner, tmp_path, monkeypatch):
    processor = with_image_aspect_ratio(tiny_croc_processor(), "pad")
    preprocessed = []
    preprocess = processor.image_processor.preprocess

    def guarded(images, *args, **kwargs):
        size = images.size
        if max(size) > MAX_ASPECT_RATIO * min(size):
            raise AssertionError(f"a {size} image reached the image processor")  # it would pad it to 40000^2
        preprocessed.append(size)
        return preprocess(images, *args, **kwargs)

    monkeypatch.setattr(processor.image_processor, "preprocess", guarded)
    write_good_image(tmp_path / "good.png", (40, 160, 60))
    rows = [image_row("banner", banner.name), image_row("good", "good.png")]
    dataset = CrocSupervisedDataset(rows, processor, "vicuna_v1", image_root=tmp_path)
    replaced = dataset[0]
    # The record of the row it stands in for (under the dataset's replaced-row key).
    record = next(value for value in replaced.values() if isinstance(value, dict) and "reason" in value)
    assert record["id"] == "banner" and record["reason"] == "extreme_aspect_ratio"
    assert record["detail"] == f"{banner}: {BANNER_DETAIL}"
    assert torch.equal(replaced["pixel_values"], dataset[1]["pixel_values"])
    assert preprocessed == [(56, 56), (56, 56)]


# --- an image at the aspect limit: the footprint rule ---------------------------------------------------------------


def test_an_image_at_the_aspect_limit_is_refused_when_padded_but_not_when_resized(tmp_path, processors):
    path = tmp_path / "panorama.png"
    path.write_bytes(png_header(40000, 200))  # aspect 200 exactly: allowed by the aspect rule
    pad, square = processors["pad-336"], processors["square-336"]
    # Padded to a 40000 x 40000 square: 1.6e9 pixels > 2**28.
    assert preprocessing_footprint(40000, 200, pad) == 40000 * 40000
    # CLIP at 336: shortest edge 200 -> 336, long edge 40000 * 336 / 200 = 67200; the 67200 x 336 output is the
    # largest step (input 8,000,000; Pillow's first pass 67200 x 200 = 13,440,000).
    assert preprocessing_footprint(40000, 200, square) == 67200 * 336
    reason, detail = check_image_file(str(path), mode="header", image_processor=pad)
    assert reason == "image_too_large"
    assert detail == (f"{path}: 40000 x 200: preprocessing allocates 1,600,000,000 pixels (LlavaImageProcessorPil: "
                      "pad to a 40000 x 40000 square) > 268,435,456 (max_preprocess_pixels)")
    assert check_image_file(str(path), mode="header", image_processor=square) == (None, "")
    # A builder that does not know the model assumes the pad.
    assert check_image_file(str(path), mode="header")[0] == "image_too_large"
    check_image_size(40000, 200, image_processor=square)  # no error


# --- footprints: hand-computed, and against what the real processors allocate -----------------------------------

FOOTPRINTS = [
    # (processor, width, height, footprint, how)
    ("square", 30, 900, 56 * 1680, "shortest edge 30 -> 56, long 900 * 56 / 30 = 1680"),
    ("square", 900, 30, 1680 * 56, "the same, landscape"),
    ("square", 500, 400, 500 * 400, "the input: its resize (70 x 56) and crop are smaller"),
    ("pad", 30, 900, 900 * 900, "the square of the long side"),
    ("pad", 20, 10, 56 * 56, "a 20 x 20 square resized up to 56 x 56"),
    ("siglip", 1, 150, 28 * 150, "Pillow's horizontal pass: new width 28 x old height 150 (output 28 x 28)"),
    ("siglip-pad", 30, 900, 900 * 900, "the square"),
    # Tiny grid: (28, 28) is the best resolution for 20 x 10; 1 crop + the base image, 28 x 28 each.
    ("onevision", 20, 10, 2 * 28 * 28, "the stack of the crop and the base image"),
    ("onevision", 30, 900, 900 * 900, "the square a sample of several images is padded to"),
    # 1000 x 700 on OneVision's grid at 384: best resolution 1152 x 768 (the smallest holding it whole), 3 x 2 crops
    # of 384 and the base image stacked: 7 x 384 x 384 = 1,032,192 > the square 1000 x 1000.
    ("onevision-384", 1000, 700, 7 * 384 * 384, "the stack of 6 crops and the base image"),
    # No processor: the largest over the project's preprocessing.
    (None, 1, 150, 384 * 57600, "shortest edge 1 -> 384, long 150 * 384 = 57600"),
    (None, 40000, 200, 40000 * 40000, "the pad to a square"),
    (None, 500, 400, 5 * 384 * 384, "AnyRes at 384: 768 x 768 grid, 4 crops and the base image"),
]


@pytest.mark.parametrize("kind, width, height, expected, how", FOOTPRINTS)
def test_footprint_matches_hand_computed_numbers(kind, width, height, expected, how, processors):
    processor = processors[kind] if kind else None
    assert preprocessing_footprint(width, height, processor) == expected, how


def test_an_unknown_processor_class_gets_the_conservative_rule(processors):
    class OtherImageProcessor:  # no class the footprint models: as if no processor were named
        size = {"shortest_edge": 28}

    assert preprocessing_footprint(30, 900, OtherImageProcessor()) == preprocessing_footprint(30, 900) == 384 * 11520
    # A whole processor stands for its image processor.
    assert preprocessing_footprint(30, 900, tiny_croc_processor()) == 56 * 1680


def _image_pixels(value) -> int:
    """Pixels of an image-like value: width x height of a PIL image; of an array or tensor, its size without the
    channel axis (3 or 1, first or last of the image's three axes), so a stack of N crops counts N x H x W."""
    if isinstance(value, Image.Image):
        return value.width * value.height
    if isinstance(value, torch.Tensor):
        value = value.detach().numpy()
    if not isinstance(value, np.ndarray) or value.ndim < 2:
        return 0
    shape = list(value.shape)
    if value.ndim >= 3:
        channel = -3 if shape[-3] in (1, 3) else -1 if shape[-1] in (1, 3) else None
        if channel is not None:
            del shape[channel]
    return int(np.prod(shape))


def _largest_image_created(image_processor, images) -> int:
    """Run `image_processor(images)` and return the pixel count of the largest image-like value (PIL image, array, tensor) that any
    Python function it runs returns or holds in a local variable when it returns: every step of transformers'
    preprocessing and every Pillow call goes through such a frame. (Pillow's buffer inside one C resize call is not
    visible here; `preprocessing_footprint` counts it from Pillow's source.)"""
    largest = 0

    def visit(value, depth=0):
        nonlocal largest
        if isinstance(value, (list, tuple)) and depth < 3:
            for item in value[:256]:
                visit(item, depth + 1)
        elif isinstance(value, (dict, BatchFeature)) and depth < 3:
            for item in value.values():
                visit(item, depth + 1)
        else:
            largest = max(largest, _image_pixels(value))

    def profile(frame, event, arg):
        if event == "return":
            visit(arg)
            for value in frame.f_locals.values():
                visit(value)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        image_processor(images, return_tensors="pt")
    finally:
        sys.setprofile(previous)
    return largest


@pytest.mark.parametrize("kind", ["square", "pad", "siglip", "siglip-pad", "onevision", "onevision-384"])
def test_footprint_bounds_what_the_real_processor_allocates(kind, processors):
    processor = processors[kind]
    reached = False
    for size in [(30, 900), (900, 30), (500, 400), (20, 10), (1, 150)]:
        image = Image.new("RGB", size, (200, 30, 90))
        footprint = preprocessing_footprint(*size, processor)
        largest = _largest_image_created(processor, image)
        assert 0 < largest <= footprint, (size, largest, footprint)
        reached |= largest == footprint
        if kind.startswith("onevision"):
            # A sample of two images: each padded to a square, and both images' crops stacked in one tensor.
            largest = _largest_image_created(processor, [[image, image]])
            assert 0 < largest <= 2 * footprint, (size, largest, footprint)
            reached |= largest >= footprint
    assert reached  # the bound is met exactly by some image: it is not loose


# --- ordinary images, the order of the checks, the limits --------------------------------------------------------


def test_a_photo_sized_image_passes_everything(tmp_path, processors):
    photo = tmp_path / "photo.jpg"
    Image.open(io.BytesIO(jpeg_bytes(3, size=64))).resize((1024, 768)).save(photo, quality=85)
    scan = tmp_path / "scan.png"
    scan.write_bytes(png_header(4032, 3024))  # a 12-megapixel phone photo's header
    for processor in [None, *processors.values()]:
        for mode in ("exists", "header", "decode"):
            assert check_image_file(str(photo), mode=mode, image_processor=processor) == (None, ""), (processor, mode)
        assert check_image_file(str(scan), mode="header", image_processor=processor) == (None, "")
        assert preprocessing_footprint(4032, 3024, processor) <= 4032 * 4032 < MAX_PREPROCESS_PIXELS
    assert read_image_size(photo) == (1024, 768) and load_image(photo).size == (1024, 768)
    data = io.BytesIO(photo.read_bytes())
    data.seek(5)
    assert read_image_size(data) == (1024, 768) and data.tell() == 5  # the file is left where it was


def test_checks_run_in_a_fixed_order(tmp_path):
    """missing -> unreadable header -> size limits -> decode -> pixel format, the same in every mode that gets there."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "garbage.png").write_bytes(b"not an image at all")
    (images / "strip.png").write_bytes(png_header(1, 300))  # a size fault whose pixels would not decode either
    Image.fromarray(np.full((300, 1), 0.5, dtype=np.float32)).save(images / "float_strip.tif")  # size and mode
    (images / "tall.png").write_bytes(png_header(100, 2000))  # within the limits, pixels truncated
    # Verdicts of the modes "exists" (stat only: size faults are found later, by training's reader), "header" and
    # "decode", and of the older decode=False / decode=True.
    expected = {
        "nope.png": ("missing_image", "missing_image", "missing_image"),
        "garbage.png": (None, "unreadable_image", "unreadable_image"),
        "strip.png": (None, "extreme_aspect_ratio", "extreme_aspect_ratio"),
        "float_strip.tif": (None, "extreme_aspect_ratio", "extreme_aspect_ratio"),
        "tall.png": (None, None, "unreadable_image"),
    }
    for name, verdicts in expected.items():
        path = str(images / name)
        found = tuple(check_image_file(path, mode=mode)[0] for mode in ("exists", "header", "decode"))
        assert found == verdicts, name
        assert (check_image_file(path, decode=False)[0], check_image_file(path, decode=True)[0]) == \
            (verdicts[0], verdicts[2])
    # Size faults read the same whether found by the header check or by decoding.
    assert check_image_file(str(images / "strip.png"), mode="header") == \
        check_image_file(str(images / "strip.png"), mode="decode")
    assert check_image_file(str(images / "strip.png"))[1] == f"{images / 'strip.png'}: 1 x 300: aspect ratio 300 > 200 " \
        "(max_aspect_ratio)"
    assert list(IMAGE_REJECT_REASONS).index("extreme_aspect_ratio") < list(IMAGE_REJECT_REASONS).index(
        "image_too_large")


def test_limits_are_validated_and_applied(tmp_path, processors):
    for bad in [{"max_pixels": 0}, {"max_pixels": -5}, {"max_pixels": 1.5}, {"max_pixels": True},
                {"max_preprocess_pixels": 0}, {"max_aspect_ratio": 0.5}, {"max_aspect_ratio": float("nan")},
                {"max_aspect_ratio": "200"}]:
        with pytest.raises(ValueError, match=rf"^ImageLimits\.{next(iter(bad))} must be") as caught:
            ImageLimits(**bad)
        assert "\n" not in str(caught.value)
    limits = ImageLimits(max_pixels=10_000, max_preprocess_pixels=500_000, max_aspect_ratio=10)
    with pytest.raises(FrozenInstanceError):
        limits.max_pixels = 1
    assert pickle.loads(pickle.dumps(limits)) == limits
    path = tmp_path / "tall.png"
    write_good_image(path, (10, 10, 10), size=(30, 900))
    with pytest.raises(ImageFileError, match=r": 30 x 900: aspect ratio 30 > 10 \(max_aspect_ratio\)$"):
        load_image(path, limits=limits)
    ten = ImageLimits(max_aspect_ratio=30)
    assert check_image_file(str(path), mode="header", limits=ten, image_processor=processors["square"]) == (None, "")
    # The square of 900 is 810,000 pixels: over 500,000 when padded, not when resized (56 x 1680 = 94,080).
    loose = ImageLimits(max_preprocess_pixels=500_000)
    assert check_image_file(str(path), mode="decode", limits=loose, image_processor=processors["pad"])[0] == \
        "image_too_large"
    assert check_image_file(str(path), mode="decode", limits=loose, image_processor=processors["square"]) == \
        (None, "")
    # The older max_pixels keyword still works, but not together with limits.
    with pytest.raises(ImageFileError, match=r"30 x 900 = 27,000 pixels > 10,000 \(max_pixels\)$"):
        load_image(path, max_pixels=10_000)
    with pytest.raises(ValueError, match="takes max_pixels or limits, not both"):
        load_image(path, max_pixels=10_000, limits=limits)
    with pytest.raises(ValueError, match="not both"):
        check_image_file(str(path), decode=True, mode="header")
    with pytest.raises(ValueError, match="must be one of"):
        check_image_file(str(path), mode="verify")


def test_limits_and_image_processor_reach_the_process_pool(tmp_path, banner, processors):
    paths = []
    for i, size in enumerate([(56, 56), (30, 900), (64, 48), (900, 30)]):
        paths.append(str(tmp_path / f"{i}.png"))
        write_good_image(tmp_path / f"{i}.png", (40, 40, 200), size=size)
    paths.append(str(banner))
    limits = ImageLimits(max_preprocess_pixels=500_000)
    for mode in ("header", "decode"):
        serial = check_image_files(paths, mode=mode, limits=limits, image_processor=processors["pad"])
        pooled = check_image_files(paths, mode=mode, limits=limits, image_processor=processors["pad"], num_proc=2)
        assert pooled == serial
        assert [reason for reason, _ in pooled] == [None, "image_too_large", None, "image_too_large",
                                                   "extreme_aspect_ratio"]
