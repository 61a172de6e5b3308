"""The chat CLI answers from a saved model folder through `generate`."""

import pytest
import torch
from PIL import Image

from croc_testing.tiny import tiny_croc_config, tiny_croc_processor
from modeling_croc import CrocForConditionalGeneration
from modeling_croc.chat import answer, load, main


def _saved_model(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = CrocForConditionalGeneration(tiny_croc_config(vocab_size=32002, image_token_id=32000, pad_token_id=32001))
    model.save_pretrained(tmp_path / "model")
    tiny_croc_processor(tokenizer=tokenizer).save_pretrained(tmp_path / "model")
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "image.png")
    return tmp_path / "model"


def test_chat_cli_answers_a_question_about_an_image(tmp_path, sp_tokenizer, capsys):
    folder = _saved_model(tmp_path, sp_tokenizer)
    main([str(folder), "--image", str(tmp_path / "image.png"), "--question", "What colour?", "--max-new-tokens", "5"])
    printed = capsys.readouterr().out.strip().splitlines()[-1]  # DeepSpeed may log to stdout on import
    model, processor = load(str(folder))
    expected = answer(model, processor, Image.open(tmp_path / "image.png").convert("RGB"), "What colour?", 5)
    assert printed == expected
    # A random tiny model still produces 5 tokens of text; the CLI printed exactly what `generate` decoded.
    assert len(processor.tokenizer(expected, add_special_tokens=False).input_ids) >= 1


def test_text_only_question(tmp_path, sp_tokenizer):
    folder = _saved_model(tmp_path, sp_tokenizer)
    model, processor = load(str(folder))
    first = answer(model, processor, None, "Hello?", 3)
    assert first and first == answer(model, processor, None, "Hello?", 3)  # greedy: deterministic, non-empty


def test_chat_cli_bad_inputs_are_one_line(tmp_path, sp_tokenizer):
    """A missing or empty image file and an empty --question stop with one line (no traceback, no model load)."""
    import pytest

    folder = _saved_model(tmp_path, sp_tokenizer)
    (tmp_path / "empty.png").write_bytes(b"")
    for image, message in [(tmp_path / "missing.png", "chat error: missing_image"),
                           (tmp_path / "empty.png", "chat error: unreadable_image")]:
        with pytest.raises(SystemExit, match=message):
            main([str(folder), "--image", str(image), "--question", "What colour?"])
    with pytest.raises(SystemExit, match="chat error: --question is empty"):
        main([str(folder), "--question", ""])
    with pytest.raises(SystemExit, match="chat error: .*missing-model: no such folder"):
        main([str(tmp_path / "missing-model"), "--question", "What colour?"])


def test_chat_cli_refuses_a_processor_without_a_chat_template_in_one_line(tmp_path, monkeypatch):
    """A family folder whose processor has no chat template (a plain Hub folder without one, converted as it was;
    LLaVA-1.5's processor falls back to Vicuna's, the families' do not) ended the first answer with
    apply_chat_template's traceback, after the model had loaded; now one line, before the model loads."""
    import pytest
    from transformers import AutoModelForImageTextToText

    from croc_testing.families import tiny_qwen2_5_vl_processor
    from croc_testing.family_specs import SPECS_BY_NAME

    SPECS_BY_NAME["qwen2_5_vl"].build().save_pretrained(tmp_path / "model")
    processor = tiny_qwen2_5_vl_processor()
    assert processor.chat_template is None
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained",
                        lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit, match="chat error: .*has no chat template") as stop:
        main([str(tmp_path / "model"), "--question", "What colour?"])
    assert "\n" not in str(stop.value.code)


def _family_folder(family, path):
    from croc_testing.gemma3 import save_tiny_gemma3
    from croc_testing.idefics3 import save_tiny_idefics3
    from croc_testing.paligemma import save_tiny_paligemma
    from croc_testing.smolvlm import save_tiny_smolvlm
    from croc_testing.tiny import save_tiny_croc

    return {"llava": save_tiny_croc, "gemma3": save_tiny_gemma3, "smolvlm": save_tiny_smolvlm,
            "idefics3": save_tiny_idefics3, "paligemma": save_tiny_paligemma}[family](path)


