"""transformers' model contract, as a client of the Auto classes, `generate` and `return_dict` meets it: tuple outputs
equal dict outputs, Croc is registered with every Auto class Llava is (in the package and in a saved folder's
`auto_map`, each loadable with `trust_remote_code` where the package is not importable), and `generate` continues a
cache, samples, beam-searches and starts from `inputs_embeds` exactly as `LlavaForConditionalGeneration` on the same
weights does."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from transformers.cache_utils import Cache
from transformers.core_model_loading import apply_renamings
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.models.auto import modeling_auto

from croc_testing.batches import PAD_TOKEN_ID, make_batch
from modeling_croc import AUTO_MODEL_CLASSES, CrocConfig, CrocForConditionalGeneration, CrocModel
from modeling_croc.convert import croc_to_llava
from modeling_croc.parent_wiring import LoadOnlyRenaming

# The cache's name in generate's output and arguments: `cache` since transformers 5.24, `past_key_values` before.
CACHE_NAME = "cache" if "cache" in {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)} else "past_key_values"


def _croc(config, seed: int = 0):
    torch.manual_seed(seed)
    return CrocForConditionalGeneration(config).eval()


def _assert_same(tuple_part, dict_part, where: str) -> None:
    """Exact equality of one output entry: tensors, caches (layer by layer), or nested tuples/lists of them."""
    if isinstance(dict_part, Cache):
        assert isinstance(tuple_part, Cache), where
        assert len(tuple_part.layers) == len(dict_part.layers), where
        for index, (ours, theirs) in enumerate(zip(tuple_part.layers, dict_part.layers)):
            torch.testing.assert_close(ours.keys, theirs.keys, rtol=0, atol=0, msg=f"{where} layer {index} keys")
            torch.testing.assert_close(ours.values, theirs.values, rtol=0, atol=0, msg=f"{where} layer {index} values")
    elif isinstance(dict_part, (tuple, list)):
        assert len(tuple_part) == len(dict_part), where
        for index, (ours, theirs) in enumerate(zip(tuple_part, dict_part)):
            _assert_same(ours, theirs, f"{where}[{index}]")
    else:
        torch.testing.assert_close(tuple_part, dict_part, rtol=0, atol=0, msg=where)


FORWARDS = {
    # name: (model class, forward kwargs on top of the batch)
    "model": (CrocModel, {}),
    "model_stage_1_5": (CrocModel, {"croc_objectives": True}),
    "generation": (CrocForConditionalGeneration, {}),
    "generation_stage_1_5": (CrocForConditionalGeneration, {"croc_objectives": True}),
}


@pytest.mark.parametrize("how", ["argument", "config"])
@pytest.mark.parametrize("forward", sorted(FORWARDS))
def test_tuple_outputs_equal_dict_outputs(make_config, forward, how):
    """`return_dict=False` (as an argument, or `config.return_dict=False`) gives `to_tuple()` of the dict output:
    the same entries in the same order, bit for bit, for the inference and the stage-1.5 forwards."""
    model_class, extra = FORWARDS[forward]
    config = make_config(croc_preset="official")
    torch.manual_seed(0)
    model = model_class(config).eval()
    batch = make_batch(config, rows=2, left_pad=1)
    if model_class is CrocModel and not extra:
        batch.pop("labels")  # CrocModel reads labels only to place the stage-1.5 bidirectional span
    inputs = {**batch, **extra, "use_cache": True, "output_hidden_states": True, "output_attentions": True}

    def seeded() -> dict:
        # The stage-1.5 forward draws which tokens to replace: the same draw for both calls.
        return {"croc_generator": torch.Generator().manual_seed(3)} if extra else {}

    with torch.no_grad():
        as_dict = model(**inputs, **seeded())
        if how == "argument":
            as_tuple = model(**inputs, **seeded(), return_dict=False)
        else:
            model.config.return_dict = False
            as_tuple = model(**inputs, **seeded())
            model.config.return_dict = True

    assert isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected) == len(as_dict.keys())
    for name, ours, theirs in zip(as_dict.keys(), as_tuple, expected):
        _assert_same(ours, theirs, name)
    # The tuple is not trivially short: the cache, hidden states and attentions (and the stage-1.5 extras) are in it.
    assert {"hidden_states", "attentions"} <= set(as_dict.keys())
    assert any(isinstance(value, Cache) for value in as_tuple)
    if extra:
        assert {"visual_tokens", "pool_ids", "replaced_token_mask"} <= set(as_dict.keys())
        if model_class is CrocForConditionalGeneration:
            assert {"loss", "lm_loss", "vtr_loss"} <= set(as_dict.keys())


def _llava_auto_classes() -> dict[str, str]:
    """Auto class name -> Llava class name, for every Auto model class of the installed transformers whose mapping
    holds `llava`."""
    found = {}
    # The Auto classes live in modeling_auto; walking `dir(transformers)` would import every model of the library.
    for name, auto_class in vars(modeling_auto).items():
        mapping = getattr(auto_class, "_model_mapping", None)
        names = getattr(mapping, "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "llava" in names:
            found[name] = names["llava"]
    return found


def test_croc_is_registered_with_every_auto_class_llava_is():
    llava = _llava_auto_classes()
    assert {"AutoModel", "AutoModelForImageTextToText", "AutoModelForPreTraining"} <= set(llava)
    installed = {name: cls for name, cls in AUTO_MODEL_CLASSES.items() if hasattr(transformers, name)}
    assert set(installed) == set(llava), "constants.AUTO_MODEL_CLASSES differs from Llava's Auto classes"
    croc_for_llava = {"LlavaModel": "CrocModel", "LlavaForConditionalGeneration": "CrocForConditionalGeneration"}
    config = CrocConfig()
    for auto_name, llava_class in llava.items():
        assert installed[auto_name] == croc_for_llava[llava_class], auto_name
        # What the Auto class really resolves a croc config to (the package registered it on import).
        resolved = getattr(transformers, auto_name)._model_mapping[type(config)]
        assert resolved.__name__ == croc_for_llava[llava_class], auto_name
    assert set(modeling_auto.MODEL_FOR_PRETRAINING_MAPPING_NAMES) >= {"llava"}


def test_every_auto_class_loads_a_saved_folder_with_trust_remote_code_without_the_package(make_config, tmp_path):
    """A fresh interpreter in which `modeling_croc` cannot be imported loads the saved folder through each Auto class
    of its `auto_map` (the code copied next to the weights), with no missing weight and the same outputs."""
    config = make_config()
    croc = _croc(config)
    croc.save_pretrained(tmp_path / "model")
    # The base model (AutoModel) has neither the LM head nor the VTR head: their weights are the ones left over.
    head_keys = {"language_model.lm_head.weight", *(key for key in croc.state_dict() if key.startswith("vtr_head."))}
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    expected_map = {"AutoConfig": "configuration_croc.CrocConfig",
                    **{auto: f"modeling_croc.{name}" for auto, name in AUTO_MODEL_CLASSES.items()}}
    assert auto_map == expected_map
    batch = make_batch(config)
    with torch.no_grad():
        reference = {"logits": croc(**batch).logits, "hidden": croc.model(**batch).last_hidden_state}
    torch.save({"batch": batch, **reference}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["modeling_croc"] = None  # the installed package must not be used
        import torch, transformers
        folder = {str(tmp_path / "model")!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        auto_map = json.load(open(folder + "/config.json"))["auto_map"]
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__name__ == "CrocConfig" and not type(config).__module__.startswith("modeling_croc")
        for auto_name, target in auto_map.items():
            if auto_name == "AutoConfig" or not hasattr(transformers, auto_name):
                continue
            model, info = getattr(transformers, auto_name).from_pretrained(
                folder, trust_remote_code=True, output_loading_info=True)
            assert type(model).__name__ == target.split(".")[-1], (auto_name, type(model))
            assert not type(model).__module__.startswith("modeling_croc"), type(model).__module__
            assert not info["missing_keys"], (auto_name, info)
            leftover = set({sorted(head_keys)!r}) if target.endswith("CrocModel") else set()
            assert set(info["unexpected_keys"]) == leftover, (auto_name, info)
            with torch.no_grad():
                out = model.eval()(**expected["batch"])
            if target.endswith("CrocModel"):
                torch.testing.assert_close(out.last_hidden_state, expected["hidden"], rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(out.logits, expected["logits"], rtol=1e-5, atol=1e-5)
            print("loaded", auto_name)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
                                 # a site put first on the path (gpu_check.sh's wheelhouse) stays first
                                 **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}})
    loaded = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("loaded ")}
    assert loaded == {name for name in AUTO_MODEL_CLASSES if hasattr(transformers, name)}, result.stderr[-3000:]


# ---- generate: the same tokens as Llava on the same weights ----

def _pair(make_config):
    croc = _croc(make_config(attn_implementation="sdpa"))
    return croc, croc_to_llava(croc)


def _inputs(config, rows: int = 2, left_pad: int = 2):
    batch = make_batch(config, rows=rows, left_pad=left_pad)
    return {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}


def test_generate_continues_from_its_cache(make_config):
    """Generate 3 tokens, then 4 more from the returned cache (the image is in the cache: no pixel_values again):
    the same as 7 tokens in one call, for Croc and for Llava alike."""
    croc, llava = _pair(make_config)
    inputs = _inputs(croc.config)
    settings = {"do_sample": False, "pad_token_id": PAD_TOKEN_ID}
    for model in (croc, llava):
        whole = model.generate(**inputs, max_new_tokens=7, **settings)
        first = model.generate(**inputs, max_new_tokens=3, return_dict_in_generate=True, **settings)
        cache = getattr(first, CACHE_NAME)
        assert isinstance(cache, Cache) and cache.get_seq_length() > inputs["input_ids"].shape[1]
        attention_mask = torch.cat([inputs["attention_mask"], torch.ones(2, 3, dtype=torch.long)], dim=1)
        continued = model.generate(input_ids=first.sequences, attention_mask=attention_mask, max_new_tokens=4,
                                   **{CACHE_NAME: cache}, **settings)
        assert torch.equal(continued, whole), type(model).__name__
    assert torch.equal(croc.generate(**inputs, max_new_tokens=7, **settings),
                       llava.generate(**inputs, max_new_tokens=7, **settings))


def test_generate_with_sampling_matches_llava_under_a_seed(make_config):
    croc, llava = _pair(make_config)
    inputs = _inputs(croc.config)
    settings = {"do_sample": True, "temperature": 1.3, "top_k": 20, "top_p": 0.9, "max_new_tokens": 8,
                "pad_token_id": PAD_TOKEN_ID}
    outputs = []
    for model in (croc, llava, croc):
        torch.manual_seed(1234)
        outputs.append(model.generate(**inputs, **settings))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    torch.manual_seed(99)
    greedy = croc.generate(**inputs, do_sample=False, max_new_tokens=8, pad_token_id=PAD_TOKEN_ID)
    # Sampling really sampled: at this temperature the tiny model's draw leaves the greedy path.
    assert not torch.equal(outputs[0], greedy)


def test_beam_search_matches_llava(make_config):
    croc, llava = _pair(make_config)
    inputs = _inputs(croc.config)
    settings = {"num_beams": 3, "num_return_sequences": 2, "do_sample": False, "max_new_tokens": 6,
                "pad_token_id": PAD_TOKEN_ID, "output_scores": True, "return_dict_in_generate": True}
    ours, theirs = croc.generate(**inputs, **settings), llava.generate(**inputs, **settings)
    assert ours.sequences.shape == (4, inputs["input_ids"].shape[1] + 6)
    assert torch.equal(ours.sequences, theirs.sequences)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=0, atol=0)


def test_generate_from_inputs_embeds(make_config):
    """`inputs_embeds` (the image placeholders found by their embedding) generates the tokens `input_ids` does,
    and the tokens Llava generates from the same embeddings."""
    croc, llava = _pair(make_config)
    inputs = _inputs(croc.config)
    embeds = croc.get_input_embeddings()(inputs["input_ids"])
    settings = {"do_sample": False, "max_new_tokens": 6, "pad_token_id": PAD_TOKEN_ID}
    from_embeds = croc.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                pixel_values=inputs["pixel_values"], **settings)
    from_ids = croc.generate(**inputs, **settings)
    assert from_embeds.shape == (2, 6)  # only the new tokens: there are no prompt ids to return
    assert torch.equal(from_embeds, from_ids[:, inputs["input_ids"].shape[1]:])
    assert torch.equal(from_embeds, llava.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                                   pixel_values=inputs["pixel_values"], **settings))


def _without_tower(model, folder) -> None:
    """Save `model` to `folder` with every vision-tower weight removed from the checkpoint."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder)
    weights = folder / "model.safetensors"
    kept = {name: tensor for name, tensor in load_file(weights).items() if ".vision_tower." not in f".{name}"}
    save_file(kept, weights, metadata={"format": "pt"})


