"""Start-of-stage-1.5 calibration of the prompt pool from visual-token statistics (`prompt_pool_init="visual_stats"`).

Every process computes the same thing (the first K training images, a generator seeded with `args.seed`), so no
broadcast is needed; under ZeRO-3 the parameters involved are gathered for the duration.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from .collator import join_images, stack_images
from .data import REPLACED_KEY

logger = logging.getLogger(__name__)


def needs_calibration(config) -> bool:
    """True when the stage-1.5 objectives are on and the pool still waits for its visual-statistics draw."""
    return bool(
        config.croc_pretraining and config.prompt_pool_init == "visual_stats" and not config.prompt_pool_calibrated
    )


def first_images(dataset, count: int, max_scanned: int | None = None) -> dict[str, torch.Tensor] | None:
    """The image inputs of the first `count` image rows of `dataset` (in index order), batched as the collator does
    (`pixel_values`, and `image_sizes` for AnyRes rows, `image_grid_thw` for native-resolution ones or
    `image_position_ids` for Gemma 4's), or None if it has none.

    Scans at most `max_scanned` rows (default 20 x count) so a text-heavy mixture does not read the whole set.
    """
    limit = min(len(dataset), max_scanned if max_scanned is not None else 20 * max(count, 1))
    items = []
    for index in range(limit):
        item = dataset[index]
        # A sample standing in for a row with an unreadable image repeats a later row's image: leave it out, so the
        # pool is drawn from distinct images.
        if item is not None and item.get("pixel_values") is not None and not item.get(REPLACED_KEY):
            items.append(item)
            if len(items) == count:
                break
    if not items:
        return None
    if all(item.get("image_grid_thw") is not None for item in items):  # native resolution: patches, grids
        return {"pixel_values": torch.cat([item["pixel_values"] for item in items]),
                "image_grid_thw": torch.stack([item["image_grid_thw"] for item in items])}
    images = {"pixel_values": join_images(items)}  # tiled images (InternVL's): all their tiles, concatenated
    if all(item.get("image_sizes") is not None for item in items):
        images["image_sizes"] = torch.stack([item["image_sizes"] for item in items])
    if all(item.get("pixel_attention_mask") is not None for item in items):  # split images (SmolVLM's)
        images["pixel_attention_mask"] = stack_images([item["pixel_attention_mask"] for item in items])
    if all(item.get("image_position_ids") is not None for item in items):  # patch positions (Gemma 4's)
        images["image_position_ids"] = stack_images([item["image_position_ids"] for item in items], fill=-1)
    return images


def _gathered(modules: list[nn.Module]):
    """Gather ZeRO-3 partitioned parameters of `modules` (a no-op without ZeRO-3)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    params = [p for module in modules if module is not None for p in module.parameters()]
    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def calibrate_prompt_pool(model, dataset, num_images: int, seed: int) -> bool:
    """Draw the pool of `model` (a `CrocForConditionalGeneration`, possibly inside a PEFT wrapper's base) from the
    first `num_images` image rows of `dataset`. Returns True if it calibrated."""
    if not needs_calibration(model.config):
        return False
    images = first_images(dataset, num_images)
    if images is None:
        logger.warning("prompt pool not calibrated: no image rows among the first training rows")
        return False
    # Everything of the base model but its language model: the vision tower, the projector (or merger) and the pool,
    # whatever the family calls them.
    vision_side = [module for name, module in model.model.named_children() if name != "language_model"]
    reference = next(p for module in vision_side for p in module.parameters())
    was_training = model.training
    model.eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with _gathered(vision_side):
        pixel_values = images.pop("pixel_values").to(reference.device, reference.dtype)
        model.calibrate_prompt_pool(pixel_values, generator=generator, **images)
    model.train(was_training)
    num_images = len(images["image_grid_thw"]) if "image_grid_thw" in images else pixel_values.shape[0]
    logger.info("prompt pool drawn from the visual-token statistics of %d training images", num_images)
    return True
