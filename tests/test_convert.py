"""Every conversion path round-trips: fork layout, transformers llava folders, CLIP + LM parts, export to llava."""

import json
import logging

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import (
    BertConfig,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
)
from transformers.models.bert.modeling_bert import BertLayer

from croc_testing.batches import make_batch
from croc_testing.tiny import llama_sentencepiece_tokenizer, tiny_croc_config
from modeling_croc import CrocForConditionalGeneration, CrocProcessor
from modeling_croc.conversion import build_from_parts, convert_llava_folder, convert_original_checkpoint
from modeling_croc.convert import croc_config_to_llava, export_llava_folder, rename_original_state_dict

VOCAB = 32064  # Vicuna's 32000 + <image> + <pad>, padded to a multiple of 64 as llava-1.5 conversions are


@pytest.fixture(scope="module")
def tokenizer():
    return llama_sentencepiece_tokenizer(add_llava_tokens=False)


def _logits(model, batch):
    with torch.no_grad():
        return model.eval()(**batch).logits


def _config(**fields):
    return tiny_croc_config(vocab_size=VOCAB, image_token_id=32000, pad_token_id=32001,
                            attn_implementation="eager", **fields)


def _batch(config):
    batch = make_batch(config, rows=2)
    batch.pop("labels")
    batch["input_ids"][batch["input_ids"] == 127] = 32001
    return batch


def _clip_folder(config, path):
    torch.manual_seed(3)
    vision = CLIPVisionModel(CLIPVisionConfig(**config.vision_config.to_dict()))
    vision.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(path)
    return vision