@pytest.mark.parametrize("family", ["llava", "onevision"])
def test_weights_missing_from_a_checkpoint_are_initialised_as_the_parent_class_does(family, tmp_path):
    """transformers treats classes outside its package as custom code and skips `_init_weights` on modules without
    parameters of their own, so a tower missing from a checkpoint came out at std 0.02 instead of CLIP's depth- and
    width-scaled projections. Loaded with the same seed, the Croc class and its parent draw identical weights."""
    from croc_testing.backbones import backbone_fields
    from modeling_croc import CrocOnevisionConfig, CrocOnevisionForConditionalGeneration

    fields = backbone_fields("llama", "clip")
    if family == "llava":
        croc_class, config = CrocForConditionalGeneration, CrocConfig(**fields, prompt_pool_size=64)
    else:
        fields["vision_config"].update(image_size=28, patch_size=14)
        croc_class = CrocOnevisionForConditionalGeneration
        config = CrocOnevisionConfig(**fields, prompt_pool_size=64, image_grid_pinpoints=[[28, 28], [28, 56]])
    torch.manual_seed(0)
    croc = croc_class(config)
    _without_tower(croc, tmp_path / "croc")
    _without_tower(croc_to_llava(croc), tmp_path / "parent")
    parent_class = type(croc_to_llava(croc))

    loaded = {}
    for name, cls in (("croc", croc_class), ("parent", parent_class)):
        torch.manual_seed(1)
        loaded[name] = dict(cls.from_pretrained(tmp_path / name).named_parameters())
    tower = [name for name in loaded["parent"] if ".vision_tower." in f".{name}"]
    assert tower and all(name in loaded["croc"] for name in tower)
    for name in tower:
        torch.testing.assert_close(loaded["croc"][name], loaded["parent"][name], rtol=0, atol=0, msg=name)
    q_proj = next(name for name in tower if name.endswith("q_proj.weight"))
    assert loaded["croc"][q_proj].std() > 0.05  # CLIP's scaled std, not the 0.02 of a plain Linear


