"""`python -m modeling_croc.chat MODEL_DIR --image PATH [--question TEXT]`: answer a question about an image.

Without `--question`, questions are read from standard input, one per line, about the same image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from . import CrocForConditionalGeneration  # noqa: F401  (registers the Auto classes)
from .images import load_image
from .processing_croc import pad_colour


def answer(model, processor, image: Image.Image | None, question: str, max_new_tokens: int = 64) -> str:
    """Greedy answer of `model` to `question` about `image` (or a text-only question), via `generate`."""
    content = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": question}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = processor(images=[image] if image is not None else None, text=[prompt], return_tensors="pt")
    inputs = inputs.to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=processor.tokenizer.pad_token_id)
    return processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()


def load(model_dir: str, device: str = "cpu"):
    """The model (eval mode) and processor saved in `model_dir`."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir).to(device).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modeling_croc.chat", description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--image", help="image file; leave out for a text-only chat")
    parser.add_argument("--question", help="one question; otherwise read one per line from stdin")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(list(argv) if argv is not None else None)

    model, processor = load(args.model_dir, args.device)
    # Read as training reads images: transparency onto the pad colour, 16-bit grey rescaled.
    image = load_image(args.image, pad_colour(processor.image_processor)) if args.image else None
    questions = [args.question] if args.question else (line.strip() for line in sys.stdin)
    for question in questions:
        if question:
            print(answer(model, processor, image, question, args.max_new_tokens), flush=True)


if __name__ == "__main__":
    main()