def test_export_to_llava_gives_identical_logits(tmp_path):
    config = _config()
    torch.manual_seed(0)
    croc = CrocForConditionalGeneration(config)
    croc.save_pretrained(tmp_path / "croc")
    export_llava_folder(tmp_path / "croc", tmp_path / "llava")
    llava, info = LlavaForConditionalGeneration.from_pretrained(
        tmp_path / "llava", output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert json.loads((tmp_path / "llava" / "config.json").read_text())["model_type"] == "llava"
    batch = _batch(config)
    torch.testing.assert_close(_logits(llava, batch), _logits(croc, batch), rtol=0, atol=0)


def test_export_keeps_the_generation_defaults(tmp_path):
    """The exported folder generates as the Croc folder does: its generation config (a second eos id, as
    Qwen2.5-VL-Instruct's `<|im_end|>` and `<|endoftext|>`, a repetition penalty) was replaced by one derived from
    the model config, so the plain model ran past the Croc model's stop token."""
    config = _config()
    torch.manual_seed(0)
    croc = CrocForConditionalGeneration(config).eval()
    batch = _batch(config)
    first = croc.generate(**batch, max_new_tokens=1, do_sample=False)[:, -1]
    croc.generation_config.eos_token_id = [2, int(first[0])]
    croc.generation_config.repetition_penalty = 1.05
    croc.save_pretrained(tmp_path / "croc")
    export_llava_folder(tmp_path / "croc", tmp_path / "llava")
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava", attn_implementation="eager").eval()
    assert llava.generation_config.eos_token_id == [2, int(first[0])]
    assert llava.generation_config.repetition_penalty == 1.05
    assert torch.equal(llava.generate(**batch, max_new_tokens=4), croc.generate(**batch, max_new_tokens=4))


def test_export_refuses_normalized_visual_tokens():
    with pytest.raises(ValueError, match="normalize_visual_tokens"):
        croc_config_to_llava(_config(croc_preset="official"))


def test_from_llava_folder_keeps_weights_and_adds_a_pool(tmp_path, tokenizer):
    config = _config()
    torch.manual_seed(1)
    llava = LlavaForConditionalGeneration(croc_config_to_llava(config))
    llava.save_pretrained(tmp_path / "llava")
    llama_sentencepiece_tokenizer().save_pretrained(tmp_path / "llava")  # with <image> (32000), as llava folders are
    converted = convert_llava_folder(tmp_path / "llava", tmp_path / "croc", croc_preset="paper", prompt_pool_size=64)
    croc, info = CrocForConditionalGeneration.from_pretrained(converted, output_loading_info=True,
                                                              attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert croc.prompt_pool.weight.shape == (64, config.text_config.hidden_size)
    batch = _batch(config)
    llava.config._attn_implementation = "eager"
    torch.testing.assert_close(_logits(croc, batch), _logits(llava, batch), rtol=0, atol=0)


def test_from_llava_carries_the_source_card(tmp_path):
    """A run started from the converted folder inherits the licence and base models a run started from the llava
    folder itself does: the conversion wrote no card, so the next stage's card said `license: unknown`."""
    from trainer.model_card import run_provenance
    from trainer.script_args import ModelArguments

    llava = LlavaForConditionalGeneration(croc_config_to_llava(_config()))
    llava.save_pretrained(tmp_path / "llava")
    llama_sentencepiece_tokenizer().save_pretrained(tmp_path / "llava")
    (tmp_path / "llava" / "README.md").write_text(
        "---\nlicense: llama2\nbase_model:\n- liuhaotian/llava-v1.5-7b\ndatasets:\n- liuhaotian/LLaVA-Pretrain\n---\n"
        "# LLaVA\n")
    converted = convert_llava_folder(tmp_path / "llava", tmp_path / "croc", croc_preset="paper", prompt_pool_size=64)
    direct, carried = (run_provenance(ModelArguments(name_or_path=str(folder)))
                       for folder in (tmp_path / "llava", converted))
    assert carried == direct
    assert (carried.licenses, carried.base_models, carried.datasets) == (
        ["llama2"], ["liuhaotian/llava-v1.5-7b"], ["liuhaotian/LLaVA-Pretrain"])
    assert ModelCard.load(converted / "README.md").data.license == "llama2"

    # The plain export of the converted folder (what is published for lmms-eval, vLLM) states the licence too.
    exported = export_llava_folder(converted, tmp_path / "plain")
    assert run_provenance(ModelArguments(name_or_path=str(exported))) == direct


def test_from_parts_loads_clip_and_the_language_model(tmp_path, tokenizer):
    config = _config()
    vision = _clip_folder(config, tmp_path / "clip")
    torch.manual_seed(2)
    text = config.text_config.to_dict()
    text.update(vocab_size=32000, pad_token_id=None)
    lm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in text.items() if k in LlamaConfig.__dataclass_fields__}))
    lm.config._attn_implementation = "eager"
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")

    (tmp_path / "lm" / "README.md").write_text("---\nlicense: llama2\n---\n# an LM\n")  # its card's licence

    croc, processor = build_from_parts(tmp_path / "clip", tmp_path / "lm", tmp_path / "croc", prompt_pool_size=64,
                                       base_models=["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"])
    card = ModelCard.load(tmp_path / "croc" / "README.md").data  # what stage 1 inherits
    assert card.license == "llama2" and card.croc_licenses == ["llama2"]
    assert card.base_model == ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
    assert isinstance(processor, CrocProcessor)
    assert processor.tokenizer.convert_tokens_to_ids(["<image>", "<pad>"]) == [32000, 32001]
    assert croc.config.image_token_id == 32000 and croc.config.text_config.vocab_size == VOCAB
    for name, tensor in vision.state_dict().items():
        torch.testing.assert_close(croc.model.vision_tower.state_dict()[name], tensor, rtol=0, atol=0)
    text_ids = torch.tensor([[1, 415, 5565, 28723, 302]])
    croc.config.text_config._attn_implementation = "eager"
    ours = _logits(croc, {"input_ids": text_ids})
    torch.testing.assert_close(ours[..., :32000], _logits(lm, {"input_ids": text_ids}), rtol=0, atol=0)
    reloaded = CrocForConditionalGeneration.from_pretrained(tmp_path / "croc", attn_implementation="eager")
    torch.testing.assert_close(_logits(reloaded, {"input_ids": text_ids}), ours, rtol=0, atol=0)


# --- the original (transformers 4.37 fork) layout -------------------------------------------------------------

