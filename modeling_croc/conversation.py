"""Conversation templates, defined once and rendered two ways: as the text segments training tokenises (each flagged
supervised or not) and as the processor's Jinja chat template that inference renders. One definition means the
tokens a model is trained on are the tokens it is prompted with; `tests/test_one_input_pipeline.py` checks it.

* ``plain`` (stage 1): ``<image>`` + caption + ``\\n``; only the caption and its newline are supervised, the human
  text is dropped (LLaVA's pretraining format); a row must be one image, one question and one answer.
* ``vicuna_v1`` (stages 1.5 and 2): ``"{system} USER: <image>\\n{question} ASSISTANT: {answer}</s>USER: ..."``;
  only the answers and their ``</s>`` are supervised (LLaVA-1.5's and Croc's format).
* ``qwen_1_5`` (ViCToR's stages 1.5 and 2, Qwen2/2.5 LMs): ChatML, ``"<|im_start|>system\\nYou are a helpful
  assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}
  <|im_end|>\\n"``; the answers and their ``<|im_end|>\\n`` are supervised.

Rows are ``{"conversations": [{"from": "human" | "gpt", "value": str}, ...], "image": str | None, ...}``. Segment
boundaries fall where the tokenizer would split anyway (before a space, or right after a special token), which is
what lets training tokenise segment by segment and still produce the ids of the whole string. One exception: after
ChatML's ``assistant\n``, Qwen2's tokenizer merges the newline with an answer's leading newlines when the whole string
is tokenised; training keeps the prompt's ids, those of the generation prompt at inference (`trainer.data`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .constants import IMAGE_TOKEN

USER, ASSISTANT = "user", "assistant"
# LLaVA files say human/gpt; chat-style files say user/assistant. Anything else is a data error.
ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class Segment(NamedTuple):
    """A piece of the rendered conversation; `supervised` pieces are the ones the loss is computed on."""

    text: str
    supervised: bool


def conversation_role(turn: Mapping[str, str]) -> str:
    """`user` or `assistant` for a LLaVA (`from`) turn."""
    try:
        return ROLES[turn["from"]]
    except KeyError:
        raise ValueError(f"unknown conversation role {turn.get('from')!r}; expected one of {sorted(ROLES)}") from None


def _image_turn(conversations: Sequence[Mapping[str, str]]) -> int | None:
    """The index of the first user turn whose text holds the image marker, or None. The image opens that turn, as
    LLaVA's `preprocess_multimodal` (llava/train/train.py) puts the marker at the front of the turn that held it: a
    row asking about its image in its second question is trained with the image there, not moved before the first
    question. Validation rejects a marker in an answer (`too_many_image_markers`), so none is looked for there."""
    return next((index for index, turn in enumerate(conversations)
                 if conversation_role(turn) == USER and IMAGE_TOKEN in turn["value"]), None)


def _without_marker(text: str) -> str:
    # A turn that carried the marker loses it and the whitespace around it ("<image>\nQ" and "Q\n<image>" -> "Q").
    return text.replace(IMAGE_TOKEN, "").strip() if IMAGE_TOKEN in text else text


@dataclass(frozen=True)
class ConversationTemplate:
    """How a conversation becomes text. Every field is a literal piece of the rendered string.

    Attributes:
        name: registry key.
        system: text before the first turn, including its trailing separator ("" for none).
        user_text: whether user text is rendered (False: only the user turn's image is, as in `plain`).
        user_prefix, user_suffix: around each rendered user turn.
        image_prefix: what an image contributes at the front of its user turn (`<image>` + separator).
        assistant_prefix: before each answer, unsupervised (and the generation prompt at inference).
        answer_prefix, answer_suffix: around each answer, supervised with it; `{eos}` is the tokenizer's EOS.
        system_prefix, system_suffix: around a system message that replaces the default one at inference (ChatML
            wraps it in its own turn); `system_suffix=None` keeps the default system text's trailing separator.
        chat_image_prefix: what an image renders as in the chat template when the processor's placeholder expands to
            more than `image_prefix` holds around the marker (Gemma 3's `<start_of_image>` becomes its whole
            blank-line-wrapped block); None: `image_prefix`, its marker the processor's placeholder.
        strip_image_turn: whether a user turn with an image loses its surrounding whitespace (False keeps the blank
            lines of an image block that opens or closes the turn, as Gemma 3's processor and Gemma 4's chat template
            write them; training and the chat template then trim the text only).
        image_user_prefix: the user prefix of a turn that opens with an image, where it differs from a text turn's
            (SmolVLM's `User:` right before the image, `User: ` before text); None: `user_prefix`.
        final_assistant_prefix: before each answer after the conversation's last user turn, and the generation
            prompt, where it differs from the earlier answers' (Qwen3.5 writes its empty thinking block there only);
            None: `assistant_prefix`.
        trim_text: whether every turn's text (questions and answers) loses its surrounding whitespace, as the chat
            templates of Gemma 3, Gemma 4 and Qwen3.5 trim each message's content.
        bos_after_image: whether the tokenizer's BOS follows the image instead of opening the sequence (PaliGemma's
            processor writes the image tokens, then `<bos>`, then the prefix); training places it there.
        chat_user_suffix: what closes a user turn in the chat template where the processor writes the training
            text's `user_suffix` itself (PaliGemma's adds the prefix's newline, and the `<bos>`); None:
            `user_suffix`.
        single_exchange: whether the format holds one image, one question and one answer only (PaliGemma's prefix
            -> suffix): a row with another shape cannot be rendered (`cannot_render`), and the chat template
            refuses a system message, a turn without an image and a second image.
        image_caption_only: whether training takes only rows of one image and one exchange, as `cannot_render`
            says, while the chat template stays unrestricted (`plain`, stage 1: LLaVA's `preprocess_plain` asserts an
            image marker and two turns; this format drops the question, so a text row trained a bare answer, one
            micro-batch of text rows gave a loss with no gradient, and several exchanges one caption of all the
            answers).
    """

    name: str
    system: str
    user_text: bool
    user_prefix: str
    user_suffix: str
    image_prefix: str
    assistant_prefix: str
    answer_prefix: str
    answer_suffix: str
    system_prefix: str = ""
    system_suffix: str | None = None
    chat_image_prefix: str | None = None
    strip_image_turn: bool = True
    image_user_prefix: str | None = None
    final_assistant_prefix: str | None = None
    trim_text: bool = False
    bos_after_image: bool = False
    chat_user_suffix: str | None = None
    single_exchange: bool = False
    image_caption_only: bool = False

    def cannot_render(self, conversations: Sequence[Mapping[str, str]], has_image: bool) -> str | None:
        """Why this format cannot express the row, or None: a `single_exchange` or `image_caption_only` format
        takes one image row of one question and one answer, in that order."""
        if not (self.single_exchange or self.image_caption_only):
            return None
        roles = [conversation_role(turn) for turn in conversations]
        if not has_image:
            why = ("it trains an image's caption: a text row would be a bare answer, its question dropped"
                   if self.image_caption_only else "its processor refuses text alone")
            return f"the {self.name} format needs an image in every row ({why})"
        if roles != [USER, ASSISTANT]:
            return (f"the {self.name} format holds one question and one answer; this row has {len(roles)} turns "
                    f"({', '.join(roles) or 'none'})")
        return None

    # ---- training: segments ------------------------------------------------------------------------------------

    def segments(
        self, conversations: Sequence[Mapping[str, str]], has_image: bool, eos_token: str = "</s>"
    ) -> list[Segment]:
        """The row rendered as segments. With `has_image` exactly one image marker opens the user turn that held
        the row's marker (`_image_turn`), or the first user turn when no user turn holds one (a row that starts with
        an answer gets an empty user turn for it); a text-only row gets none, and stray markers are dropped."""
        image_turn = _image_turn(conversations) if has_image else None
        turns = [(conversation_role(turn), _without_marker(turn["value"])) for turn in conversations]
        if self.trim_text:
            turns = [(role, text.strip()) for role, text in turns]
        if has_image and image_turn is None:
            image_turn = next((i for i, (role, _) in enumerate(turns) if role == USER), None)
            if image_turn is None or any(role == ASSISTANT for role, _ in turns[:image_turn]):
                turns.insert(0, (USER, ""))
                image_turn = 0

        segments: list[Segment] = []
        prompt = self.system
        last_user = max((i for i, (role, _) in enumerate(turns) if role == USER), default=-1)
        for index, (role, text) in enumerate(turns):
            if role == USER:
                prompt += self._user_turn(text if self.user_text else "", index == image_turn)
            else:
                segments.append(Segment(prompt + self._assistant_prefix(final=index > last_user), False))
                answer = self.answer_suffix.replace("{eos}", eos_token)
                segments.append(Segment(f"{self.answer_prefix}{text}{answer}", True))
                prompt = ""
        if prompt:  # a trailing question without an answer: context only
            segments.append(Segment(prompt, False))
        return [segment for segment in segments if segment.text or segment.supervised]

    def _assistant_prefix(self, final: bool) -> str:
        return self.final_assistant_prefix if final and self.final_assistant_prefix is not None \
            else self.assistant_prefix

    def _user_turn(self, text: str, with_image: bool) -> str:
        if with_image and not self.strip_image_turn:
            # The image block keeps its blank lines and the text is trimmed, as the chat template writes the turn:
            # untrimmed, a turn's own whitespace ("Hello.\n" before the suffix) was trained that the chat trims.
            text = text.strip()
        body = self.image_prefix + text if with_image else text
        if with_image and self.strip_image_turn:
            body = body.strip()
        prefix = self.image_user_prefix if with_image and self.image_user_prefix is not None else self.user_prefix
        if not body and not prefix:
            return ""
        return f"{prefix}{body}{self.user_suffix}"

    # ---- inference: the Jinja chat template --------------------------------------------------------------------

    def chat_template(self, eos_token: str = "</s>", image_token: str = IMAGE_TOKEN) -> str:
        """The same rendering as a Jinja chat template for `apply_chat_template`: messages with `content` a string
        or a list of `{"type": "image"}` / `{"type": "text", "text": ...}` items; images open their user turn.
        Answers sit in `{% generation %}` blocks, so `return_assistant_tokens_mask=True` marks the supervised text.
        A leading `system` message replaces the default system text. No BOS: the tokenizer adds it. `image_token`:
        the placeholder the processor expands (Qwen2.5-VL's is `<|image_pad|>`; the data files' marker is
        `<image>`)."""
        image_prefix = self.image_prefix if self.chat_image_prefix is None else self.chat_image_prefix
        image_prefix = image_prefix.replace(IMAGE_TOKEN, image_token)

        def literal(text: str) -> str:
            return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"

        answer_suffix = self.answer_suffix.replace("{eos}", eos_token)
        user_suffix = self.user_suffix if self.chat_user_suffix is None else self.chat_user_suffix
        refusals = ""
        if self.single_exchange:
            # The processor of such a format refuses a prompt without an image and places its BOS after the last
            # one: what it cannot express is refused in one line here, before any token is made.
            refusals = (
                "{%- if messages | selectattr('role', 'equalto', 'system') | list -%}"
                f"{{{{ raise_exception({literal(f'the {self.name} format has no system message')}) }}}}"
                "{%- endif -%}"
                "{%- for message in messages if message['role'] == 'user' -%}"
                "{%- if message['content'] is string or (message['content'] | selectattr('type', 'equalto', "
                "'image') | list | length) != 1 -%}"
                f"{{{{ raise_exception({literal(f'the {self.name} format needs exactly one image in its user turn')}"
                ") }}"
                "{%- endif -%}"
                "{%- endfor -%}")
        system_separator = self.system[len(self.system.rstrip()):] if self.system_suffix is None else self.system_suffix
        user_body = "images + text" if self.user_text else "images"
        # A turn that keeps its image block's blank lines (Gemma) trims only its text, as training does.
        image_body = f"({user_body}) | trim" if self.strip_image_turn else user_body.replace("text", "(text | trim)")
        image_user_prefix = self.user_prefix if self.image_user_prefix is None else self.image_user_prefix
        answer_prefix, final_turns = literal(self.assistant_prefix), ""
        if self.final_assistant_prefix is not None:
            # The answers after the last user turn take their own prefix: that turn's index, found first.
            final_turns = ("{%- set turns = namespace(last_user=-1) -%}{%- for message in messages -%}"
                           "{%- if message['role'] == 'user' -%}{%- set turns.last_user = loop.index0 -%}{%- endif -%}"
                           "{%- endfor -%}")
            answer_prefix = (f"{literal(self.final_assistant_prefix)} if loop.index0 > turns.last_user "
                             f"else {literal(self.assistant_prefix)}")
        return (
            refusals
            + "{%- if messages[0]['role'] == 'system' -%}"
            "{%- set system = messages[0]['content'] if messages[0]['content'] is string "
            "else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
            "| join(' ') -%}"
            # The system message is a message too: Qwen3.5's template trims it as it trims the others.
            + ("{%- set system = system | trim -%}" if self.trim_text else "")
            + f"{{{{ {literal(self.system_prefix)} + system + {literal(system_separator)} }}}}"
            "{%- set messages = messages[1:] -%}"
            f"{{%- else -%}}{{{{ {literal(self.system)} }}}}{{%- endif -%}}"
            + final_turns
            + "{%- for message in messages -%}"
            "{%- if message['content'] is string -%}"
            "{%- set images = '' -%}{%- set text = message['content'] -%}"
            "{%- else -%}"
            "{%- set images = message['content'] | selectattr('type', 'equalto', 'image') | map(attribute='type') "
            f"| map('replace', 'image', {literal(image_prefix)}) | join('') -%}}"
            "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
            "| join(' ') -%}"
            "{%- endif -%}"
            + ("{%- set text = text | trim -%}" if self.trim_text else "")
            + "{%- if message['role'] == 'user' -%}"
            f"{{%- set body = {image_body} if images else {'text' if self.user_text else chr(39) * 2} -%}}"
            f"{{%- set prefix = {literal(image_user_prefix)} if images else {literal(self.user_prefix)} -%}}"
            "{%- if body or prefix -%}"
            f"{{{{ prefix + body + {literal(user_suffix)} }}}}"
            "{%- endif -%}"
            "{%- elif message['role'] == 'assistant' -%}"
            f"{{{{ {answer_prefix} }}}}"
            f"{{% generation %}}{{{{ {literal(self.answer_prefix)} + text + {literal(answer_suffix)} }}}}"
            "{% endgeneration %}"
            "{%- endif -%}"
            "{%- endfor -%}"
            f"{{%- if add_generation_prompt -%}}{{{{ {literal(self._assistant_prefix(final=True))} }}}}{{%- endif -%}}"
        )


PLAIN = ConversationTemplate(
    name="plain", system="", user_text=False, user_prefix="", user_suffix="", image_prefix=IMAGE_TOKEN,
    assistant_prefix="", answer_prefix="", answer_suffix="\n", image_caption_only=True,
)
VICUNA_V1 = ConversationTemplate(
    name="vicuna_v1", system=VICUNA_V1_SYSTEM + " ", user_text=True, user_prefix="USER: ", user_suffix=" ",
    image_prefix=IMAGE_TOKEN + "\n", assistant_prefix="ASSISTANT:", answer_prefix=" ", answer_suffix="{eos}",
)

# ViCToR's `--version qwen_1_5` (its train.py `preprocess_qwen`, L563-L600: the default system message "You are a
# helpful assistant.", each message as "<|im_start|>{role}\n{content}<|im_end|>\n", the image first in the user turn).
# The fork also supervises the "<|im_start|>assistant\n" header and every "\n", <|im_start|> and <|im_end|> token of
# the prompt (L617-L627); here only the answers and their "<|im_end|>\n" are, as in the other templates.
QWEN_1_5 = ConversationTemplate(
    name="qwen_1_5", system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", user_text=True,
    user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n", image_prefix=IMAGE_TOKEN + "\n",
    assistant_prefix="<|im_start|>assistant\n", answer_prefix="", answer_suffix="<|im_end|>\n",
    system_prefix="<|im_start|>system\n", system_suffix="<|im_end|>\n",
)

# Qwen2.5-VL's chat format (its processor's chat template): ChatML with the default system message, each image as
# "<|vision_start|><|image_pad|>...<|vision_end|>" at the start of its user turn, no newline after it; the answers and
# their "<|im_end|>\n" are supervised.
QWEN2_VL = ConversationTemplate(
    name="qwen2_vl", system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", user_text=True,
    user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n",
    image_prefix="<|vision_start|>" + IMAGE_TOKEN + "<|vision_end|>",
    assistant_prefix="<|im_start|>assistant\n", answer_prefix="", answer_suffix="<|im_end|>\n",
    system_prefix="<|im_start|>system\n", system_suffix="<|im_end|>\n",
)

# Qwen3-VL's chat format (the chat template of its Instruct checkpoints' processor, e.g. Qwen3-VL-8B-Instruct's
# chat_template.json on the Hub; transformers ships none): the same ChatML turns and image wrapper as Qwen2.5-VL's,
# but no default system message (a system turn only when the conversation opens with one) and the generation prompt
# "<|im_start|>assistant\n" without a thinking block (the Thinking checkpoints' template adds one; they are not
# covered here). The answers and their "<|im_end|>\n" are supervised.
QWEN3_VL = dataclasses.replace(QWEN2_VL, name="qwen3_vl", system="")

# Qwen3.5's chat format (the chat template of its checkpoints' tokenizer, e.g. Qwen3.5-0.8B's as a GGUF of it
# carries it; transformers ships none): Qwen3-VL's turns and image wrapper, no default system message, and a thinking
# block before the answers after the last user turn. With thinking off (the template's default for the small
# checkpoints, `enable_thinking=False` for the others) the generation prompt is "<|im_start|>assistant\n<think>\n\n
# </think>\n\n", and the last answer is rendered after the same empty block; earlier answers have none. The block is
# prompt, not supervised: the answers and their "<|im_end|>\n" are. Every message's text is trimmed, as the template
# trims it. Thinking on (a reasoning text in the block) is not rendered.
QWEN3_5 = dataclasses.replace(QWEN3_VL, name="qwen3_5", trim_text=True,
                              final_assistant_prefix="<|im_start|>assistant\n<think>\n\n</think>\n\n")

# GLM-4.1V's chat format (GLM-4.1V-9B-Thinking; transformers ships no chat template for it): "[gMASK]<sop>" once, then
# "<|user|>\n{question}" and "<|assistant|>\n{answer}" turns with no closing token (the next turn's opener ends a
# turn), each image as "<|begin_of_image|><|image|><|end_of_image|>" opening its user turn, which the processor
# expands to the image's `<|image|>` placeholders; no default system message (a system message as
# "<|system|>\n{text}" after "[gMASK]<sop>", as the checkpoint's chat template renders it (a copy of
# GLM-4.1V-9B-Thinking's at revision 3c1471e5 read; ms-swift's GLM-4.1V meta class writes no newline, but it lacks
# @dataclass, so its override is dead and ms-swift renders the newline too). Verified in transformers' GLM-4.1V
# integration test, whose prompt from the checkpoint's chat template starts with the ids of
# "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|>" and whose decoded generations read "\n{question}\n<think>...":
# the question follows the image block directly and the generation prompt is "<|assistant|>\n", after which the
# checkpoint opens its own "<think>" block. Not verified here: how other revisions of the checkpoint's template render
# past answers. Two choices, both deliberate: each answer is followed by the tokenizer's EOS (`<|endoftext|>`, one of
# the checkpoints' generation stop ids), supervised, so the model learns to stop where the template would write the
# next "<|user|>"; and answers are trained without a thinking block (Croc's captions have none), so a model trained
# here answers after "<|assistant|>\n" directly. The answers and their EOS are supervised. GLM-4.6V's family uses it
# too: transformers' GLM-4.6V tests run the GLM-4.1V-9B-Thinking checkpoint and processor; GLM-4.6V's own template (its
# thinking switch) was not read and is not rendered.
GLM4V = ConversationTemplate(
    name="glm4v", system="[gMASK]<sop>", user_text=True, user_prefix="<|user|>\n", user_suffix="",
    image_prefix="<|begin_of_image|>" + IMAGE_TOKEN + "<|end_of_image|>",
    assistant_prefix="<|assistant|>\n", answer_prefix="", answer_suffix="{eos}",
    system_prefix="[gMASK]<sop><|system|>\n", system_suffix="",
)

# Gemma 3's chat format (the chat template of its instruction-tuned checkpoints' processor, e.g. gemma-3-4b-it's on
# the Hub; transformers ships none): BOS (the dataset's and the tokenizer's, not the template's), then
# "<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n{answer}<end_of_turn>\n", no default system
# message. An image opens its user turn as `Gemma3Processor` expands the `<start_of_image>` of a prompt:
# "\n\n<start_of_image>" + its placeholders + "<end_of_image>\n\n", blank lines kept; the chat template renders the
# placeholder `<start_of_image>` alone, which the processor expands the same way. The answers and their
# "<end_of_turn>\n" are supervised; every message's text is trimmed, as the template trims it. Gemma 3 puts a system
# message inside the first user turn; this template (like the training rows, which have none) does not: a system
# message given at inference is rendered before the turns.
GEMMA3 = ConversationTemplate(
    name="gemma3", system="", user_text=True, user_prefix="<start_of_turn>user\n", user_suffix="<end_of_turn>\n",
    image_prefix="\n\n<start_of_image>" + IMAGE_TOKEN + "<end_of_image>\n\n",
    assistant_prefix="<start_of_turn>model\n", answer_prefix="", answer_suffix="<end_of_turn>\n",
    chat_image_prefix=IMAGE_TOKEN, strip_image_turn=False, trim_text=True,
)

# Gemma 4's chat format (the chat template of its instruction-tuned checkpoints, as llama.cpp keeps copies of it in
# models/templates/gemma4.jinja and google-gemma-4-31B-it-interleaved.jinja; Google's "Gemma 4 prompt formatting" page
# shows the same turns): each turn "<|turn>{role}\n{content}<turn|>\n", roles system, user and model, no default
# system message, a system message its own first turn. An image item renders as "\n\n<|image|>\n\n", which
# `Gemma4Processor.replace_image_token` expands to "<|image>" + the image's soft tokens + "<image|>"; the blank lines
# stay and the text is trimmed, as the checkpoints' template writes them. The answers and their "<turn|>\n" are
# supervised; every message's text is trimmed, as the template trims it. Two differences, both deliberate: BOS is the
# dataset's and the tokenizer's (the checkpoints' template writes `bos_token` itself; the tokens are the same single
# BOS), and the generation prompt is "<|turn>model\n" alone, the prefix every trained answer follows. The checkpoints'
# template renders past model turns that way too but, with thinking off, appends an empty thought block
# ("<|channel>thought\n<channel|>") to the generation prompt (in the copies read here); a model trained here answers
# right after "<|turn>model\n". Thinking and tool blocks are not rendered.
GEMMA4 = ConversationTemplate(
    name="gemma4", system="", user_text=True, user_prefix="<|turn>user\n", user_suffix="<turn|>\n",
    image_prefix="\n\n" + IMAGE_TOKEN + "\n\n", assistant_prefix="<|turn>model\n", answer_prefix="",
    answer_suffix="<turn|>\n", system_prefix="<|turn>system\n", system_suffix="<turn|>\n", strip_image_turn=False,
    trim_text=True,
)

# PaliGemma's format (PaliGemma 1 and 2; read in transformers' `PaliGemmaProcessor`, processing_paligemma.py): not a
# chat but a prefix and a suffix. The processor writes the image's `<image>` tokens, then `<bos>`, the prefix (the
# question) and "\n", all of `token_type_ids` 0 (one bidirectional block); then the suffix (the answer) and `<eos>`,
# of type 1 (causal), the only tokens with labels. So the BOS follows the image here (`bos_after_image`) and the
# chat template writes "<image>" + the question alone (`chat_user_suffix`): the processor adds the `<bos>` and the
# "\n" itself, exactly as training writes them. One image, one question and one answer a row (`single_exchange`):
# multi-turn rows and text-only rows are rejected (the processor needs an image); a system message and a second image
# are refused by the chat template. Not verified here (no network): whether a checkpoint's processor ships a chat
# template of its own (the task prefixes of Google's mix checkpoints, "caption en" and others, are plain prefix text
# here, written by the data).
PALIGEMMA = ConversationTemplate(
    name="paligemma", system="", user_text=True, user_prefix="", user_suffix="\n", image_prefix=IMAGE_TOKEN,
    assistant_prefix="", answer_prefix="", answer_suffix="{eos}", bos_after_image=True, chat_user_suffix="",
    single_exchange=True,
)

# InternVL's chat format (the chat template of its transformers-format checkpoints' processor, e.g.
# OpenGVLab/InternVL3-1B-hf's, written by transformers' `convert_internvl_weights_to_hf.py`): ChatML turns with no
# default system message (the remote-code checkpoints' own "internvl2_5" conversation adds one; the -hf template, which
# `InternVLProcessor` renders, does not), each image as "<IMG_CONTEXT>\n" opening its user turn, which the processor
# expands to "<img>" + its tiles' placeholders + "</img>": the training text writes that block around the marker.
# The answers and their "<|im_end|>\n" are supervised.
INTERNVL = ConversationTemplate(
    name="internvl", system="", user_text=True,
    user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n",
    image_prefix="<img>" + IMAGE_TOKEN + "</img>\n",
    assistant_prefix="<|im_start|>assistant\n", answer_prefix="", answer_suffix="<|im_end|>\n",
    system_prefix="<|im_start|>system\n", system_suffix="<|im_end|>\n",
    chat_image_prefix=IMAGE_TOKEN + "\n",
)

# Mistral 3's chat format (Mistral-Small-3.1-Instruct), as `mistral_common`'s instruct tokenizer (V3 and later, which
# Mistral's own inference tokenises with) encodes a conversation: BOS (the dataset's and the tokenizer's, not the
# template's), each user turn as "[INST]" + its content in order + "[/INST]", each answer followed by EOS, no default
# system message (a system message as "[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]" before the turns); an image opens its user
# turn as "[IMG]", which the processor expands to the image's rows of "[IMG]" and "[IMG_BREAK]", closed by
# "[IMG_END]" (transformers' Mistral3 example prompt: "<s>[INST][IMG]What is the image?[/INST]"). The answers and their
# EOS are supervised.
MISTRAL3 = ConversationTemplate(
    name="mistral3", system="", user_text=True, user_prefix="[INST]", user_suffix="[/INST]", image_prefix=IMAGE_TOKEN,
    assistant_prefix="", answer_prefix="", answer_suffix="{eos}",
    system_prefix="[SYSTEM_PROMPT]", system_suffix="[/SYSTEM_PROMPT]",
)

# SmolVLM's chat format (`DEFAULT_CHAT_TEMPLATE` of transformers' `models/smolvlm/processing_smolvlm.py`, the
# SmolVLM-Instruct chat template plus videos): `<|im_start|>` once, then each message as "{Role}: {text}" closed by
# "<end_of_utterance>\n", a message that opens with an image as "{Role}:" + "<image>" + its text (no space, no
# newline), the generation prompt "Assistant:". The processor expands `<image>` to the image's tiles and global view
# (`<fake_token_around_image>`, `<row_r_col_c>`, `<global-img>` and the placeholders); the training dataset inserts that
# expansion itself (`image_expansion_has_structure`). The answers (after "Assistant:", with their leading space) and
# their "<end_of_utterance>\n" are supervised.
SMOLVLM = ConversationTemplate(
    name="smolvlm", system="<|im_start|>", user_text=True,
    user_prefix="User: ", user_suffix="<end_of_utterance>\n", image_prefix=IMAGE_TOKEN,
    assistant_prefix="Assistant:", answer_prefix=" ", answer_suffix="<end_of_utterance>\n",
    system_prefix="<|im_start|>System: ", system_suffix="<end_of_utterance>\n", image_user_prefix="User:",
)

# Idefics3's chat format: SmolVLM's (above), opened by Llama 3's BOS `<|begin_of_text|>` where SmolVLM writes
# `<|im_start|>`. Read in Idefics3-8B-Llama3's Hub `processor_config.json` chat template (through a stored copy: no
# network here; transformers ships no Idefics3 chat template, and its Idefics3 docs are not installed), whose text is
# SmolVLM's without the video and string-content branches. A system message renders as SmolVLM's does ("System: "
# + its text + "<end_of_utterance>\n", after the BOS): the template renders every role so; unverified against a
# conversation the checkpoint was trained on.
IDEFICS3 = dataclasses.replace(SMOLVLM, name="idefics3", system="<|begin_of_text|>",
                               system_prefix="<|begin_of_text|>System: ")

TEMPLATES: dict[str, ConversationTemplate] = {
    template.name: template
    for template in (PLAIN, VICUNA_V1, QWEN_1_5, QWEN2_VL, QWEN3_VL, QWEN3_5, GLM4V, GEMMA3, GEMMA4, PALIGEMMA, INTERNVL,
                     MISTRAL3, SMOLVLM, IDEFICS3)
}


def get_template(template: str | ConversationTemplate) -> ConversationTemplate:
    """The registered template called `template`, or `template` itself when it is already one."""
    if isinstance(template, ConversationTemplate):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown template {template!r}; registered: {sorted(TEMPLATES)}") from None


def register_template(template: ConversationTemplate) -> ConversationTemplate:
    """Add (or replace) a template in the registry."""
    TEMPLATES[template.name] = template
    return template


def llava_row_to_messages(conversations: Sequence[Mapping[str, str]], has_image: bool) -> list[dict]:
    """A LLaVA row as chat messages for `apply_chat_template`, with its image (if any) opening the user turn that
    held its marker, or the first user turn: where the training rendering places it (`ConversationTemplate.segments`).
    """
    image_turn = _image_turn(conversations) if has_image else None
    messages = [{"role": conversation_role(turn), "content": [{"type": "text", "text": _without_marker(turn["value"])}]}
                for turn in conversations]
    if has_image and image_turn is None:
        image_turn = next((i for i, m in enumerate(messages) if m["role"] == USER), None)
        if image_turn is None or any(m["role"] == ASSISTANT for m in messages[:image_turn]):
            messages.insert(0, {"role": USER, "content": []})
            image_turn = 0
    if has_image:
        messages[image_turn]["content"].insert(0, {"type": "image"})
    return messages


__all__ = [
    "ASSISTANT",
    "GEMMA3",
    "GEMMA4",
    "GLM4V",
    "INTERNVL",
    "MISTRAL3",
    "PALIGEMMA",
    "PLAIN",
    "QWEN3_5",
    "QWEN_1_5",
    "ROLES",
    "TEMPLATES",
    "USER",
    "VICUNA_V1",
    "VICUNA_V1_SYSTEM",
    "ConversationTemplate",
    "Segment",
    "conversation_role",
    "get_template",
    "llava_row_to_messages",
    "register_template",
]
