"""`python -m modeling_croc.chat MODEL_DIR --image PATH [--question TEXT]`: answer a question about an image.

The answering functions here (`answer_batch`, `continuation_logprob`) are also what the lmms-eval and VLMEvalKit
integrations (`modeling_croc.evaluation`) call, so a benchmark prompts a model exactly as the chat does.

Without `--question`, questions are read from standard input, one per line, about the same image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from . import CrocForConditionalGeneration  # noqa: F401  (registers the Auto classes)
from .constants import CROC_ONLY_PREFIXES, IMAGE_TOKEN
from .images import ImageFileError, load_image
from .loading import saved_config
from .model_folders import (
    ModelFolderError,
    checked_from_pretrained,
    hub_model_problem,
    model_folder_problem,
    nothing_at,
    overlong_name,
)
from .processing_croc import pad_colour
from .provenance import is_hub_id


def user_turn(images: Sequence[Image.Image], text: str) -> dict:
    """One user message of the chat template: the images, then the text. `<image>` markers already in `text` (some
    benchmarks write them) are dropped, because the template places each image itself (LLaVA-1.5: images first)."""
    text = text.replace(IMAGE_TOKEN, "").strip() if IMAGE_TOKEN in text else text
    return {"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]}


def _special_tokens(tokenizer, prompts: Sequence[str]) -> dict[str, bool]:
    """The tokenizer's keyword for rendered `prompts`: a chat template that writes the BOS itself (Idefics3's) gets no
    second one from a tokenizer that adds it (Llama 3's), as transformers' own `apply_chat_template(tokenize=True)`
    decides and as training tokenises its rows (one BOS)."""
    bos = tokenizer.bos_token
    return {"add_special_tokens": False} if bos and all(prompt.startswith(bos) for prompt in prompts) else {}


def answer_batch(
    model,
    processor,
    questions: Sequence[tuple[Sequence[Image.Image], str]],
    **generation: Any,
) -> list[str]:
    """The answers of `model` to `questions` (each: its images, possibly none, and its text), in one left-padded
    `generate` call; `generation` goes to `generate` (greedy with 64 new tokens unless it says otherwise). The decoded
    new tokens, stripped, one string per question."""
    prompts = [processor.apply_chat_template([user_turn(images, text)], add_generation_prompt=True)
               for images, text in questions]
    # One list of images per prompt: Gemma 3's and SmolVLM's processors read a flat list as the images of a single
    # prompt and refuse any batch of two or more; the other families' processors take the nested form as well.
    images = [list(question_images) for question_images, _ in questions]
    tokenizer = processor.tokenizer
    # Left padding: every prompt of the batch then ends where its answer starts.
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = processor(images=images if any(images) else None, text=prompts, padding=True, return_tensors="pt",
                           **_special_tokens(tokenizer, prompts))
    finally:
        tokenizer.padding_side = previous_side
    # PaliGemma's processor returns `labels` with every prompt (all ignored without a suffix): not a prompt's input.
    inputs.pop("labels", None)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    settings = {"max_new_tokens": 64, "do_sample": False, "pad_token_id": tokenizer.pad_token_id, **generation}
    with torch.no_grad():
        output = model.generate(**inputs, **settings)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]

def answer(model, processor, image: Image.Image | None, question: str, max_new_tokens: int = 64) -> str:
    """Greedy answer of `model` to `question` about `image` (or a text-only question), via `generate`."""
    images = [image] if image is not None else []
    return answer_batch(model, processor, [(images, question)], max_new_tokens=max_new_tokens)[0]


def continuation_logprob(
    model, processor, images: Sequence[Image.Image], context: str, continuation: str
) -> tuple[float, bool]:
    """(log-probability of `continuation` as the assistant's answer to `context` about `images`, whether greedy
    decoding would produce exactly it). The answer is scored as the chat template renders it, answer text and
    end-of-turn token, tokenised as training tokenises an answer: after the generation prompt's own ids, not by
    tokenising the whole conversation again, which a tokenizer may merge across the prompt's end (Qwen2's joins the
    prompt's closing newline and an answer's leading ones into one token)."""
    user = user_turn(images, context)
    prompt = processor.apply_chat_template([user], add_generation_prompt=True)
    reply = {"role": "assistant", "content": [{"type": "text", "text": continuation}]}
    full = processor.apply_chat_template([user, reply])
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the answer turn differently from the generation prompt")
    inputs = processor(images=list(images) or None, text=[prompt], return_tensors="pt",
                       **_special_tokens(processor.tokenizer, [prompt]))
    inputs.pop("labels", None)  # PaliGemma's processor's, of the prompt alone (see `answer_batch`)
    prompt_length = inputs["input_ids"].shape[1]
    answer = torch.tensor([continuation_ids(processor.tokenizer, full[len(prompt):])])
    # The answer's token types: text (0) where they mark image placeholders, the suffix (1) where the processor's
    # mark it (PaliGemma's: its prefix is one bidirectional block, which the answer must not join).
    answer_type = 1 if getattr(processor, "token_types", "image") == "suffix" else 0
    for key, fill in (("input_ids", None), ("attention_mask", 1), ("token_type_ids", answer_type),
                      ("mm_token_type_ids", 0)):
        if key in inputs:  # the per-token inputs grow by the answer
            tail = answer if fill is None else torch.full_like(answer, fill, dtype=inputs[key].dtype)
            inputs[key] = torch.cat([inputs[key], tail], dim=1)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    targets = inputs["input_ids"][0, prompt_length:]
    with torch.no_grad():
        logits = model(**inputs).logits[0, prompt_length - 1:-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    score = float(logprobs.gather(-1, targets[:, None]).sum())
    return score, bool(torch.equal(logits.argmax(dim=-1), targets))


def continuation_ids(tokenizer, text: str) -> list[int]:
    """`text` tokenised as the continuation of a prompt, the way `trainer.data.CrocSupervisedDataset` tokenises an
    answer: after the EOS token as an anchor (text after a special token starts no new word, and nothing merges
    across it), whose ids are then dropped."""
    anchor = tokenizer.encode(tokenizer.eos_token, add_special_tokens=False)
    ids = tokenizer.encode(tokenizer.eos_token + text, add_special_tokens=False)
    if ids[:len(anchor)] != anchor:
        raise ValueError(f"the tokenizer merged its EOS token {tokenizer.eos_token!r} into {text[:40]!r}")
    return ids[len(anchor):]


def load(model_dir: str, device: str = "cpu"):
    """The model (eval mode) and processor saved in `model_dir`."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir).to(device).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything loads, the arguments the chat could only fail on after the model load (minutes for a
    7B model): an empty option (an unset variable), a name the file system cannot take, a device torch does not
    know or that is not there, no new tokens, a question that is not text."""
    for option, value in (("model_dir", args.model_dir), ("--image", args.image), ("--question", args.question)):
        if value is not None and not value.strip():
            raise SystemExit(f"chat error: {option} is empty (an unset variable?)"
                             + (": leave it out to read questions from standard input" if option == "--question"
                                else ": leave it out for a text-only chat" if option == "--image" else ""))
    for option, value in (("model_dir", args.model_dir), ("--image", args.image)):
        problem = overlong_name(value) if value else None
        if problem is not None:
            raise SystemExit(f"chat error: {option}: {problem}")
    if args.max_new_tokens < 1:
        raise SystemExit(f"chat error: --max-new-tokens {args.max_new_tokens}: an answer needs at least 1 token")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise SystemExit(f"chat error: --device {args.device}: {' '.join(str(error).split())[:200]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"chat error: --device {args.device}: no CUDA GPU is visible here; use --device cpu")
    if args.question is not None:
        text_question(args.question)


def text_question(question: str) -> str:
    """`question` when it is text; a question whose bytes were not UTF-8 (Python keeps them as lone surrogates)
    cannot be tokenised: one line, not the tokenizer's TypeError."""
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise SystemExit(f"chat error: the question {question.encode('utf-8', 'replace').decode()[:60]!r} is not "
                         "UTF-8 text; give it in UTF-8") from None
    return question


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modeling_croc.chat", description=__doc__)
    parser.add_argument("model_dir", help="a Croc (or plain llava) folder, e.g. a trained stage's output_dir")
    parser.add_argument("--image", help="image file; leave out for a text-only chat")
    parser.add_argument("--question", help="one question; otherwise read one per line from stdin")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer, in tokens (default 64)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda when a GPU is visible, else cpu)")
    args = parser.parse_args(list(argv) if argv is not None else None)

    check_arguments(args)
    if not Path(args.model_dir).expanduser().exists():
        if not is_hub_id(args.model_dir):
            raise SystemExit(f"chat error: {args.model_dir}: no such folder (and not a Hub repository id)")
        why = hub_model_problem(args.model_dir)  # most often a local folder not made yet, `tiny_out/stage2`
        if why is not None:
            raise SystemExit(f"chat error: {args.model_dir} is no local folder ({nothing_at(args.model_dir)}) and, "
                             f"as a Hub id, {why}")
    if Path(args.model_dir).expanduser().is_file():  # transformers would read it as a malformed Hub id
        raise SystemExit(f"chat error: {args.model_dir} is a file: give the model folder that holds it")
    if Path(args.model_dir).expanduser().is_dir():
        # A local folder without config.json (or with a broken one) is no model: said as the loader and the trainer
        # say it, before AutoProcessor's "Unrecognized processing class" about a processor it never had; a LoRA
        # run's adapter folder with the command that merges it into one.
        problem = model_folder_problem(Path(args.model_dir).expanduser())
        if problem is not None:
            raise SystemExit(f"chat error: {problem}")
        try:
            saved_config(Path(args.model_dir).expanduser())
        except ValueError as error:
            raise SystemExit(f"chat error: {error}") from None
    try:
        processor = AutoProcessor.from_pretrained(args.model_dir)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        # No processor files there, the Hub not reachable, not a model folder, or a processor file of another shape
        # (a processor_config.json that is a list): the folder's fault, in one line.
        raise SystemExit(f"chat error: {args.model_dir}: its processor does not load ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]})") from None
    # Every question is rendered by the chat template: without one the first answer would end in a traceback, after
    # the model load (minutes for a 7B model).
    if not getattr(processor, "chat_template", None):
        raise SystemExit(f"chat error: {args.model_dir}: its processor has no chat template (chat_template.jinja), "
                         "which the chat renders every question with")
    try:  # rendered once here: a template that does not render would fail the first question, after the model load
        processor.apply_chat_template([user_turn([None] if args.image else [], "?")], add_generation_prompt=True)
    except jinja2.TemplateError as error:
        raise SystemExit(f"chat error: {args.model_dir}: its chat template (chat_template.jinja) does not render: "
                         f"{type(error).__name__}: {' '.join(str(error).split())[:200]}") from None
    # Read as training reads images: transparency onto the pad colour, 16-bit grey rescaled. Before the model loads,
    # so a missing or unreadable image costs a line, not minutes.
    try:
        image = (load_image(args.image, pad_colour(processor.image_processor),
                            image_processor=processor.image_processor) if args.image else None)
    except ImageFileError as error:
        raise SystemExit(f"chat error: {error}") from None
    # Checked against its config.json as training loads it: a weight missing or dropped unread would answer as if
    # trained, a file cut short would end in a traceback.
    try:
        model = checked_from_pretrained(AutoModelForImageTextToText, args.model_dir, may_lack=CROC_ONLY_PREFIXES)
    except ModelFolderError as error:
        raise SystemExit(f"chat error: {' '.join(str(error).split())}") from None
    model = model.to(args.device).eval()
    questions = [args.question] if args.question is not None else (line.strip() for line in sys.stdin)
    for question in questions:
        if question:
            print(answer(model, processor, image, text_question(question), args.max_new_tokens), flush=True)


if __name__ == "__main__":
    main()
