"""One entry per Croc family of what the trainer's end-to-end test (`tests/trainer/test_family_training.py`) needs to
know of it: a plain Hub-layout folder -> stage 1.5 from its cpu_tiny YAML -> stage 2 from that output -> a plain
folder exported back, which the parent class loads with the trained weights and runs to the Croc model's logits.

Adding a family to that test is one `TrainerSpec` entry in `TRAINER_SPECS`; what only that family's samples do stays
in its own `tests/trainer/test_<name>_stage15.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from transformers import (
    BatchFeature,
    Gemma3ForConditionalGeneration,
    Gemma3Processor,
    Gemma4ForConditionalGeneration,
    Glm4vForConditionalGeneration,
    Glm46VForConditionalGeneration,
    Idefics3ForConditionalGeneration,
    InternVLForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaOnevision15ForConditionalGeneration,
    Mistral3ForConditionalGeneration,
    PaliGemmaForConditionalGeneration,
    PreTrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeForConditionalGeneration,
    SmolVLMForConditionalGeneration,
)

from modeling_croc import (
    CrocGemma3ForConditionalGeneration,
    CrocGemma3Processor,
    CrocGemma4ForConditionalGeneration,
    CrocGemma4Processor,
    CrocGlm4vForConditionalGeneration,
    CrocGlm4vProcessor,
    CrocGlm46VForConditionalGeneration,
    CrocGlm46VProcessor,
    CrocIdefics3ForConditionalGeneration,
    CrocIdefics3Processor,
    CrocInternVLForConditionalGeneration,
    CrocInternVLProcessor,
    CrocLlavaNextForConditionalGeneration,
    CrocLlavaNextProcessor,
    CrocLlavaOnevision15ForConditionalGeneration,
    CrocLlavaOnevision15Processor,
    CrocMistral3ForConditionalGeneration,
    CrocMistral3Processor,
    CrocPaliGemmaForConditionalGeneration,
    CrocPaliGemmaProcessor,
    CrocQwen2_5_VLForConditionalGeneration,
    CrocQwen2VLForConditionalGeneration,
    CrocQwen2VLProcessor,
    CrocQwen3_5ForConditionalGeneration,
    CrocQwen3_5MoeForConditionalGeneration,
    CrocQwen3VLForConditionalGeneration,
    CrocQwen3VLMoeForConditionalGeneration,
    CrocQwen3VLProcessor,
    CrocSmolVLMForConditionalGeneration,
    CrocSmolVLMProcessor,
)
from modeling_croc.processing_croc_qwen2_5_vl import CrocQwen2_5_VLProcessor

from .families import save_tiny_llava_onevision1_5, save_tiny_qwen2_5_vl, save_tiny_qwen2_vl
from .gemma3 import save_tiny_gemma3
from .gemma4 import save_tiny_gemma4
from .glm4v import save_tiny_glm4v, save_tiny_glm46v
from .idefics3 import save_tiny_idefics3
from .internvl import save_tiny_internvl
from .llava_next import save_tiny_llava_next
from .mistral3 import save_tiny_mistral3
from .paligemma import save_tiny_paligemma
from .qwen3_vl import save_tiny_qwen3_5, save_tiny_qwen3_5_moe, save_tiny_qwen3_vl, save_tiny_qwen3_vl_moe
from .smolvlm import save_tiny_smolvlm

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
LM_Q_PROJ = "model.language_model.layers.0.self_attn.q_proj.weight"


def _image(data_dir: Path) -> Image.Image:
    return Image.open(data_dir / "images" / "000.png")


def _one_prompt(text: str) -> Callable[[Any, Path], BatchFeature]:
    """Inputs of one data image and `text` (the family's image placeholder in it) through the processor."""
    def build(processor: Any, data_dir: Path) -> BatchFeature:
        return processor(text=[text], images=[_image(data_dir)], return_tensors="pt")

    return build


def _llava_next_inputs(processor: Any, data_dir: Path) -> BatchFeature:
    """Two rows, a square-ish data image and a wide one: different AnyRes grids, padded together."""
    images = [_image(data_dir), Image.new("RGB", (50, 20), (10, 200, 30))]
    return processor(text=["<image>\nDescribe the image.", "<image>\nWhat is it?"], images=images, padding=True,
                     return_tensors="pt")


@contextmanager
def _gemma3_token_types_reach_the_forward() -> Iterator[None]:
    """Promises that every training forward of Gemma 3's own model (both stages) gets the placeholders'
    `token_type_ids` (its bidirectional image attention reads them), some of them images: at most 4 image rows of 4
    tokens a micro-batch, text-only micro-batches carrying zeros."""
    from transformers.models.gemma3 import modeling_gemma3

    seen: list[int | None] = []
    parent_forward = modeling_gemma3.Gemma3Model.forward

    def spy(self, *args, **kwargs):
        types = kwargs.get("token_type_ids")
        seen.append(None if types is None else int(types.sum()))
        return parent_forward(self, *args, **kwargs)

    modeling_gemma3.Gemma3Model.forward = spy
    try:
        yield
    finally:
        modeling_gemma3.Gemma3Model.forward = parent_forward
    assert seen and None not in seen and max(seen) > 0, seen


@contextmanager
def _gemma4_image_layout_reaches_the_forward() -> Iterator[None]:
    """Promises that every training forward of Gemma 4's own model with images (both stages) gets each image's patch
    positions (`image_position_ids`, one row per image) and the placeholders' `mm_token_type_ids` (its bidirectional
    image attention reads them), 1 at exactly as many placeholders as the images have soft tokens."""
    from transformers.models.gemma4 import modeling_gemma4

    seen: list[tuple[int, int] | None] = []
    parent_forward = modeling_gemma4.Gemma4Model.forward

    def spy(self, *args, **kwargs):
        positions, types = kwargs.get("image_position_ids"), kwargs.get("mm_token_type_ids")
        if kwargs.get("pixel_values") is not None:
            pooling = self.config.vision_config.pooling_kernel_size
            tokens = int((positions != -1).all(dim=-1).sum()) // pooling**2 if positions is not None else -1
            seen.append(None if types is None else (int(types.sum()), tokens))
        return parent_forward(self, *args, **kwargs)

    modeling_gemma4.Gemma4Model.forward = spy
    try:
        yield
    finally:
        modeling_gemma4.Gemma4Model.forward = parent_forward
    assert seen and None not in seen and all(marked == tokens > 0 for marked, tokens in seen), seen


def _suffix_types_problem(kwargs: dict[str, Any]) -> str | None:
    """What is wrong with a forward's PaliGemma `token_type_ids`, or None: each real row 0 from its start (the image
    first) then 1 to its end, the padding 0, as its processor writes a prefix and a suffix."""
    types, mask = kwargs.get("token_type_ids"), kwargs.get("attention_mask")
    if types is None or mask is None:
        return "no token_type_ids or attention_mask"
    for row, real in zip(types, mask.bool()):
        kinds = row[real].tolist()
        if row[~real].any() or kinds[0] != 0 or kinds[-1] != 1 or kinds != sorted(kinds):
            return f"types {kinds} on a row"
    return None


@contextmanager
def _paligemma_suffix_types_reach_the_forward() -> Iterator[None]:
    """Promises that every training forward of PaliGemma's own model (both stages) gets `token_type_ids` marking the
    suffix (`_suffix_types_problem`; `tests/trainer/test_paligemma_stage15.py` checks them element by element against
    the processor's)."""
    from unittest import mock

    from transformers.models.paligemma.modeling_paligemma import PaliGemmaModel

    problems: list[str | None] = []
    parent_forward = PaliGemmaModel.forward

    def spy(self, *args, **kwargs):
        problems.append(_suffix_types_problem(kwargs))
        return parent_forward(self, *args, **kwargs)

    with mock.patch.object(PaliGemmaModel, "forward", spy):
        yield
    assert problems and not any(problems), problems


@dataclass(frozen=True)
class TrainerSpec:
    """What the end-to-end trainer test needs of one family.

    Attributes:
        name: the test id and the parent's `model_type` (the Croc one is `croc_<name>`, the YAML
            `cpu_tiny/stage1_5_<name>.yaml`).
        save_plain: `(folder) -> folder`, a tiny plain folder laid out as the Hub's.
        parent_generation, croc_generation: the parent's and Croc's generation classes.
        processor_class: the parent processor's class name, written in plain and exported folders.
        croc_processor: the Croc processor class (what the trainer and the saved Croc folder use).
        export_processor: the class the exported folder's processor is loaded with for the logits check (the
            parent's own where it loads here; the Croc one where the parent's needs torchvision or num2words).
        template: the chat template both stages record in `croc_run.json` (stage 2 names none: the family's default).
        prompt: what the saved Croc processor renders for `MESSAGES` with a generation prompt, or None where not
            pinned.
        croc_code: the `processing_croc*.py` files the Croc folder carries for trust_remote_code.
        trained: state-dict entries stage 1.5 must change; frozen: entries it must leave as they were.
        refuses_packing: stage 2 with `--packing=true` stops in one line (each image's own token count, or
            `packing_refusal`: a regular expression of the family's own line).
        logits_inputs: `(processor, data_dir) -> inputs` of the logits check.
        inputs_layout: `(processor, inputs) -> bool`, the logits inputs exercise the family's own image layout
            (tiles, views, break tokens), or None.
        watch_training: a context manager around both stages' runs that checks what reached the model, or None.
        stage_args: more command-line arguments of both stages' runs (PaliGemma's: the reject budget that lets the
            shared data, whose text-only rows its format cannot express, train on its image rows; eager attention).
    """

    name: str
    save_plain: Callable[[Path], Path]
    parent_generation: type[PreTrainedModel]
    croc_generation: type[PreTrainedModel]
    processor_class: str
    croc_processor: type
    template: str
    prompt: str | None
    croc_code: frozenset[str]
    logits_inputs: Callable[[Any, Path], BatchFeature]
    export_processor: type | None = None
    trained: tuple[str, ...] = (LM_Q_PROJ,)
    frozen: tuple[str, ...] = ()
    refuses_packing: bool = False
    inputs_layout: Callable[[Any, BatchFeature], bool] | None = None
    watch_training: Callable[[], AbstractContextManager[None]] | None = None
    stage_args: tuple[str, ...] = ()
    packing_refusal: str | None = None

    def __str__(self) -> str:
        return self.name

    @property
    def config(self) -> str:
        return f"stage1_5_{self.name}.yaml"


QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_TURN = f"<|im_start|>user\n{QWEN_IMAGE}Describe the image.<|im_end|>\n<|im_start|>assistant\n"

QWEN3_VL_TRAINER_SPEC = TrainerSpec(
    name="qwen3_vl", save_plain=save_tiny_qwen3_vl,
    parent_generation=Qwen3VLForConditionalGeneration, croc_generation=CrocQwen3VLForConditionalGeneration,
    processor_class="Qwen3VLProcessor", croc_processor=CrocQwen3VLProcessor, template="qwen3_vl",
    prompt=QWEN_TURN,  # no default system message
    # Its processor's module imports the Qwen2.5-VL one, which travels with it.
    croc_code=frozenset({"processing_croc_qwen3_vl.py", "processing_croc_qwen2_5_vl.py"}),
    logits_inputs=_one_prompt(f"{QWEN_IMAGE}Describe the image."),
    # The LM and both kinds of merger (main and DeepStack) train; the vision blocks stay.
    trained=(LM_Q_PROJ, "model.visual.merger.linear_fc1.weight",
             "model.visual.deepstack_merger_list.0.linear_fc1.weight"),
    frozen=("model.visual.blocks.0.attn.qkv.weight",), refuses_packing=True)

QWEN2_5_VL_TRAINER_SPEC = TrainerSpec(
    name="qwen2_5_vl", save_plain=save_tiny_qwen2_5_vl,
    parent_generation=Qwen2_5_VLForConditionalGeneration, croc_generation=CrocQwen2_5_VLForConditionalGeneration,
    processor_class="Qwen2_5_VLProcessor", croc_processor=CrocQwen2_5_VLProcessor, template="qwen2_vl",
    prompt="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + QWEN_TURN,
    croc_code=frozenset({"processing_croc_qwen2_5_vl.py"}),
    logits_inputs=_one_prompt(f"{QWEN_IMAGE}Describe the image."), refuses_packing=True)

TRAINER_SPECS = [
    QWEN2_5_VL_TRAINER_SPEC,
    # Qwen2.5-VL's chat format (its default system message included) and image layout on Qwen2-VL's own model and
    # processor, whose module imports the Qwen2.5-VL one, which travels with it. The merger trains with the LM; the
    # vision blocks stay.
    dataclasses.replace(
        QWEN2_5_VL_TRAINER_SPEC, name="qwen2_vl", save_plain=save_tiny_qwen2_vl,
        parent_generation=Qwen2VLForConditionalGeneration, croc_generation=CrocQwen2VLForConditionalGeneration,
        processor_class="Qwen2VLProcessor", croc_processor=CrocQwen2VLProcessor,
        croc_code=frozenset({"processing_croc_qwen2_vl.py", "processing_croc_qwen2_5_vl.py"}),
        trained=(LM_Q_PROJ, "model.visual.merger.mlp.0.weight", "model.visual.merger.ln_q.weight"),
        frozen=("model.visual.blocks.0.attn.qkv.weight",)),
    # Qwen2.5-VL's chat format (its default system message included) and image layout on LLaVA-OneVision-1.5's own
    # model (a Qwen3 text model) and processor (`Exaone4_5_Processor`, transformers' class for it), whose module
    # imports the Qwen2.5-VL one, which travels with it. The merger trains with the LM; the vision blocks stay.
    dataclasses.replace(
        QWEN2_5_VL_TRAINER_SPEC, name="llava_onevision1_5", save_plain=save_tiny_llava_onevision1_5,
        parent_generation=LlavaOnevision15ForConditionalGeneration,
        croc_generation=CrocLlavaOnevision15ForConditionalGeneration,
        processor_class="Exaone4_5_Processor", croc_processor=CrocLlavaOnevision15Processor,
        croc_code=frozenset({"processing_croc_llava_onevision1_5.py", "processing_croc_qwen2_5_vl.py"}),
        trained=(LM_Q_PROJ, "model.visual.merger.linear_fc1.weight", "model.visual.merger.norm.weight"),
        frozen=("model.visual.blocks.0.attn.qkv.weight",)),
    QWEN3_VL_TRAINER_SPEC,
    # Qwen3-VL's processor, chat format and trained parts, on a mixture-of-experts language model whose experts and
    # router train with it.
    dataclasses.replace(
        QWEN3_VL_TRAINER_SPEC, name="qwen3_vl_moe", save_plain=save_tiny_qwen3_vl_moe,
        parent_generation=Qwen3VLMoeForConditionalGeneration, croc_generation=CrocQwen3VLMoeForConditionalGeneration,
        trained=(*QWEN3_VL_TRAINER_SPEC.trained, "model.language_model.layers.0.mlp.experts.gate_up_proj",
                 "model.language_model.layers.0.mlp.gate.weight")),
    # Qwen3-VL's processor on Qwen3.5's model, in Qwen3.5's chat format (the empty thinking block opens the answer):
    # no DeepStack merger; its first decoder layer is a linear-attention one (its projections train), its second a
    # full-attention one. The vision blocks stay.
    QWEN3_5_TRAINER_SPEC := dataclasses.replace(
        QWEN3_VL_TRAINER_SPEC, name="qwen3_5", save_plain=save_tiny_qwen3_5, template="qwen3_5",
        prompt=QWEN_TURN + "<think>\n\n</think>\n\n",
        parent_generation=Qwen3_5ForConditionalGeneration, croc_generation=CrocQwen3_5ForConditionalGeneration,
        trained=("model.language_model.layers.1.self_attn.q_proj.weight",
                 "model.language_model.layers.0.linear_attn.in_proj_qkv.weight",
                 "model.visual.merger.linear_fc1.weight")),
    # Qwen3.5's processor, chat format and trained parts on its mixture-of-experts model, whose routed experts (saved
    # one tensor per expert, merged back on resume), router and shared expert train with it.
    dataclasses.replace(
        QWEN3_5_TRAINER_SPEC, name="qwen3_5_moe", save_plain=save_tiny_qwen3_5_moe,
        parent_generation=Qwen3_5MoeForConditionalGeneration, croc_generation=CrocQwen3_5MoeForConditionalGeneration,
        trained=(*QWEN3_5_TRAINER_SPEC.trained, "model.language_model.layers.0.mlp.experts.gate_up_proj",
                 "model.language_model.layers.0.mlp.gate.weight",
                 "model.language_model.layers.0.mlp.shared_expert.up_proj.weight")),
    # GLM-4.1V's own processor (its video part left out) and chat format: "[gMASK]<sop>", the image block opening the
    # user turn, the generation prompt "<|assistant|>\n". The LM, the downsampling and the merger train; the vision
    # blocks stay. Its processor's module imports the Qwen2.5-VL one (the image budget), which travels with it.
    GLM4V_TRAINER_SPEC := TrainerSpec(
        name="glm4v", save_plain=save_tiny_glm4v,
        parent_generation=Glm4vForConditionalGeneration, croc_generation=CrocGlm4vForConditionalGeneration,
        processor_class="Glm4vProcessor", croc_processor=CrocGlm4vProcessor, template="glm4v",
        prompt="[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Describe the image.<|assistant|>\n",
        croc_code=frozenset({"processing_croc_glm4v.py", "processing_croc_qwen2_5_vl.py"}),
        logits_inputs=_one_prompt("<|begin_of_image|><|image|><|end_of_image|>Describe the image."),
        trained=(LM_Q_PROJ, "model.visual.merger.gate_proj.weight", "model.visual.downsample.weight"),
        frozen=("model.visual.blocks.0.attn.qkv.weight",), refuses_packing=True),
    # GLM-4.1V's chat format and trained parts on GLM-4.6V's model and processor (whose module imports the Qwen2.5-VL
    # one, which travels with it).
    dataclasses.replace(
        GLM4V_TRAINER_SPEC, name="glm46v", save_plain=save_tiny_glm46v,
        parent_generation=Glm46VForConditionalGeneration, croc_generation=CrocGlm46VForConditionalGeneration,
        processor_class="Glm46VProcessor", croc_processor=CrocGlm46VProcessor,
        croc_code=frozenset({"processing_croc_glm46v.py", "processing_croc_qwen2_5_vl.py"})),
    TrainerSpec(
        name="gemma3", save_plain=save_tiny_gemma3,
        parent_generation=Gemma3ForConditionalGeneration, croc_generation=CrocGemma3ForConditionalGeneration,
        processor_class="Gemma3Processor", croc_processor=CrocGemma3Processor, export_processor=Gemma3Processor,
        template="gemma3",
        # Gemma 3's own image marker, which the processor expands to the trained block.
        prompt="<start_of_turn>user\n<start_of_image>Describe the image.<end_of_turn>\n<start_of_turn>model\n",
        croc_code=frozenset({"processing_croc_gemma3.py"}),
        logits_inputs=_one_prompt("<start_of_image>Describe the image."),
        watch_training=_gemma3_token_types_reach_the_forward),
    TrainerSpec(
        name="gemma4", save_plain=save_tiny_gemma4,
        parent_generation=Gemma4ForConditionalGeneration, croc_generation=CrocGemma4ForConditionalGeneration,
        # Gemma 4's own processor holds a video processor, which needs torchvision: the export loads with Croc's.
        processor_class="Gemma4Processor", croc_processor=CrocGemma4Processor, template="gemma4",
        prompt="<|turn>user\n\n\n<|image|>\n\nDescribe the image.<turn|>\n<|turn>model\n",
        croc_code=frozenset({"processing_croc_gemma4.py"}),
        logits_inputs=_one_prompt("<|image|>Describe the image."),
        # The LM and the vision embedder (Gemma 4's projector) train; the vision tower stays.
        trained=(LM_Q_PROJ, "model.embed_vision.embedding_projection.weight"),
        frozen=("model.vision_tower.encoder.layers.0.mlp.gate_proj.linear.weight",), refuses_packing=True,
        watch_training=_gemma4_image_layout_reaches_the_forward),
    TrainerSpec(
        name="paligemma", save_plain=save_tiny_paligemma,
        parent_generation=PaliGemmaForConditionalGeneration, croc_generation=CrocPaliGemmaForConditionalGeneration,
        processor_class="PaliGemmaProcessor", croc_processor=CrocPaliGemmaProcessor, template="paligemma",
        prompt="<image>Describe the image.",  # the processor adds `<bos>` after the image, and the prefix's "\n"
        croc_code=frozenset({"processing_croc_paligemma.py"}),
        logits_inputs=_one_prompt("<image>Describe the image."),
        trained=(LM_Q_PROJ, "model.multi_modal_projector.linear.weight"),
        frozen=("model.vision_tower.encoder.layers.0.mlp.fc1.weight",), refuses_packing=True,
        packing_refusal="PaliGemma numbers each sample's positions from 1",  # PALIGEMMA_PACKING_REFUSAL
        watch_training=_paligemma_suffix_types_reach_the_forward,
        # The shared data's 4 text-only rows of 12 a file are rejected (one image a row); Gemma 2 in transformers has
        # no sdpa attention (its soft-capping): eager, in stage 2 too (the shared YAML names sdpa).
        stage_args=("--data.max_reject_fraction=0.5", "--model.attn_implementation=eager")),
    TrainerSpec(
        name="llava_next", save_plain=save_tiny_llava_next,
        parent_generation=LlavaNextForConditionalGeneration, croc_generation=CrocLlavaNextForConditionalGeneration,
        processor_class="LlavaNextProcessor", croc_processor=CrocLlavaNextProcessor,
        export_processor=LlavaNextProcessor,
        template="vicuna_v1",  # no template of its own: the stage's (the tiny folder's Llama LM chats so)
        prompt=None, croc_code=frozenset({"processing_croc_llava_next.py"}),
        logits_inputs=_llava_next_inputs, refuses_packing=True),
    TrainerSpec(
        name="internvl", save_plain=save_tiny_internvl,
        parent_generation=InternVLForConditionalGeneration, croc_generation=CrocInternVLForConditionalGeneration,
        processor_class="InternVLProcessor", croc_processor=CrocInternVLProcessor, template="internvl",
        prompt="<|im_start|>user\n<IMG_CONTEXT>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n",
        croc_code=frozenset({"processing_croc_internvl.py"}),
        logits_inputs=_one_prompt("<IMG_CONTEXT>\nDescribe the image."),
        inputs_layout=lambda processor, inputs: inputs["pixel_values"].shape[0] > 1),  # tiled
    TrainerSpec(
        name="mistral3", save_plain=save_tiny_mistral3,
        parent_generation=Mistral3ForConditionalGeneration, croc_generation=CrocMistral3ForConditionalGeneration,
        processor_class="PixtralProcessor", croc_processor=CrocMistral3Processor, template="mistral3",
        prompt="[INST][IMG]Describe the image.[/INST]", croc_code=frozenset({"processing_croc_mistral3.py"}),
        logits_inputs=_one_prompt("[INST][IMG]Describe the image.[/INST]"),
        inputs_layout=lambda processor, inputs: bool((inputs["input_ids"] == processor.image_break_token_id).any())),
    SMOLVLM_TRAINER_SPEC := TrainerSpec(
        name="smolvlm", save_plain=save_tiny_smolvlm,
        parent_generation=SmolVLMForConditionalGeneration, croc_generation=CrocSmolVLMForConditionalGeneration,
        processor_class="SmolVLMProcessor", croc_processor=CrocSmolVLMProcessor, template="smolvlm",
        prompt="<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:",
        croc_code=frozenset({"processing_croc_smolvlm.py"}),
        logits_inputs=_one_prompt("<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"),
        trained=("model.text_model.layers.0.self_attn.q_proj.weight",),
        inputs_layout=lambda processor, inputs: inputs["pixel_values"].shape[1] > 1),  # split into views
    # SmolVLM's data path, trained parts and views on Idefics3's classes, processor and chat format (SmolVLM's opened
    # by Llama 3's BOS, which the template writes: the dataset adds no other). The exported processor is Croc's
    # subclass module, which imports SmolVLM's (its mixin), which travels with it.
    dataclasses.replace(
        SMOLVLM_TRAINER_SPEC, name="idefics3", save_plain=save_tiny_idefics3,
        parent_generation=Idefics3ForConditionalGeneration, croc_generation=CrocIdefics3ForConditionalGeneration,
        processor_class="Idefics3Processor", croc_processor=CrocIdefics3Processor, template="idefics3",
        prompt="<|begin_of_text|>User:<image>Describe the image.<end_of_utterance>\nAssistant:",
        croc_code=frozenset({"processing_croc_idefics3.py", "processing_croc_smolvlm.py"}),
        logits_inputs=_one_prompt("<|begin_of_text|>User:<image>Describe the image.<end_of_utterance>\nAssistant:")),
]