@pytest.mark.parametrize("family", ["llava", "gemma3", "smolvlm", "idefics3", "paligemma"])
def test_answer_batch_equals_one_question_at_a_time(tmp_path, family):
    """A batch (what `lmms-eval --model croc --batch_size N` and the demo's evaluation send) answers each question as
    it is answered alone, with one image, two images or none. The images went to the processor as one flat list,
    which Gemma 3's and SmolVLM's processors read as the images of a single prompt: every batch of two or more
    failed there."""
    from modeling_croc.chat import answer_batch
    from modeling_croc.loading import load_croc

    model, processor = load_croc(_family_folder(family, tmp_path / family))
    model.eval()
    red, blue = Image.new("RGB", (60, 40), (200, 30, 30)), Image.new("RGB", (50, 50), (20, 40, 220))
    questions = [([red], "What colour is it?"), ([blue, red], "Compare the two pictures."), ([], "Name a prime."),
                 ([blue], "Is it blue?")]
    if family == "paligemma":  # one image a question (its chat template refuses the others in one line)
        questions = [question for question in questions if len(question[0]) == 1] + [([red], "Is it red?")]
    alone = [answer_batch(model, processor, [question], max_new_tokens=6)[0] for question in questions]
    assert answer_batch(model, processor, questions, max_new_tokens=6) == alone


def test_a_template_that_writes_the_bos_gets_no_second_one_from_the_tokenizer(tmp_path):
    """Idefics3's chat template writes `<|begin_of_text|>` itself, and a real Llama 3 tokenizer adds it too: the
    answers and the scores were computed after two BOS tokens where training puts one (the tiny tokenizer adds none,
    so nothing showed it). The rendered prompt is tokenised as transformers' `apply_chat_template(tokenize=True)`
    tokenises it: one BOS, the template's."""
    from modeling_croc.chat import answer_batch, continuation_logprob
    from modeling_croc.loading import load_croc

    model, processor = load_croc(_family_folder("idefics3", tmp_path / "idefics3"))
    model.eval()
    processor.tokenizer.add_bos_token = True  # as Llama 3's tokenizer does
    bos = processor.tokenizer.bos_token_id
    assert processor.tokenizer("x")["input_ids"][0] == bos
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    image = Image.new("RGB", (60, 40), (200, 30, 30))
    answer_batch(model, processor, [([image], "What colour is it?"), ([], "Name a prime.")], max_new_tokens=1)
    continuation_logprob(model, processor, [image], "What colour is it?", "Red.")
    assert len(seen) == 2
    for input_ids in seen:
        for row in input_ids:
            row = row[row != processor.tokenizer.pad_token_id] if processor.tokenizer.pad_token_id != bos else row
            assert row[0] == bos and int((row == bos).sum()) == 1, row[:4].tolist()


@pytest.mark.parametrize("case", ["empty image", "empty folder", "long name", "no tokens", "unknown device",
                                  "absent GPU", "not UTF-8", "folder not made yet", "folder mistyped", "folder not there",
                                  "processor of another shape"])
