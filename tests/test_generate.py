"""`generate` is LLaVA-1.5's: same tokens as LlavaForConditionalGeneration, with and without images, batched and
left-padded."""

import torch

from croc_testing.batches import make_batch
from modeling_croc import CrocForConditionalGeneration
from modeling_croc.convert import croc_to_llava


def _pair(config):
    torch.manual_seed(0)
    croc = CrocForConditionalGeneration(config).eval()
    return croc, croc_to_llava(croc)


def _generate(model, **inputs):
    return model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=127)


def test_generate_with_images_batched_left_padded(make_config):
    croc, llava = _pair(make_config(attn_implementation="sdpa"))
    batch = make_batch(croc.config, rows=3, left_pad=2)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    ours = _generate(croc, **inputs)
    assert ours.shape == (3, inputs["input_ids"].shape[1] + 6)
    assert torch.equal(ours, _generate(llava, **inputs))


def test_generate_without_images(make_config):
    croc, llava = _pair(make_config(attn_implementation="sdpa"))
    input_ids = torch.tensor([[127, 127, 1, 5, 6], [1, 7, 8, 9, 10]])
    attention_mask = (input_ids != 127).long()
    ours = _generate(croc, input_ids=input_ids, attention_mask=attention_mask)
    assert torch.equal(ours, _generate(llava, input_ids=input_ids, attention_mask=attention_mask))


def test_generate_matches_a_single_row_run(make_config):
    """Left padding changes nothing: the padded row generates what it generates alone."""
    croc, _ = _pair(make_config(attn_implementation="sdpa"))
    batch = make_batch(croc.config, rows=2, left_pad=3)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    together = _generate(croc, **inputs)
    row = 1  # the padded one
    start = int((inputs["attention_mask"][row] == 0).sum())
    alone = _generate(
        croc,
        input_ids=inputs["input_ids"][row:row + 1, start:],
        attention_mask=inputs["attention_mask"][row:row + 1, start:],
        pixel_values=inputs["pixel_values"][row:row + 1],
    )
    assert torch.equal(together[row, start:], alone[0])