def _to_fork_layout(croc: CrocForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Write a Croc model's weights the way the released fork names them (the inverse of the converter),
    with the vocabulary cut back to Vicuna's 32000 and an unused cross-attention added."""
    fork = {}
    for name, tensor in croc.state_dict().items():
        if name.startswith("model.language_model."):
            fork["model." + name[len("model.language_model."):]] = tensor
        elif name.startswith("model.multi_modal_projector.linear_1."):
            fork["model.mm_projector.0." + name.rsplit(".", 1)[1]] = tensor
        elif name.startswith("model.multi_modal_projector.linear_2."):
            fork["model.mm_projector.2." + name.rsplit(".", 1)[1]] = tensor
        elif name == "model.prompt_pool.weight":
            fork["model.mask_token"] = tensor
        elif name == "lm_head.weight":
            fork[name] = tensor
        elif name.startswith("vtr_head.position_embedding."):
            fork["transform_block.position_embeddings.weight"] = tensor
        elif name.startswith("vtr_head.proj."):
            fork["transform_block.resize." + name.rsplit(".", 1)[1]] = tensor
        elif name.startswith("vtr_head.layers."):
            _, _, layer, *rest = name.split(".")
            rest = ".".join(rest)
            base = f"transform_block.layers.{layer}."
            if rest.startswith("self_attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]
                for part, chunk in zip(("query", "key", "value"), tensor.chunk(3)):
                    fork[f"{base}attention.self.{part}.{kind}"] = chunk
            else:
                bert = {"self_attn.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                        "linear1": "intermediate.dense", "linear2": "output.dense", "norm2": "output.LayerNorm"}
                module, kind = rest.rsplit(".", 1)
                fork[f"{base}{bert[module]}.{kind}"] = tensor
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        fork[name] = fork[name][:32000].clone()
    fork["model.cross_attention.q.weight"] = torch.zeros(4, 4)
    return fork


def test_released_croc_layout_converts_with_identical_logits(tmp_path, tokenizer):
    config = _config(croc_preset="official")
    torch.manual_seed(4)
    source = CrocForConditionalGeneration(config)
    vision = _clip_folder(config, tmp_path / "clip")
    source.model.vision_tower.load_state_dict(vision.state_dict())
    text = config.text_config
    fork_config = {
        "model_type": "croc_llama", "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "vocab_size": 32000, "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings, "mm_vision_tower": str(tmp_path / "clip"),
        "mm_hidden_size": config.vision_config.hidden_size, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
    }
    (tmp_path / "fork").mkdir()
    (tmp_path / "fork" / "config.json").write_text(json.dumps(fork_config))
    torch.save(_to_fork_layout(source), tmp_path / "fork" / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path / "fork")

    out = convert_original_checkpoint(tmp_path / "fork", tmp_path / "croc")
    converted, info = CrocForConditionalGeneration.from_pretrained(out, output_loading_info=True,
                                                                   attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert converted.config.croc_preset == "official" and converted.config.normalize_visual_tokens
    assert converted.config.prompt_pool_calibrated
    torch.testing.assert_close(converted.prompt_pool.weight, source.prompt_pool.weight, rtol=0, atol=0)
    batch = _batch(config)
    # Rows past Vicuna's 32000 were grown by the converter (the fork has no <image>/<pad> entries).
    torch.testing.assert_close(_logits(converted, batch)[..., :32000], _logits(source, batch)[..., :32000],
                               rtol=0, atol=0)
    head_input = torch.randn(2, config.image_seq_length, text.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(converted.vtr_head(head_input), source.eval().vtr_head(head_input))
    processor = CrocProcessor.from_pretrained(out)
    assert processor.image_processor.do_pad and processor.num_image_tokens == config.image_seq_length
    assert converted.config.text_config.vocab_size == 32064 and converted.config.mask_rounding == "keep_floor"

    # Without vocabulary padding: only <image> and <pad> are added, the original logits stay the same.
    from modeling_croc.convert.__main__ import main

    main(["from-original", str(tmp_path / "fork"), str(tmp_path / "unpadded"), "--vocab-multiple", "1"])
    unpadded = CrocForConditionalGeneration.from_pretrained(tmp_path / "unpadded", attn_implementation="eager")
    assert unpadded.config.text_config.vocab_size == 32002
    torch.testing.assert_close(_logits(unpadded, batch)[..., :32000], _logits(source, batch)[..., :32000],
                               rtol=0, atol=0)


def test_fork_transform_block_matches_a_real_bert_layer():
    """The released head is `BertLayer`s; after renaming, our encoder layer computes the same function."""
    width = 64
    bert_config = BertConfig(hidden_size=width, intermediate_size=4 * width, num_attention_heads=width // 64)
    bert_config._attn_implementation = "eager"
    torch.manual_seed(5)
    bert = BertLayer(bert_config).eval()
    state = {f"transform_block.layers.0.{k}": v for k, v in bert.state_dict().items()}
    state["transform_block.position_embeddings.weight"] = torch.zeros(16, width)
    state["transform_block.resize.weight"] = torch.eye(width)
    state["transform_block.resize.bias"] = torch.zeros(width)
    renamed = rename_original_state_dict(state)
    config = tiny_croc_config(hidden_size=width, croc_preset="official")
    head = CrocForConditionalGeneration(config).vtr_head.eval()
    head.load_state_dict({k[len("vtr_head."):]: v for k, v in renamed.items()}, strict=True)
    hidden = torch.randn(3, 16, width)
    with torch.no_grad():
        expected = bert(hidden)
        expected = expected[0] if isinstance(expected, tuple) else expected
        torch.testing.assert_close(head(hidden), expected, rtol=1e-5, atol=1e-5)


def test_convert_cli_exports_to_llava(tmp_path, caplog):
    from modeling_croc.convert.__main__ import main

    torch.manual_seed(0)
    CrocForConditionalGeneration(_config()).save_pretrained(tmp_path / "croc")
    with caplog.at_level(logging.INFO, logger="modeling_croc.convert"):
        main(["to-llava", str(tmp_path / "croc"), str(tmp_path / "llava")])
    # said by the package's logger (`INFO __main__: wrote` named no program when run as `python -m`)
    assert ("modeling_croc.convert", logging.INFO, f"wrote {tmp_path / 'llava'}") in caplog.record_tuples
    assert json.loads((tmp_path / "llava" / "config.json").read_text())["model_type"] == "llava"
    assert LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava") is not None


def test_converted_and_exported_folders_name_their_parts_by_folder_name_only(tmp_path):
    """A conversion's folder is one to share (`hf upload` by hand, no scan): its nested configs carried the absolute
    folders the parts were read from (`text_config._name_or_path: /home/alice/parts/llm`)."""
    from croc_testing.tiny import save_tiny_parts
    from modeling_croc.convert.__main__ import main

    parts = tmp_path / "alice_parts"
    save_tiny_parts(parts)
    main(["from-parts", str(parts / "clip"), str(parts / "llm"), str(tmp_path / "stage0")])
    main(["to-llava", str(tmp_path / "stage0"), str(tmp_path / "plain")])
    for folder in ("stage0", "plain"):
        config = json.loads((tmp_path / folder / "config.json").read_text())
        assert (config["text_config"]["_name_or_path"], config["vision_config"]["_name_or_path"]) == ("llm", "clip")
        for path in (tmp_path / folder).glob("*.json"):
            assert str(tmp_path) not in path.read_text(), path


def test_convert_cli_never_writes_over_a_folder_that_holds_files(tmp_path):
    """OUT was written file by file over whatever it held: a trained stage folder given as OUT kept its run record
    and card around freshly converted weights, and a folder converted into itself lost its pool and head."""
    from modeling_croc.convert.__main__ import main

    CrocForConditionalGeneration(_config()).save_pretrained(tmp_path / "croc")
    trained = tmp_path / "stage1_5"
    CrocForConditionalGeneration(_config()).save_pretrained(trained)
    before = {path.name: path.read_bytes() for path in trained.iterdir()}
    for out, words in ((trained, "already holds files"), (tmp_path / "croc", "is the source folder itself")):
        with pytest.raises(SystemExit, match=f"convert error: OUT {out} {words}"):
            main(["to-llava", str(tmp_path / "croc"), str(out)])
    assert {path.name: path.read_bytes() for path in trained.iterdir()} == before
    with pytest.raises(SystemExit, match="is the source folder itself"):  # --overwrite does not allow that one
        main(["to-llava", str(tmp_path / "croc"), str(tmp_path / "croc"), "--overwrite"])
    (tmp_path / "empty").mkdir()
    main(["to-llava", str(tmp_path / "croc"), str(tmp_path / "empty")])  # an empty folder is a new folder
    main(["to-llava", str(tmp_path / "croc"), str(trained), "--overwrite"])
    assert json.loads((trained / "config.json").read_text())["model_type"] == "llava"


def test_convert_cli_reads_and_writes_under_the_home_folder_for_a_tilde(tmp_path, monkeypatch):
    """RELIABILITY.md: `~` in a folder option means the home folder. Before: OUT was checked under the home folder and
    written as ./~/OUT (over files the check never saw), and a '~/SRC' was read as a Hub id."""
    from modeling_croc.convert.__main__ import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    CrocForConditionalGeneration(_config()).save_pretrained(tmp_path / "home" / "croc")
    (tmp_path / "~" / "llava").mkdir(parents=True)
    (tmp_path / "~" / "llava" / "notes.txt").write_text("mine")
    main(["to-llava", "~/croc", "~/llava"])
    assert json.loads((tmp_path / "home" / "llava" / "config.json").read_text())["model_type"] == "llava"
    assert [path.name for path in (tmp_path / "~" / "llava").iterdir()] == ["notes.txt"]
    with pytest.raises(SystemExit, match="convert error: ~nosuchuser4/x: ~nosuchuser4 is the home folder of no user"):
        main(["to-llava", "~/croc", "~nosuchuser4/x"])


# --- separate parts on other backbones: SigLIP / SigLIP2 folders, Qwen and Gemma language models -----------------

def _tower_folder(kind: str, path):
    """A tower folder as the Hub ships it: a full CLIPModel, a vision-only SigLIP save, a full (fixed-resolution)
    SigLIP2 model (model_type siglip, with its text tower)."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessorPil,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from croc_testing.backbones import vision_config

    fields, _, _ = vision_config("siglip2" if kind == "siglip2_full" else kind.split("_")[0])
    fields = {k: v for k, v in fields.items() if k not in ("model_type", "projection_dim")}
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 64}
    torch.manual_seed(7)
    if kind == "clip_full":
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=fields, projection_dim=16))
        processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    elif kind == "siglip_vision":
        model = SiglipVisionModel(SiglipVisionConfig(**fields))
        processor = SiglipImageProcessorPil(size={"height": 56, "width": 56})
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=fields))
        processor = SiglipImageProcessorPil(size={"height": 64, "width": 64})
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model


@pytest.mark.parametrize("tower, text", [("clip_full", "qwen2"), ("siglip_vision", "gemma3_text"),
                                         ("siglip2_full", "qwen3")])
def test_from_parts_reads_siglip_and_qwen_gemma_folders(tmp_path, tokenizer, tower, text):
    from PIL import Image
    from transformers import AutoModelForCausalLM

    from croc_testing.backbones import text_config
    from croc_testing.tiny import chatml_bpe_tokenizer

    source_tower = _tower_folder(tower, tmp_path / "tower")
    qwen = text.startswith("qwen")
    lm_tokenizer = chatml_bpe_tokenizer() if qwen else tokenizer
    rows = 448 if qwen else 32000  # Qwen's embeddings hold spare rows beyond its tokenizer
    fields = text_config(text, vocab_size=rows, pad_token_id=None)
    fields.pop("pad_token_id")
    torch.manual_seed(8)
    lm = AutoModelForCausalLM.from_config(_auto_text_config(fields), attn_implementation="eager")
    lm.save_pretrained(tmp_path / "lm")
    lm_tokenizer.save_pretrained(tmp_path / "lm")

    croc, processor = build_from_parts(tmp_path / "tower", tmp_path / "lm", tmp_path / "croc", prompt_pool_size=64)
    has_cls = tower == "clip_full"
    assert croc.config.vision_feature_select_strategy == ("default" if has_cls else "full")
    assert croc.config.vision_feature_layer == -2
    assert croc.config.text_config.vocab_size == (rows if qwen else VOCAB)
    tower_state = getattr(source_tower, "vision_model", source_tower).state_dict()
    ours = croc.model.vision_tower.state_dict()
    for name, tensor in tower_state.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0)
    # The processor expands <image> to exactly the visual tokens the model produces for its pixels.
    assert processor.num_image_tokens == croc.config.image_seq_length
    image = Image.new("RGB", (70, 40), (200, 30, 30))
    inputs = processor(images=[image], text=["<image>\nWhat is it?"], return_tensors="pt")
    assert int((inputs["input_ids"] == croc.config.image_token_id).sum()) == croc.config.image_seq_length
    with torch.no_grad():
        croc.eval()(**inputs)
    # Text-only logits over the LM's own rows are the LM's.
    croc.config.text_config._attn_implementation = "eager"
    ids = lm_tokenizer("The picture shows a cat.", return_tensors="pt").input_ids
    torch.testing.assert_close(_logits(croc, {"input_ids": ids})[..., :rows], _logits(lm, {"input_ids": ids}),
                               rtol=1e-5, atol=1e-5)


def _auto_text_config(fields):
    from transformers import AutoConfig

    fields = dict(fields)
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def test_from_parts_refuses_naflex_siglip2(tmp_path, tokenizer):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    Siglip2VisionModel(Siglip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2)).save_pretrained(tmp_path / "naflex")
    with pytest.raises(ValueError, match="NaFlex"):
        build_from_parts(tmp_path / "naflex", tmp_path / "lm")


def test_convert_cli_failures_are_one_line(tmp_path):
    """A missing source folder, a plain folder given to `to-llava` and a refused export each stop with one
    `convert error:` line (no traceback; nothing written)."""
    from modeling_croc.convert.__main__ import main

    torch.manual_seed(0)
    CrocForConditionalGeneration(_config()).save_pretrained(tmp_path / "croc")
    CrocForConditionalGeneration(_config(croc_preset="official")).save_pretrained(tmp_path / "official")
    with pytest.raises(SystemExit, match="convert error: .*missing: no such folder"):
        main(["from-original", str(tmp_path / "missing"), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stop:  # both parts named, not only the first
        main(["from-parts", str(tmp_path / "clip"), str(tmp_path / "vicuna"), str(tmp_path / "out")])
    assert stop.value.code == (f"convert error: VISION {tmp_path / 'clip'}: no such folder (and not a Hub repository "
                               f"id); LLM {tmp_path / 'vicuna'}: no such folder (and not a Hub repository id)")
    with pytest.raises(SystemExit, match="convert error: .*normalize_visual_tokens"):
        main(["to-llava", str(tmp_path / "official"), str(tmp_path / "refused")])
    main(["to-llava", str(tmp_path / "croc"), str(tmp_path / "llava")])
    with pytest.raises(SystemExit, match="convert error: .* is not a Croc folder"):
        main(["to-llava", str(tmp_path / "llava"), str(tmp_path / "again")])
    assert not any((tmp_path / name).exists() for name in ("out", "refused", "again"))


def test_from_llava_keeps_the_folders_feature_select_strategy(tmp_path, tokenizer):
    """A llava folder whose CLIP features keep the class token (`full`) converts to a processor that expands
    `<image>` to the same count, so the model runs on its own processor's output."""
    from PIL import Image

    from modeling_croc.convert.common import add_llava_tokens, build_processor

    config = _config(vision_feature_select_strategy="full")
    torch.manual_seed(0)
    CrocForConditionalGeneration(config).save_pretrained(tmp_path / "croc")
    tokens = llama_sentencepiece_tokenizer(add_llava_tokens=False)
    add_llava_tokens(tokens)
    build_processor(tokens, None, config.vision_config, "square", "full").save_pretrained(tmp_path / "croc")
    export_llava_folder(tmp_path / "croc", tmp_path / "llava")
    convert_llava_folder(tmp_path / "llava", tmp_path / "back", croc_preset="paper")
    model = CrocForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    processor = CrocProcessor.from_pretrained(tmp_path / "back")
    assert processor.vision_feature_select_strategy == "full"
    inputs = processor(images=[Image.new("RGB", (64, 48), "blue")], text=["<image>\nwhat"], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == config.image_seq_length == 17  # 16 patches + CLS
    with torch.no_grad():
        model(**inputs)


def test_original_layout_with_cls_patch_features_gets_a_matching_processor(tmp_path, tokenizer):
    """`mm_vision_select_feature: cls_patch` (the class token kept) becomes the `full` strategy in the config and in
    the processor alike, so `<image>` expands to the features' count."""
    from PIL import Image

    config = _config()
    torch.manual_seed(4)
    source = CrocForConditionalGeneration(config)
    _clip_folder(config, tmp_path / "clip")
    text = config.text_config
    fork = {k: v for k, v in _to_fork_layout(source).items()
            if not k.startswith(("transform_block", "model.mask_token", "model.cross"))}
    (tmp_path / "fork").mkdir()
    (tmp_path / "fork" / "config.json").write_text(json.dumps({
        "model_type": "llava_llama", "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "vocab_size": 32000, "mm_vision_tower": str(tmp_path / "clip"), "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "cls_patch", "image_aspect_ratio": "pad"}))
    torch.save(fork, tmp_path / "fork" / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path / "fork")
    out = convert_original_checkpoint(tmp_path / "fork", tmp_path / "croc")
    model = CrocForConditionalGeneration.from_pretrained(out).eval()
    processor = CrocProcessor.from_pretrained(out)
    assert model.config.vision_feature_select_strategy == processor.vision_feature_select_strategy == "full"
    inputs = processor(images=[Image.new("RGB", (64, 48), "red")], text=["<image>\nwhat"], return_tensors="pt")
    with torch.no_grad():
        model(**inputs)


# --- malformed sources: refused in one line, nothing written -------------------------------------------------------

def _sharded_fork_folder(path, tokenizer) -> None:
    """A released-layout Croc checkpoint as the Hub holds one: config, tokenizer and two `pytorch_model` shards with
    their index."""
    config = _config(croc_preset="official")
    torch.manual_seed(4)
    source = CrocForConditionalGeneration(config)
    _clip_folder(config, path / "clip")
    text = config.text_config
    (path / "fork").mkdir()
    (path / "fork" / "config.json").write_text(json.dumps({
        "model_type": "croc_llama", "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "vocab_size": 32000,
        "mm_vision_tower": str(path / "clip"), "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad"}))
    state = _to_fork_layout(source)
    names = sorted(state)
    weight_map = {}
    for shard, chunk in enumerate((names[0::2], names[1::2]), 1):
        file = f"pytorch_model-0000{shard}-of-00002.bin"
        torch.save({name: state[name].clone() for name in chunk}, path / "fork" / file)
        weight_map.update(dict.fromkeys(chunk, file))
    (path / "fork" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tokenizer.save_pretrained(path / "fork")


def _rename_weight(folder, old: str, new: str) -> None:
    for shard in folder.glob("pytorch_model-*.bin"):
        state = torch.load(shard, weights_only=True)
        if old in state:
            state[new] = state.pop(old)
            torch.save(state, shard)


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key == "text_config":
            config[key].update(value)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, words", [
    ("missing_shard", "names 1 shard.* not in the folder: pytorch_model-00002-of-00002.bin"),
    ("renamed_embedding", "no token embedding"),
    ("renamed_head_key", "has weights for \\['query', 'value'\\] only"),
    ("wrong_hidden_size", "of the wrong shape for its config.json"),
])
def test_convert_cli_refuses_a_malformed_released_checkpoint_in_one_line(tmp_path, tokenizer, damage, words):
    """A released checkpoint with a shard missing, a weight under another name or a config.json of another size is
    refused with one `convert error:` line naming the problem and nothing written. A renamed embedding or VTR-head
    projection ended in a KeyError traceback and a wrong hidden size in transformers' RuntimeError; a missing shard
    listed missing weights without naming the shard."""
    from modeling_croc.convert.__main__ import main

    _sharded_fork_folder(tmp_path, tokenizer)
    fork = tmp_path / "fork"
    if damage == "missing_shard":
        (fork / "pytorch_model-00002-of-00002.bin").unlink()
    elif damage == "renamed_embedding":
        _rename_weight(fork, "model.embed_tokens.weight", "model.embed_token.weight")
    elif damage == "renamed_head_key":
        _rename_weight(fork, "transform_block.layers.0.attention.self.key.weight",
                       "transform_block.layers.0.attention.self.keys.weight")
    else:
        _edit_config(fork, hidden_size=64)
    with pytest.raises(SystemExit, match=f"^convert error: .*{words}") as refused:
        main(["from-original", str(fork), str(tmp_path / "out")])
    assert "\n" not in str(refused.value.code)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["to-llava", "from-llava"])
def test_convert_cli_refuses_weights_that_do_not_fit_the_config(tmp_path, command):
    """A Croc or llava folder whose config.json gives another size than its weights is refused in one line (it was
    transformers' RuntimeError traceback), and a Croc folder missing a weight (here its LM head, saved under another
    name) is refused by `to-llava`: it exported a random LM head as if trained."""
    from safetensors.torch import load_file, save_file

    from modeling_croc.convert.__main__ import main

    torch.manual_seed(0)
    source = tmp_path / "source"
    if command == "to-llava":
        CrocForConditionalGeneration(_config()).save_pretrained(source)
    else:
        LlavaForConditionalGeneration(croc_config_to_llava(_config())).save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    _edit_config(source, text_config={"intermediate_size": 2 * config["text_config"]["intermediate_size"]})
    with pytest.raises(SystemExit, match="^convert error: .*of the wrong shape for its config.json \\(name, checkpoint, model\\): \\['model.language_model.layers.0"):
        main([command, str(source), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    if command == "to-llava":
        _edit_config(source, text_config={"intermediate_size": config["text_config"]["intermediate_size"]})
        weights = load_file(source / "model.safetensors")
        [head] = [name for name in weights if name.endswith("lm_head.weight")]
        weights[head + "s"] = weights.pop(head)
        save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(SystemExit, match="^convert error: .*1 weight missing: \\['lm_head.weight'\\]"):
            main([command, str(source), str(tmp_path / "out")])
        assert not (tmp_path / "out").exists()


def test_from_llava_refuses_a_tokenizer_without_the_image_token(tmp_path, tokenizer):
    """A llava folder whose tokenizer has no `<image>` (the config's image_token_id 32000 names no token) converted
    without a word, to a folder whose processor failed on every image."""
    from modeling_croc.convert.__main__ import main

    torch.manual_seed(1)
    LlavaForConditionalGeneration(croc_config_to_llava(_config())).save_pretrained(tmp_path / "llava")
    tokenizer.save_pretrained(tmp_path / "llava")  # Vicuna's own: no <image>
    CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(
        tmp_path / "llava")
    with pytest.raises(SystemExit, match="^convert error: .*its tokenizer has no <image> token, which config.json's "
                                         "image_token_id \\(32000\\)"):
        main(["from-llava", str(tmp_path / "llava"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_conversion_carries_an_other_licence_and_survives_a_card_it_cannot_read(tmp_path):
    """A source under `license: other` (Qwen's qwen-research): the carried card also lists the name in
    `croc_licenses`, and a stage started from it stated `license: qwen-research` (no Hub licence id) without the
    link. A source card whose YAML does not parse (another tool's, a hand edit) ended the export in a yaml traceback
    after the weights were written; its card states nothing to carry (found by a hostile reviewer)."""
    from modeling_croc.convert.__main__ import main
    from modeling_croc.provenance import Provenance

    link = "https://huggingface.co/Qwen/Qwen2.5-3B-Instruct/blob/main/LICENSE"
    expected = {"license": "other", "license_name": "qwen-research", "license_link": link}
    torch.manual_seed(0)
    CrocForConditionalGeneration(_config()).save_pretrained(tmp_path / "croc")
    (tmp_path / "croc" / "README.md").write_text(
        f"---\nlicense: other\nlicense_name: qwen-research\nlicense_link: {link}\n---\n# a stage\n")
    main(["to-plain", str(tmp_path / "croc"), str(tmp_path / "plain")])
    assert Provenance.of_model_folder(tmp_path / "plain").license_metadata() == expected  # the next stage's card

    (tmp_path / "croc" / "README.md").write_text("---\nlicense: mit\ntags: [croc, llava\n---\n# my notes\n")
    main(["to-plain", str(tmp_path / "croc"), str(tmp_path / "again")])
    assert (tmp_path / "again" / "model.safetensors").is_file()  # a card of its own, stating no licence
    assert ModelCard.load(tmp_path / "again" / "README.md").data.license == "unknown"


def test_a_carried_card_of_several_licences_holds_the_section_its_link_names(tmp_path):
    """A source under several licences (a stage from a Llama 2 LM and an MIT vision tower) states `license: other`
    with the link `README.md#licences`. Converting or exporting it ended in a TypeError traceback after the weights
    were written (`croc_licenses` passed twice), and the carried card linked a section it did not have."""
    from huggingface_hub import ModelCard

    from modeling_croc.convert.__main__ import main

    torch.manual_seed(0)
    CrocForConditionalGeneration(_config()).save_pretrained(tmp_path / "croc")
    (tmp_path / "croc" / "README.md").write_text(
        "---\nlicense: other\nlicense_name: llama2-and-mit\nlicense_link: README.md#licences\n"
        "croc_licenses:\n- llama2\n- mit\n---\n# a stage\n")
    main(["to-plain", str(tmp_path / "croc"), str(tmp_path / "plain")])
    card = ModelCard.load(tmp_path / "plain" / "README.md")
    assert (card.data.license, card.data.license_link) == ("other", "README.md#licences")
    assert "\n## Licences\n" in card.text and "`llama2`, `mit`" in card.text
