"""What the trainer feeds Mistral 3 (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain folder,
is one case of `test_family_training.py`): Mistral 3's [INST] chat format, each image as Pixtral's processor expands
it (rows of `[IMG]` closed by `[IMG_BREAK]`, the last by `[IMG_END]`), images at their own size, padded to the
batch's largest, with `image_sizes`."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from trainer_helpers import shaped_image_rows

from croc_testing.mistral3 import MISTRAL3_LONGEST_EDGE, save_tiny_mistral3
from croc_testing.optional import image_processor_backend
from modeling_croc import CrocMistral3ForConditionalGeneration, CrocMistral3Processor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
PROMPT = "[INST][IMG]Describe the image.[/INST]"


@pytest.fixture(scope="module")
def mistral3_folder(tmp_path_factory):
    return save_tiny_mistral3(tmp_path_factory.mktemp("mistral3") / "plain")


SIZES = {"wide.png": (64, 16), "square.png": (16, 16), "tall.png": (20, 44)}  # (width, height): different shapes, so different sizes after resizing


def test_samples_are_the_processors_own(mistral3_folder, tmp_path):
    processor = CrocMistral3Processor.from_pretrained(mistral3_folder)
    assert type(processor.image_processor).__name__ == image_processor_backend("PixtralImageProcessor")
    window = processor.patch_size * processor.spatial_merge_size
    assert processor.image_processor.patch_size == {"height": window, "width": window}  # merged when called alone
    side = MISTRAL3_LONGEST_EDGE // window
    assert processor.num_image_tokens == side * (side + 1)
    tokenizer = processor.tokenizer
    rows = shaped_image_rows(tmp_path, SIZES)
    dataset = CrocSupervisedDataset(rows, processor, template="mistral3", image_root=tmp_path, model_max_length=512)
    assert [fit.verdict for fit in dataset.fit_rows(rows)] == ["unknown"] * 3 + ["whole"]

    # The template's chat template is the processor's; answered, the processor turns it into the sample's ids.
    own = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert own == PROMPT
    assert processor.chat_template == get_template("mistral3").chat_template(tokenizer.eos_token, "[IMG]")
    model = CrocMistral3ForConditionalGeneration.from_pretrained(mistral3_folder)
    samples, shapes = [], []
    for index, row in enumerate(rows[:3]):
        sample = dataset[index]
        answered = own + row["conversations"][1]["value"] + tokenizer.eos_token
        inputs = processor(text=[answered], images=[Image.open(tmp_path / row["image"])], return_tensors="pt")
        assert sample["input_ids"].tolist() == inputs["input_ids"][0].tolist()
        assert sample["input_ids"][0] == tokenizer.bos_token_id
        torch.testing.assert_close(sample["pixel_values"], inputs["pixel_values"][0])
        assert sample["image_sizes"].tolist() == inputs["image_sizes"][0].tolist()
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != IGNORE_INDEX])
        assert supervised == row["conversations"][1]["value"] + tokenizer.eos_token
        # The model's count from `image_sizes` is the sample's `[IMG]` count; the break tokens come in between.
        ids = sample["input_ids"]
        count = model.image_token_counts(None, 1, image_sizes=sample["image_sizes"][None])
        assert count.tolist() == [int((ids == processor.image_token_id).sum())]
        height, width = sample["image_sizes"].tolist()
        assert int((ids == processor.image_break_token_id).sum()) == height // window - 1
        assert int((ids == processor.image_end_token_id).sum()) == 1
        samples.append(sample)
        shapes.append(tuple(sample["pixel_values"].shape))
    assert len(set(shapes)) == 3  # images of their own sizes

    # The collator pads every image to the batch's largest height and width (top-left), as Pixtral's image processor
    # pads a batch; text rows add none.
    batch = build_collator(processor)([samples[0], dataset[3], samples[1], samples[2]])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values", "image_sizes"}
    height, width = (max(shape[axis] for shape in shapes) for axis in (1, 2))
    assert batch["pixel_values"].shape == (3, 3, height, width)
    images = [Image.open(tmp_path / row["image"]) for row in rows[:3]]
    together = processor.image_processor(images, return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values"], together["pixel_values"])
    assert batch["image_sizes"].tolist() == together["image_sizes"].tolist()
    counts = model.image_token_counts(batch["input_ids"], 3, image_sizes=batch["image_sizes"])
    assert counts.tolist() == [int((sample["input_ids"] == processor.image_token_id).sum()) for sample in samples]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_images_are_bounded_so_their_masked_tokens_fit_the_pool():
    """Pixtral's native resolution, as Qwen2.5-VL's: the largest image (16 visual tokens, 12 masked) does not fit a
    pool of 8, so images are resized to at most 9 (3 x 3 windows: 7 masked) before the data is read, rather than the
    first large image stopping the run in the Hungarian matching."""
    from croc_testing.mistral3 import tiny_mistral3_processor
    from modeling_croc import CrocMistral3Config
    from trainer.model_loading import fit_images_to_pool

    processor = tiny_mistral3_processor()
    assert processor.max_visual_tokens == 16 and processor.num_image_tokens == 20  # 4 rows of 4 [IMG] + a break
    config = CrocMistral3Config(croc_pretraining=True, prompt_pool_size=8, vtr_head="linear")
    fit_images_to_pool(processor, config)
    assert processor.max_visual_tokens == 9 and config.num_masked_tokens(9) <= 8
    inputs = processor(text=["[IMG]"], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 9


def test_the_pool_bound_trains_stage_1_5_but_the_saved_processor_keeps_the_sources_sizes(mistral3_folder, data_dir,
                                                                                           tmp_path):
    """Stage 1.5 bounds images to its pool (8 tokens: 9 visual tokens at most) for its matching; its checkpoints and
    final folder keep the source's `longest_edge`, so stage 2 and inference from them see the images at full size."""
    import json

    from trainer_helpers import run_stage

    out = tmp_path / "stage1_5"
    run_stage("stage1_5_mistral3.yaml", out, f"--model.name_or_path={mistral3_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=1", "--croc_overrides={prompt_pool_size: 8}",
              "--pool_calibration_images=4", "--save_strategy=steps", "--save_steps=1")

    def longest_edge(folder):
        return json.loads((folder / "processor_config.json").read_text())["image_processor"]["size"]["longest_edge"]

    assert longest_edge(out) == longest_edge(out / "checkpoint-1") == longest_edge(mistral3_folder)


