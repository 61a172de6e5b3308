"""Stage 0 of the demo: pretrain the tiny vision tower CLIP-style before anything else, then freeze it.

The paper's CLIP is pretrained, so its patch tokens already carry what the LLM must read (colours, shapes, where
things are). A random frozen tower carries little: random attention mixes the patches. Here the tower learns with
transformers' own `CLIPModel` contrastive loss on the *training* scenes' brief captions ("a red circle at the top
left and ..."), which can only be matched to their image by reading colour, shape and position. The text tower is
thrown away; the vision tower becomes the stage-0 model's tower, frozen in every later stage as in the paper.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TowerPretraining:
    """Settings of the contrastive stage 0.

    Attributes:
        steps: optimiser steps (0 skips stage 0: the tower stays random, as the demo was before).
        batch_size: image-caption pairs per step (the contrastive negatives).
        learning_rate: AdamW peak rate (linear warm-up over the first 5%, cosine decay).
        text_layers: layers of the throw-away text tower (same width as the vision tower).
        max_caption_tokens: captions are cut to this many tokens.
        captions: the training caption file the pairs come from: the brief captions name colours and shapes, the
            detailed ones also positions, sizes and relations.
    """

    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 1e-3
    text_layers: int = 2
    max_caption_tokens: int = 48
    captions: str = "brief_captions.json"


def _captions(data_dir: Path, file_name: str) -> list[tuple[str, str]]:
    rows = json.loads((data_dir / file_name).read_text(encoding="utf-8"))
    return [(row["image"], row["conversations"][-1]["value"]) for row in rows]


def pretrain_vision_tower(
    vision_config: CLIPVisionConfig,
    tokenizer,
    image_processor,
    data_dir: str | Path,
    settings: TowerPretraining,
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train a `CLIPModel` whose vision side is `vision_config` on the `settings.captions` pairs of `data_dir`.

    Returns the vision tower's state dict (a `CLIPVisionModel`'s, as the Croc model holds its tower) and a summary:
    first and last contrastive loss, and the image-to-caption retrieval accuracy within a batch of training pairs at
    the end (chance: 1 / batch size).
    """
    data_dir = Path(data_dir)
    pairs = _captions(data_dir, settings.captions)
    # Each caption ends with one <pad>: the text tower pools there (CLIP pools at the first `eos_token_id`), and
    # the same id pads the batch, hidden by the attention mask.
    end = tokenizer.pad_token_id
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=vision_config.hidden_size,
        intermediate_size=vision_config.intermediate_size, num_hidden_layers=settings.text_layers,
        num_attention_heads=vision_config.num_attention_heads, max_position_embeddings=settings.max_caption_tokens + 1,
        eos_token_id=end, pad_token_id=end, bos_token_id=tokenizer.bos_token_id,
    )
    config = CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(),
                        projection_dim=vision_config.hidden_size)
    torch.manual_seed(seed)
    model = CLIPModel(config).train()

    pixels = torch.stack([image_processor(Image.open(data_dir / image).convert("RGB"),
                                          return_tensors="pt")["pixel_values"][0] for image, _ in pairs])
    encoded = [tokenizer(caption, add_special_tokens=False)["input_ids"][: settings.max_caption_tokens] + [end]
               for _, caption in pairs]
    width = max(map(len, encoded))
    input_ids = torch.full((len(encoded), width), end)
    attention = torch.zeros(len(encoded), width, dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / settings.steps)))
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(settings.batch_size, len(pairs))
    losses = []
    for _ in range(settings.steps):
        rows = torch.randperm(len(pairs), generator=generator)[:batch_size]
        out = model(input_ids=input_ids[rows], attention_mask=attention[rows], pixel_values=pixels[rows],
                    return_loss=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))

    model.eval()
    with torch.no_grad():
        rows = torch.randperm(len(pairs), generator=generator)[:batch_size]
        logits = model(input_ids=input_ids[rows], attention_mask=attention[rows], pixel_values=pixels[rows]).logits_per_image
        retrieval = float((logits.argmax(dim=1) == torch.arange(len(rows))).float().mean())
    summary = {"steps": settings.steps, "first_loss": losses[0] if losses else math.nan,
               "final_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1), "train_batch_retrieval_accuracy": retrieval,
               "chance_retrieval_accuracy": 1.0 / len(rows)}
    logger.info("stage 0 (contrastive tower): loss %.3f -> %.3f, image->caption retrieval %.1f%% in a batch of %d",
                summary["first_loss"], summary["final_loss"], 100 * retrieval, len(rows))
    return model.vision_model.state_dict(), summary


__all__ = ["TowerPretraining", "pretrain_vision_tower"]
