"""Random LLaVA-layout batches for the tiny Croc configs of `croc_testing.tiny`."""

from collections.abc import Callable

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


def make_anyres_batch(config, image_sizes, token_counts, images_per_row, text_len: int = 5, left_pad: int = 0,
                      seed: int = 0, adjacent: bool = False):
    """Random OneVision-layout rows with images of different token counts: row r holds the next
    `images_per_row[r]` images, each as its own run of `token_counts[i]` image tokens followed by a text token (with
    `adjacent`, the row's images back to back, as `<image><image>` prompts give them, one text token after the last),
    then `text_len` answer tokens (supervised). Rows are left-padded to one width (`left_pad` more per row).

    `pixel_values` is `(num_images, max crops, 3, S, S)` with each image's crops first, as OneVision's image
    processor pads them; `image_sizes` is `(num_images, 2)` (height, width).
    """
    generator = torch.Generator().manual_seed(seed)
    image_id = config.image_token_id
    counts = [int(count) for count in token_counts]
    bodies, image = [], 0
    for row, count in enumerate(images_per_row):
        parts = [torch.tensor([1]), torch.randint(3, 100, (2,), generator=generator)]
        for index in range(count):
            parts.append(torch.full((counts[image],), image_id))
            if not adjacent or index == count - 1:
                parts.append(torch.randint(3, 100, (1,), generator=generator))
            image += 1
        prompt = torch.cat(parts)
        answer = torch.randint(3, 100, (text_len,), generator=generator)
        bodies.append((prompt, answer, left_pad * row))
    width = max(len(prompt) + len(answer) + pad for prompt, answer, pad in bodies)
    rows = len(bodies)
    input_ids = torch.full((rows, width), PAD_TOKEN_ID)
    attention_mask = torch.zeros(rows, width, dtype=torch.long)
    labels = torch.full((rows, width), IGNORE_INDEX)
    for row, (prompt, answer, _) in enumerate(bodies):
        body = torch.cat([prompt, answer])
        start = width - len(body)
        input_ids[row, start:] = body
        attention_mask[row, start:] = 1
        labels[row, start + len(prompt):] = answer
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    size = config.vision_config.image_size
    crops = [image_size_to_num_patches(list(map(int, s)), config.image_grid_pinpoints, size) for s in image_sizes]
    pixel_values = torch.randn(len(crops), max(crops), 3, size, size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "image_sizes": torch.as_tensor(image_sizes, dtype=torch.long)}


def left_padded(bodies: list[tuple[list[int], list[int]]], pad_token_id: int
                ) -> tuple[torch.LongTensor, torch.LongTensor, torch.LongTensor]:
    """`(input_ids, attention_mask, labels)` `(B, L)` of rows given as (prompt ids, answer ids), left-padded to the
    longest row, labels on the answers only."""
    length = max(len(prompt) + len(answer) for prompt, answer in bodies)
    input_ids = torch.full((len(bodies), length), pad_token_id)
    attention_mask = torch.zeros(len(bodies), length, dtype=torch.long)
    labels = torch.full((len(bodies), length), IGNORE_INDEX)
    for row, (prompt, answer) in enumerate(bodies):
        start = length - len(prompt) - len(answer)
        input_ids[row, start:] = torch.tensor(prompt + answer)
        attention_mask[row, start:] = 1
        labels[row, start + len(prompt):] = torch.tensor(answer)
    return input_ids, attention_mask, labels


def views_as_one_run(input_ids: torch.LongTensor, image_token_id: int,
                     inside: Callable[[list[int]], bool]) -> torch.LongTensor:
    """`input_ids` with every gap between two runs of `image_token_id` that `inside(gap ids)` says lies inside one
    image (a tiled family's view markers) turned into placeholders, so a per-run reference sees each image as one
    run."""
    out = input_ids.clone()
    for row in out:
        tokens = row.tolist()
        positions = [index for index, token in enumerate(tokens) if token == image_token_id]
        for left, right in zip(positions, positions[1:]):
            gap = tokens[left + 1:right]
            if gap and inside(gap):
                row[left + 1:right] = image_token_id
    return out