def test_chat_cli_arguments_it_would_fail_on_after_the_model_load_are_one_line_before_it(case, tmp_path,
                                                                                        sp_tokenizer, monkeypatch):
    """From a hostile tester and a newcomer: each was a traceback after the model load, or an answer without the
    image (`--image "$IMG"` with IMG unset), or huggingface_hub's "couldn't connect" for a local folder not made
    yet (`tiny_out/stage9` reads as a Hub id)."""
    from transformers import AutoModelForImageTextToText

    folder = _saved_model(tmp_path, sp_tokenizer)
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained",
                        lambda *args, **kwargs: pytest.fail("the model was loaded"))
    argv, words = {
        "empty image": ([str(folder), "--image", "", "--question", "What colour?"], "--image is empty"),
        "empty folder": (["", "--question", "What colour?"], "model_dir is empty"),
        "long name": ([str(tmp_path / ("a" * 300)), "--question", "What colour?"], "is 300 bytes long, over the 255"),
        "no tokens": ([str(folder), "--question", "What colour?", "--max-new-tokens", "0"],
                      "--max-new-tokens 0: an answer needs at least 1 token"),
        "unknown device": ([str(folder), "--question", "What colour?", "--device", "nonsense"], "--device nonsense:"),
        "absent GPU": ([str(folder), "--question", "What colour?", "--device", "cuda"], "no CUDA GPU is visible"),
        "not UTF-8": ([str(folder), "--question", "caf\udce9?"], "is not UTF-8 text"),
        "folder not made yet": (["tiny_out/stage9", "--question", "What colour?"],
                                "tiny_out/stage9 is no local folder (nothing at "),
        # The folder above it is there: a local path mistyped, said with the closest folder or what it holds.
        "folder mistyped": (["tiny_out/stag2", "--question", "What colour?"],
                            f"(nothing at {tmp_path / 'tiny_out' / 'stag2'}; did you mean tiny_out/stage2?)"),
        "folder not there": (["tiny_out/nope", "--question", "What colour?"],
                             f"(nothing at {tmp_path / 'tiny_out' / 'nope'}; tiny_out holds scenes, stage2)"),
        "processor of another shape": ([str(folder), "--question", "What colour?"], "its processor does not load"),
    }[case]
    if case == "absent GPU" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    if case in ("folder not made yet", "folder mistyped", "folder not there"):
        monkeypatch.chdir(tmp_path)
    if case in ("folder mistyped", "folder not there"):
        for name in ("stage2", "scenes", ".cache"):
            (tmp_path / "tiny_out" / name).mkdir(parents=True)
    if case == "processor of another shape":
        (folder / "processor_config.json").write_text("[]")
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert message.startswith("chat error: ") and words in message and "\n" not in message, message


@pytest.mark.parametrize("contents", [[], ["readme.txt"], ["processor_config.json", "tokenizer.json"]],
                         ids=["empty", "other files", "processor without config.json"])
def test_chat_cli_a_local_folder_without_config_json_is_said_to_be_no_model_folder(contents, tmp_path, monkeypatch):
    """It was `its processor does not load (ValueError: Unrecognized processing class ...)`, about a folder that
    was never a model."""
    from transformers import AutoProcessor

    monkeypatch.setattr(AutoProcessor, "from_pretrained", lambda *args, **kwargs: pytest.fail("loaded a processor"))
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("{}")
    with pytest.raises(SystemExit) as stop:
        main([str(folder), "--question", "What colour?"])
    assert str(stop.value.code) == f"chat error: {folder} is not a model folder: it has no config.json"


def test_chat_cli_a_hub_id_still_goes_to_the_processor_load(tmp_path, monkeypatch):
    """The config.json check is of local folders: a Hub id (no such local path) is loaded from the Hub as before."""
    from transformers import AutoProcessor

    from modeling_croc import chat

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(chat, "hub_model_problem", lambda value: None)  # as if the Hub had it

    def reached(source, *args, **kwargs):
        raise OSError(f"reached the Hub load of {source}")

    monkeypatch.setattr(AutoProcessor, "from_pretrained", reached)
    with pytest.raises(SystemExit) as stop:
        main(["some-org/some-model", "--question", "What colour?"])
    assert "reached the Hub load of some-org/some-model" in str(stop.value.code), stop.value.code


def test_chat_cli_a_lora_adapter_folder_is_said_to_be_one_with_the_merge_command(tmp_path, monkeypatch):
    """It was "not a model folder: it has no config.json", without a word of the merge that makes one (found by a
    hostile tester); the line is `model_folder_problem`'s, which the conversions say too."""
    from transformers import AutoProcessor

    monkeypatch.setattr(AutoProcessor, "from_pretrained", lambda *args, **kwargs: pytest.fail("loaded a processor"))
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        main([str(adapter), "--question", "What colour?"])
    assert str(stop.value.code) == (
        f"chat error: {adapter} is a LoRA adapter folder (adapter_config.json, no config.json), not a model: merge it "
        f"into one with `python -m trainer.merge_lora {adapter} --out MERGED [--base BASE]` (BASE: the model it was "
        "trained on, when adapter_config.json's is not here) and use MERGED")
