"""Build a stage-1 Croc model from separate checkpoints: a CLIP vision tower and a Llama-family LM (e.g.
`openai/clip-vit-large-patch14-336` + `lmsys/vicuna-7b-v1.5`), with a fresh projector, as LLaVA-1.5 starts."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig

from ..configuration_croc import CrocConfig
from .common import (
    add_llava_tokens,
    build_processor,
    grow_vocabulary,
    materialize_croc,
    padded_vocab_size,
    read_state_dict,
)
from .from_original import _vision_config, _vision_state

# Croc's in-memory prefix for each part of a `LlamaForCausalLM` checkpoint.
LM_PREFIXES = {"model.": "model.language_model.", "lm_head.": "lm_head."}


def build_from_parts(
    vision_tower: str | Path,
    language_model: str | Path,
    out_dir: str | Path | None = None,
    vocab_multiple: int = 64,
    image_aspect_ratio: str = "square",
    **croc_fields,
):
    """A Croc model from a CLIP folder and a causal-LM folder, with `<image>`/`<pad>` appended to the vocabulary.

    Returns `(model, processor)`; both are also saved to `out_dir` when given. The projector is freshly initialised
    (stage 1 trains it); everything else is loaded as is.
    """
    vision_tower, language_model = Path(vision_tower), Path(language_model)
    tokenizer = AutoTokenizer.from_pretrained(language_model)
    image_token_id, pad_token_id = add_llava_tokens(tokenizer)
    vocab_size = padded_vocab_size(len(tokenizer), vocab_multiple)

    text_config = AutoConfig.from_pretrained(language_model)
    text_config.vocab_size = vocab_size
    text_config.pad_token_id = pad_token_id
    vision_config: CLIPVisionConfig = _vision_config(vision_tower)
    config = CrocConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        image_token_index=image_token_id,
        **croc_fields,
    )

    state = _vision_state(vision_tower)
    for name, tensor in read_state_dict(language_model).items():
        for prefix, target in LM_PREFIXES.items():
            if name.startswith(prefix):
                state[target + name[len(prefix):]] = tensor
                break
    if "lm_head.weight" not in state:  # tied LMs store only the embedding
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[name] = grow_vocabulary(state[name], vocab_size - state[name].shape[0])
    dtype = state["lm_head.weight"].dtype
    projector = _fresh_projector_state(config, dtype)
    state.update(projector)

    model = materialize_croc(config, state)
    processor = build_processor(tokenizer, vision_tower, config.vision_config, image_aspect_ratio)
    if out_dir is not None:
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    return model, processor


def _fresh_projector_state(config: CrocConfig, dtype) -> dict:
    """A randomly initialised LLaVA projector (only it is built for real; the rest stays on the meta device)."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    projector = LlavaMultiModalProjector(config).to(dtype)
    return {f"model.multi_modal_projector.{k}": v for k, v in projector.state_dict().items()}
