"""The demo's starting model ("stage 0"): a Croc built from config, with a tokenizer fitted to the data and a vision
tower pretrained contrastively on the training scenes (`demo.tower`), as the paper starts from a pretrained CLIP.

A Llama-family 32K vocabulary on a 128-wide language model puts ~90% of every training step into the output layer
and its softmax (measured on the synthetic scenes: 1.4 s of a 2.7 s step). The synthetic scenes use a few hundred
words, so the demo trains a small SentencePiece BPE model (byte fallback, Llama conventions: `<unk>`, `<s>`, `</s>`,
then `<image>` and `<pad>` appended exactly as LLaVA-1.5 appends them to Vicuna's) on the *training* texts rendered
through the stage templates. The tokenizer never sees the held-out split. The model folder written here is what
`python -m modeling_croc.convert from-parts` produces for a real run, so stage 1 loads it through the same
`model.name_or_path` path as a real stage 1 does.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from croc_testing.tiny import tiny_croc_config, tiny_croc_processor
from modeling_croc import IMAGE_TOKEN, CrocForConditionalGeneration, get_template
from modeling_croc.convert.common import add_llava_tokens

from .tower import TowerPretraining, pretrain_vision_tower

logger = logging.getLogger(__name__)

# Training files of a synthetic-scenes folder and the template each is rendered with in its stage.
TOKENIZER_CORPUS: tuple[tuple[str, str], ...] = (
    ("brief_captions.json", "plain"),
    ("detailed_captions.json", "vicuna_v1"),
    ("qa_train.json", "vicuna_v1"),
    ("text_only.json", "vicuna_v1"),
)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the demo model: a CLIP-style vision tower and a Llama-style language model, random init.

    Attributes:
        hidden_size, num_layers, num_heads: the language model (intermediate size is 2 x hidden).
        vision_hidden_size, vision_layers: the vision tower (4 heads; features of layer -2, CLS dropped, as LLaVA).
        image_size, patch_size: `(image_size // patch_size) ** 2` visual tokens per image.
        vocab_size: SentencePiece pieces before `<image>` and `<pad>` are appended (256 of them are byte pieces).
        prompt_pool_size: the Croc prompt pool (the paper's 2048 : 576, about 3.5 pool tokens per visual token).
        tower: the contrastive pretraining of the vision tower (stage 0).
    """

    hidden_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    vision_hidden_size: int = 128
    vision_layers: int = 3
    image_size: int = 84
    patch_size: int = 14
    vocab_size: int = 1024
    prompt_pool_size: int = 128
    tower: TowerPretraining = field(default_factory=TowerPretraining)

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def rendered_texts(data_dir: str | Path, files: Iterable[tuple[str, str]] = TOKENIZER_CORPUS) -> Iterator[str]:
    """Every training row of `data_dir` as the text its stage's template renders (image marker removed)."""
    for name, template_name in files:
        template = get_template(template_name)
        rows = json.loads((Path(data_dir) / name).read_text(encoding="utf-8"))
        for row in rows:
            segments = template.segments(row["conversations"], row.get("image") is not None, eos_token="")
            yield "".join(segment.text for segment in segments).replace(IMAGE_TOKEN, "")


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A Llama-convention SentencePiece BPE tokenizer (`LlamaTokenizer`) fitted on `texts`, plus `<image>`/`<pad>`.

    Deterministic: one training thread, fixed settings; SentencePiece has no other randomness for BPE.
    """
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,  # Llama's ids; <pad> is appended after <image>, as in LLaVA-1.5
        normalization_rule_name="identity", hard_vocab_limit=False, minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "tokenizer.model").write_bytes(model.getvalue())
        tokenizer = LlamaTokenizer.from_pretrained(folder, legacy=False, add_bos_token=True, add_eos_token=False)
    add_llava_tokens(tokenizer)
    tokenizer.model_max_length = 2048
    return tokenizer


def build_stage0(spec: ModelSpec, data_dir: str | Path, out_dir: str | Path, seed: int) -> dict[str, float]:
    """Write the demo's stage-0 model and its processor to `out_dir`: random-init language model and projector, the
    vision tower pretrained contrastively (`spec.tower`). Returns the tower pretraining's summary.

    The weights depend on `seed` only (the global torch generator is seeded right before construction).
    """
    out = Path(out_dir)
    tokenizer = train_tokenizer(rendered_texts(data_dir), spec.vocab_size)
    config = tiny_croc_config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        vision_hidden_size=spec.vision_hidden_size,
        vision_layers=spec.vision_layers,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        prompt_pool_size=spec.prompt_pool_size,
    )
    torch.manual_seed(seed)
    model = CrocForConditionalGeneration(config)
    processor = tiny_croc_processor(spec.image_size, spec.patch_size, tokenizer=tokenizer)
    tower_summary: dict[str, float] = {"steps": 0}
    if spec.tower.steps > 0:
        tower_state, tower_summary = pretrain_vision_tower(config.vision_config, tokenizer, processor.image_processor,
                                                           data_dir, spec.tower, seed)
        model.model.vision_tower.load_state_dict(tower_state)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "demo_model_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")
    logger.info("stage-0 model: %s parameters, vocabulary %d, %d visual tokens per image -> %s",
                f"{sum(p.numel() for p in model.parameters()):,}", len(tokenizer), spec.num_image_tokens, out)
    return tower_summary
