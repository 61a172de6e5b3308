"""Random LLaVA-layout batches for the tiny Croc configs of `croc_testing.tiny`."""

import torch

from modeling_croc.constants import IGNORE_INDEX

PAD_TOKEN_ID = 127  # the last id of `tiny_croc_config()`'s 128-token vocabulary


def make_batch(config, rows: int = 2, text_len: int = 6, left_pad: int = 0, seed: int = 0):
    """Random image+text rows: [BOS, prompt..., <image> x T, answer...], labels on the answer only.

    Row r has `left_pad * r` left padding tokens, so a batch mixes padded and unpadded rows.
    """
    generator = torch.Generator().manual_seed(seed)
    num_tokens = config.image_seq_length
    image_id = config.image_token_id
    width = 3 + num_tokens + text_len + left_pad * (rows - 1)
    input_ids = torch.full((rows, width), PAD_TOKEN_ID)
    attention_mask = torch.zeros(rows, width, dtype=torch.long)
    labels = torch.full((rows, width), IGNORE_INDEX)
    for r in range(rows):
        body = torch.cat([
            torch.tensor([1]),
            torch.randint(3, 100, (2,), generator=generator),
            torch.full((num_tokens,), image_id),
            torch.randint(3, 100, (text_len + left_pad * (rows - 1 - r),), generator=generator),
        ])
        start = left_pad * r
        input_ids[r, start:] = body[: width - start]
        attention_mask[r, start:] = 1
        labels[r, start + 3 + num_tokens:] = input_ids[r, start + 3 + num_tokens:]
    size = config.vision_config.image_size
    pixel_values = torch.randn(rows, 3, size, size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values}
