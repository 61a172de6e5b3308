"""Held-out evaluation: greedy `generate` on the test questions, exact match per question type, chance levels.

Batched generation pads on the left, so every prompt ends where its answer starts; the test suite checks that the
batched answers equal `modeling_croc.chat.answer` one question at a time.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from modeling_croc import CrocForConditionalGeneration, CrocProcessor
from modeling_croc.chat import answer_batch
from modeling_croc.constants import IMAGE_TOKEN
from modeling_croc.images import load_image
from modeling_croc.processing_croc import pad_colour

OVERALL = "overall"


@dataclass(frozen=True)
class Question:
    """One held-out question: the user text (without the image marker), its image, type and reference answer."""

    id: str
    image: str
    question_type: str
    text: str
    answer: str


def load_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """The questions of a `qa_test.json` (or `qa_train.json`) file, in file order."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    questions = [
        Question(row["id"], row["image"], row["question_type"],
                 row["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip(), row["answer"])
        for row in rows
    ]
    return questions[:limit] if limit is not None else questions


def normalize_answer(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: "Top left." -> "top left"."""
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .,!?;:\"'")


def load_model(model_dir: str | Path) -> tuple[CrocForConditionalGeneration, CrocProcessor]:
    """A saved demo model in eval mode and its processor."""
    model = CrocForConditionalGeneration.from_pretrained(model_dir).eval()
    return model, CrocProcessor.from_pretrained(model_dir)


def generate_answers(
    model: CrocForConditionalGeneration,
    processor: CrocProcessor,
    questions: list[Question],
    image_root: str | Path,
    batch_size: int = 64,
    max_new_tokens: int = 8,
    desc: str = "evaluate",
) -> list[str]:
    """Greedy answers to `questions`, `batch_size` at a time (`modeling_croc.chat.answer_batch`), with a progress
    bar."""
    answers: list[str] = []
    # The reader training uses (transparency onto the pad colour), so the model sees its training pixels.
    fill = pad_colour(processor.image_processor)
    for start in tqdm(range(0, len(questions), batch_size), desc=desc, unit="batch"):
        batch = [([load_image(Path(image_root) / q.image, fill, image_processor=processor.image_processor)], q.text)
                 for q in questions[start:start + batch_size]]
        answers += answer_batch(model, processor, batch, max_new_tokens=max_new_tokens)
    return answers


def accuracy_by_type(questions: list[Question], predictions: list[str]) -> dict[str, dict[str, float]]:
    """`{type: {"correct", "total", "accuracy"}}` by exact match after `normalize_answer`, plus `OVERALL`."""
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for question, prediction in zip(questions, predictions, strict=True):
        hit = normalize_answer(prediction) == normalize_answer(question.answer)
        for key in (question.question_type, OVERALL):
            total[key] += 1
            correct[key] += int(hit)
    return {key: {"correct": correct[key], "total": total[key], "accuracy": correct[key] / total[key]}
            for key in sorted(total, key=lambda k: (k == OVERALL, k))}


def chance_levels(train_questions: list[Question], test_questions: list[Question]) -> dict[str, dict[str, float]]:
    """Two blind baselines per question type (and `OVERALL`), for the table's chance column:

    * `uniform`: 1 / the number of distinct answers the type has in training (guessing among them at random);
    * `majority`: test accuracy of always giving the type's most frequent training answer (a model that ignores
      the image but learned the answer prior scores this).
    """
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for question in train_questions:
        answers[question.question_type][normalize_answer(question.answer)] += 1
    majority = {qtype: counts.most_common(1)[0][0] for qtype, counts in answers.items()}
    blind = [majority.get(q.question_type, "") for q in test_questions]
    hits = accuracy_by_type(test_questions, blind)
    levels: dict[str, dict[str, float]] = {}
    for qtype, stats in hits.items():
        if qtype == OVERALL:
            types = Counter(q.question_type for q in test_questions)
            uniform = sum(n / len(answers[t]) for t, n in types.items() if answers[t]) / len(test_questions)
        else:
            uniform = 1.0 / len(answers[qtype]) if answers[qtype] else 0.0
        levels[qtype] = {"uniform": uniform, "majority": stats["accuracy"]}
    return levels