def test_a_strip_pixtral_would_resize_to_no_pixels_is_replaced_and_counted(mistral3_folder, tmp_path):
    """Pixtral's resize scales the long side down to `longest_edge` and floors the short one: a 150 x 1 strip (within
    `max_aspect_ratio`) at a 32-px `longest_edge` gets a height of 0, and the image processor raised mid-run. Such a
    row is an `extreme_aspect_ratio` image, judged from its header: replaced by the next image row and counted."""
    from modeling_croc.images import ImageFileError, check_image_size

    processor = CrocMistral3Processor.from_pretrained(mistral3_folder)
    rows = shaped_image_rows(tmp_path, {"strip.png": (150, 1), "square.png": (16, 16)})
    dataset = CrocSupervisedDataset(rows, processor, template="mistral3", image_root=tmp_path, model_max_length=512)
    sample = dataset[0]
    assert sample["replaced_row"]["reason"] == "extreme_aspect_ratio" and dataset.stats["unreadable"] == 1
    assert sample["input_ids"].tolist() == dataset[1]["input_ids"].tolist()
    with pytest.raises(ImageFileError, match=r"150 x 1: aspect ratio 150 > 32 .*longest_edge=32 px"):
        check_image_size(150, 1, image_processor=processor.image_processor)
    check_image_size(MISTRAL3_LONGEST_EDGE, 1, image_processor=processor.image_processor)  # 32 x 1 keeps a row
    processor.image_processor(Image.new("RGB", (MISTRAL3_LONGEST_EDGE, 1)), return_tensors="pt")


def test_a_turn_holding_the_models_own_image_token_is_rejected_before_its_image_is_read(mistral3_folder, tmp_path):
    """Forum text carries BBCode's `[IMG]...[/IMG]`, which Mistral 3's tokenizer reads as its image token: the row had
    one `[IMG]` more than its image's features, and the forward raised mid-run (a text-only row: image tokens and no
    image). Such a row is rejected at the start (`too_many_image_markers`), and replaced and counted if asked for."""
    processor = CrocMistral3Processor.from_pretrained(mistral3_folder)
    rows = shaped_image_rows(tmp_path, {"square.png": (16, 16), "wide.png": (64, 16)})
    rows[0]["conversations"][0]["value"] += " [IMG]http://example.com/a.png[/IMG]"
    rows[-1]["conversations"][1]["value"] = "Seven. [IMG_END]"
    dataset = CrocSupervisedDataset(rows, processor, template="mistral3", image_root=tmp_path, model_max_length=512)
    fits = dataset.fit_rows(rows)
    assert [(fit.verdict, fit.reason) for fit in fits] == [("rejected", "too_many_image_markers"), ("unknown", None),
                                                           ("rejected", "too_many_image_markers")]
    assert "'[IMG]'" in fits[0].detail and "'[IMG_END]'" in fits[2].detail
    sample = dataset[0]
    assert sample["replaced_row"]["reason"] == "too_many_image_markers"
    assert int((sample["input_ids"] == processor.image_token_id).sum()) == 4  # the 64 x 16 image's, nothing more