def _family_model_and_batch(family: str):
    """A tiny Croc model of `family` (eval mode) and a batch with images for it."""
    from croc_testing.backbones import backbone_fields
    from croc_testing.batches import make_anyres_batch
    from modeling_croc import CrocOnevisionConfig, CrocOnevisionForConditionalGeneration

    fields = backbone_fields("llama", "clip")
    torch.manual_seed(0)
    if family == "llava":
        model = CrocForConditionalGeneration(CrocConfig(**fields, prompt_pool_size=64)).eval()
        batch = make_batch(model.config, rows=2)
    else:
        fields["vision_config"].update(image_size=28, patch_size=14)
        config = CrocOnevisionConfig(**fields, prompt_pool_size=64, image_grid_pinpoints=[[28, 28], [28, 56]])
        model = CrocOnevisionForConditionalGeneration(config).eval()
        sizes = [[20, 50], [28, 28]]
        counts = model.image_token_counts(None, len(sizes), image_sizes=torch.tensor(sizes))
        batch = make_anyres_batch(config, sizes, counts, [1, 1], seed=0)
    return model, {key: value for key, value in batch.items() if key != "labels"}


@pytest.mark.parametrize("family", ["llava", "onevision"])
def test_a_decoding_step_compiles_into_one_graph(family):
    """`generate` with a compiled forward traces each decoding step with `fullgraph=True`: one graph break (as
    `dataclasses.fields` inside `forward` was) fails it. Traced here with dynamo's eager backend, which needs no
    compiler; the compiled step's logits equal the eager step's from the same cache."""
    from transformers import StaticCache

    model, inputs = _family_model_and_batch(family)
    length = inputs["input_ids"].shape[1]
    steps = {}
    with torch.no_grad():
        for name, forward in (("eager", model.forward),
                              ("compiled", torch.compile(model.forward, backend="eager", fullgraph=True))):
            cache = StaticCache(config=model.config.get_text_config(), max_cache_len=length + 2)
            prefill = model(**inputs, use_cache=True, cache_position=torch.arange(length), **{CACHE_NAME: cache})
            mask = torch.cat([inputs["attention_mask"], torch.ones_like(inputs["attention_mask"][:, :1])], dim=1)
            steps[name] = forward(input_ids=prefill.logits[:, -1:].argmax(-1), attention_mask=mask, use_cache=True,
                                  cache_position=torch.tensor([length]), **{CACHE_NAME: cache}).logits
    assert steps["eager"].shape[:2] == (inputs["input_ids"].shape[0], 1)
    torch.testing.assert_close(steps["compiled"], steps["eager"], rtol=1e-5, atol=1e-6)


def test_a_load_only_rename_renames_on_load_and_never_on_save():
    """`LoadOnlyRenaming` subclasses transformers' `WeightRenaming` (core_model_loading): loading applies its pattern
    (`rename_source_key`); saving reverses the model's renames (`reverse_transform`), and its reverse renames
    nothing, scoped or not."""
    rename = LoadOnlyRenaming(source_patterns=r"^model\.prompt_pool\.", target_patterns="prompt_pool.")
    assert apply_renamings("model.prompt_pool.weight", [rename]) == "prompt_pool.weight"
    assert apply_renamings("model.language_model.norm.weight", [rename]) == "model.language_model.norm.weight"
    rename.scope_prefix, rename.base_model_prefix = "", "model"
    reverse = rename.reverse_transform()
    assert (reverse.scope_prefix, reverse.base_model_prefix) == ("", "model")
    for key in ("prompt_pool.weight", "model.prompt_pool.weight", "model.model.prompt_pool.weight"):
        assert apply_renamings(key, [reverse]) == key
