"""LoRA on the language model in stage 1.5 (projector, pool and head fully trained), then the merge into a plain
folder that loads with `from_pretrained` and gives the PEFT model's logits."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from trainer_helpers import run_stage

from croc_testing.family_specs import SPECS_BY_NAME
from modeling_croc import CrocForConditionalGeneration
from trainer.collator import build_collator
from trainer.merge_lora import merge_lora
from trainer.stages import parameter_group


def test_lora_train_and_merge(tmp_path, data_dir, stage1_dir):
    out = tmp_path / "lora"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # not the suite's filters: what a user's run shows
        trainer = run_stage("stage1_5.yaml", out, f"--data.path={data_dir / 'detailed.json'}",
                            f"--model.name_or_path={stage1_dir}", "--croc_preset=official", "--model.use_peft=true",
                            "--model.lora_r=4", "--model.lora_alpha=8", "--max_steps=2", "--language_model_lr=1e-2")
    # peft reading transformers' deprecated attribute reached every LoRA run's output
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    peft_model = trainer.model
    trainable = [name for name, param in peft_model.named_parameters() if param.requires_grad]
    assert trainable and all("lora_" in name or "modules_to_save" in name for name in trainable)
    assert any("language_model" in name and "lora_A" in name for name in trainable)
    assert not any("vision_tower" in name for name in trainable)
    for part in ("multi_modal_projector", "prompt_pool", "vtr_head"):
        assert any(part in name and "modules_to_save" in name for name in trainable), part
    for name in ("adapter_config.json", "adapter_model.safetensors", "base_config/config.json", "tokenizer.json"):
        assert (out / name).is_file(), name

    merged_dir = tmp_path / "lora-merged"  # written by trainer.train next to output_dir
    merged = CrocForConditionalGeneration.from_pretrained(merged_dir).eval()
    assert merged.vtr_head is not None and merged.config.croc_preset == "official"

    batch = build_collator(trainer.processing_class)([trainer.train_dataset[i] for i in (0, 9)])
    batch.pop("labels")
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-4)
        # The merge step on its own (CLI: python -m trainer.merge_lora OUT --out DIR) gives the same folder.
        again = CrocForConditionalGeneration.from_pretrained(merge_lora(out, tmp_path / "again")).eval()
        torch.testing.assert_close(again(**batch).logits, expected, rtol=1e-4, atol=1e-4)
        base = CrocForConditionalGeneration.from_pretrained(stage1_dir).eval()
        assert not torch.allclose(base(**batch).logits, expected, atol=1e-4)  # the adapters changed something


def test_merge_cli_refuses_to_write_over_the_base_or_the_adapters(tmp_path):
    """`python -m trainer.merge_lora RUN --out BASE` replaced the base model the adapters were trained on by the
    merged one (and `--out RUN` the run): refused in one line, every file as it was."""
    import json

    import pytest
    from peft import LoraConfig, get_peft_model

    from croc_testing.tiny import save_tiny_croc
    from trainer.merge_lora import main

    base = save_tiny_croc(tmp_path / "base")
    peft = get_peft_model(CrocForConditionalGeneration.from_pretrained(base),
                          LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "run")
    adapter_config = tmp_path / "run" / "adapter_config.json"
    adapter_config.write_text(json.dumps({**json.loads(adapter_config.read_text()),
                                          "base_model_name_or_path": str(base)}))
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for out in (base, tmp_path / "run", tmp_path / "run" / "merged"):
        with pytest.raises(SystemExit, match="merge error"):
            main([str(tmp_path / "run"), "--out", str(out)])
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    main([str(tmp_path / "run"), "--out", str(tmp_path / "merged")])
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_merge_cli_reads_and_writes_under_the_home_folder_for_a_tilde(tmp_path, monkeypatch):
    """RELIABILITY.md: `~` in a folder option means the home folder. Before: --out was checked under the home folder
    and written as ./~/OUT (over files the check never saw)."""
    import pytest
    from peft import LoraConfig, get_peft_model

    from croc_testing.tiny import save_tiny_croc
    from trainer.merge_lora import main

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    base = save_tiny_croc(home / "base")
    get_peft_model(CrocForConditionalGeneration.from_pretrained(base),
                   LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(home / "run")
    (tmp_path / "~" / "merged").mkdir(parents=True)
    (tmp_path / "~" / "merged" / "notes.txt").write_text("mine")
    main(["~/run", "--out", "~/merged", "--base", "~/base"])
    assert (home / "merged" / "model.safetensors").is_file()
    assert [path.name for path in (tmp_path / "~" / "merged").iterdir()] == ["notes.txt"]
    with pytest.raises(SystemExit, match="merge error: ~nosuchuser4/m: ~nosuchuser4 is the home folder of no user"):
        main(["~/run", "--out", "~nosuchuser4/m"])


def test_merge_cli_names_a_missing_adapter_or_base_in_one_line(tmp_path, capsys):
    """A folder that is not a LoRA run, or one whose base folder is gone (moved, or adapters downloaded without it),
    ended the merge command with a traceback (the hostile tester's finding); it is one `merge error:` line."""
    import json

    import pytest

    from trainer.merge_lora import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": str(tmp_path / "moved-base"), "peft_type": "LORA"}))
    for adapter, words in ((tmp_path / "not-a-run", "has no adapter_config.json: not a LoRA run folder"),
                           (tmp_path / "run", f"trained on the base `{tmp_path / 'moved-base'}`, which is neither "
                                              "a folder here nor a Hub repository in the cache; pass --base")):
        with pytest.raises(SystemExit) as stop:
            main([str(adapter), "--out", str(tmp_path / "merged")])
        message = str(stop.value.code)
        assert message.startswith("merge error: ") and words in message and "\n" not in message, message
    assert not (tmp_path / "merged").exists()


def test_merge_cli_names_adapters_of_another_base_in_one_line(tmp_path):
    """The base folder an adapter names now holds another model (retrained at another size, or adapters downloaded
    next to the wrong base): PEFT's size-mismatch error, one traceback line per tensor, ended the command."""
    import pytest
    from peft import LoraConfig, get_peft_model

    from croc_testing.tiny import save_tiny_croc
    from trainer.merge_lora import main

    base = save_tiny_croc(tmp_path / "base")
    model = CrocForConditionalGeneration.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
                   ).save_pretrained(tmp_path / "run")
    save_tiny_croc(tmp_path / "base", hidden_size=48)
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "run"), "--out", str(tmp_path / "merged")])
    message = str(stop.value.code)
    assert message.startswith("merge error: ") and "size mismatch" in message and "\n" not in message, message


def test_lora_targets_the_language_model_of_a_family_naming_it_otherwise():
    """SmolVLM's language model is `text_model`, not `language_model`: the targets regex matched no module there, so
    every LoRA run on SmolVLM was refused ("names no module of the language model; its projections: " with none
    listed). The adapters go on its text model's projections, and never on its vision tower's."""
    from peft import LoraConfig, get_peft_model

    from croc_testing.family_specs import SPECS_BY_NAME
    from trainer.model_checks import check_lora_targets

    model = SPECS_BY_NAME["smolvlm"].build()
    check_lora_targets(model, ["q_proj", "v_proj"])  # raised a configuration error before
    from trainer.lora import language_model_name, lora_target_regex

    assert language_model_name(model) == "text_model"
    peft_model = get_peft_model(model, LoraConfig(
        r=2, target_modules=lora_target_regex(["q_proj", "v_proj"], language_model_name(model))))
    adapted = {name.split(".lora_A")[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    layers = model.config.text_config.num_hidden_layers
    assert len(adapted) == 2 * layers and all(".text_model." in name for name in adapted), sorted(adapted)
    # The other families keep the name the regex had.
    assert language_model_name(SPECS_BY_NAME["qwen2_5_vl"].build()) == "language_model"


@pytest.mark.parametrize("family", sorted(SPECS_BY_NAME))
@pytest.mark.parametrize("vision_tower", [False, True], ids=["tower frozen", "tower trained"])
def test_lora_keeps_every_other_trained_part_of_every_family_training(family, vision_tower):
    """PEFT freezes every module that is neither adapted nor in `modules_to_save`, which named LLaVA's modules only:
    Qwen2.5-VL's and Qwen3-VL's patch mergers (their projector) and SmolVLM's connector and vision model trained no
    more under LoRA (and were left out of the adapter folder, so the merge dropped them) while the card listed them
    as trained (found by a hostile reviewer). Every family keeps every trained parameter training, through the
    module copies the forward uses; LLaVA-NeXT's bare `image_newline`, which PEFT cannot keep, is refused."""
    from types import SimpleNamespace

    from peft import get_peft_model_state_dict

    from trainer.cli import ConfigError
    from trainer.lora import apply_lora
    from trainer.model_checks import check_lora_keeps_the_trained_parts
    from trainer.model_loading import apply_trainable_parts, count_trainable

    spec = SPECS_BY_NAME[family]
    model = spec.build()
    parts = ["projector", "prompt_pool", "vtr_head", "language_model", *(["vision_tower"] if vision_tower else [])]
    if family == "llava_next":
        with pytest.raises(ConfigError, match=r"model.image_newline is a bare parameter .* leave projector out"):
            check_lora_keeps_the_trained_parts(model, parts)
        return
    check_lora_keeps_the_trained_parts(model, parts)
    before = apply_trainable_parts(model, parts)
    model_args = SimpleNamespace(name_or_path=None, lora_r=2, lora_alpha=4, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"],
                                 load_in_4bit=False)
    peft_model = apply_lora(model, model_args, SimpleNamespace(trainable_parts=parts, gradient_checkpointing=False,
                                                                   seed=0))
    after = count_trainable(peft_model)
    for part in ("projector", "prompt_pool", "vtr_head", "vision_tower"):
        assert after[part][0] == before[part][0], (part, before[part], after[part])
    peft_model(**spec.batch(model, 2)).loss.backward()
    trained = {name for name, param in peft_model.named_parameters() if param.requires_grad}
    reached = {name for name, param in peft_model.named_parameters() if param.grad is not None}
    saved = get_peft_model_state_dict(peft_model)  # what the adapter folder holds, and the merge restores
    for part in ("projector", *(["vision_tower"] if vision_tower else [])):
        copies = {name for name in trained if parameter_group(name) == part}
        assert copies and all("modules_to_save" in name for name in copies), part
        assert copies & reached, part  # the copies are the ones the forward uses
        assert all(name.replace(".modules_to_save.default", "") in saved or name in saved for name in copies), part


def test_a_lora_checkpoint_written_before_the_mergers_trained_resumes_on_its_curve(tmp_path, data_dir, monkeypatch):
    """A Qwen2.5-VL LoRA run checkpointed by the version that kept only the pool and head whole (its patch merger
    frozen: no copy of it in the adapter, no moments in the optimizer) and resumed by this one ended in PEFT's
    KeyError traceback (found by a hostile reviewer). The run goes on as it started, on the uninterrupted curve."""
    import json
    import shutil

    from croc_testing.families import save_tiny_qwen2_5_vl

    plain, out = save_tiny_qwen2_5_vl(tmp_path / "plain"), tmp_path / "lora"
    options = (f"--model.name_or_path={plain}", f"--data.path={data_dir / 'detailed.json'}", "--model.use_peft=true",
               "--model.lora_r=4", "--model.lora_alpha=8", "--max_steps=4", "--save_strategy=steps", "--save_steps=2")
    monkeypatch.setattr("trainer.lora.fully_trained_modules", lambda model, parts: (["prompt_pool", "vtr_head"], []))
    run_stage("stage1_5_qwen2_5_vl.yaml", out, *options)
    monkeypatch.undo()

    def losses() -> list[float]:
        state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8"))
        return [entry["loss"] for entry in state["log_history"] if "loss" in entry]

    uninterrupted = losses()
    shutil.rmtree(out / "checkpoint-4")  # killed after step 2
    shutil.rmtree(tmp_path / "lora-merged")
    trainer = run_stage("stage1_5_qwen2_5_vl.yaml", out, *options)
    assert losses() == uninterrupted and len(uninterrupted) == 4
    assert not any("merger" in name for name, param in trainer.model.named_parameters() if param.requires_grad)


@pytest.mark.parametrize("family", ["llava", *sorted(SPECS_BY_NAME)])
def test_qlora_quantises_the_language_model_only(family):
    """QLoRA keeps the tower, projector, pool, head and lm_head in full precision. transformers matches each skip
    entry from the start of a module's path, so the bare `vision_tower` / `multi_modal_projector` entries matched
    none of the `model.`-prefixed modules: every family's vision tower and projector (the one the stage trains
    whole) were loaded in 4 bits (found by a hostile tester). Checked with the matching `replace_with_bnb_linear`
    applies, on CPU."""
    from types import SimpleNamespace

    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    from croc_testing.tiny import tiny_croc_config
    from trainer.lora import language_model_name
    from trainer.model_loading import _load_kwargs

    model = (CrocForConditionalGeneration(tiny_croc_config()) if family == "llava" else SPECS_BY_NAME[family].build())
    config = _load_kwargs(SimpleNamespace(dtype="float32", attn_implementation="sdpa", load_in_4bit=True))
    skipped = HfQuantizer.get_modules_to_not_convert(model, config["quantization_config"].llm_int8_skip_modules,
                                                     model._keep_in_fp32_modules)
    language_model = f".{language_model_name(model)}."
    linear = [path for path, module in model.named_modules() if type(module) is torch.nn.Linear]
    quantised = {path for path in linear if should_convert_module(path, skipped)}
    assert quantised == {path for path in linear if language_model in f".{path}" and not path.endswith("lm_head")}


@pytest.mark.parametrize("load_in_4bit", [True, False], ids=["QLoRA", "LoRA"])
def test_a_qlora_checkpoint_of_the_4bit_tower_is_told_its_computation_changed(tmp_path, caplog, load_in_4bit):
    """A QLoRA run checkpointed while its tower was loaded in 4 bits (Gemma 3's, whose projector has no Linear to
    fail on) goes on with it in full precision: the resume says so; a plain LoRA run is not told."""
    import json
    import logging

    from trainer.resume import _check_record
    from trainer.run_record import RUN_RECORD

    saved = {"format": 1, "computation": 3, "stage": "2",
             "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj"], "load_in_4bit": load_in_4bit}}
    (tmp_path / RUN_RECORD).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        _check_record(str(tmp_path), saved, [])
    assert ("QLoRA's vision tower and projector in full precision" in caplog.text) is load_in_4bit, caplog.text


def test_the_adapters_start_from_the_runs_seed_whatever_loading_drew():
    """LoRA's A matrices were drawn from wherever loading left the global generator: a model built partitioned under
    ZeRO-3 draws otherwise than one built whole, so a LoRA run under ZeRO-3 left the one-process run's curve at its
    second step (found by a hostile tester). They come from the run's seed; the global generator is left as it was."""
    from types import SimpleNamespace

    from croc_testing.tiny import tiny_croc_config
    from trainer.lora import apply_lora

    parts = ["projector", "prompt_pool", "vtr_head", "language_model"]
    model_args = SimpleNamespace(name_or_path=None, lora_r=2, lora_alpha=4, lora_dropout=0.0, lora_target_modules=["q_proj"],
                                 load_in_4bit=False)
    adapters = []
    for drawn_before in (0, 1):
        model = CrocForConditionalGeneration(tiny_croc_config())
        torch.manual_seed(drawn_before)
        before = torch.random.get_rng_state()
        peft_model = apply_lora(model, model_args, SimpleNamespace(trainable_parts=parts, gradient_checkpointing=False,
                                                                   seed=7))
        assert torch.equal(torch.random.get_rng_state(), before)
        adapters.append({name: param for name, param in peft_model.named_parameters() if "lora_A" in name})
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    for name, param in adapters[0].items():
        assert torch.equal(param, adapters[1][name]), name


def test_a_downloaded_adapter_merges_onto_the_base_given_with_base_and_only_that_base(tmp_path, data_dir,
                                                                                        stage1_dir, monkeypatch):
    """A pushed adapter names its base by folder name only (a local path never leaves the machine): downloaded or
    copied elsewhere it could not be merged, the command saying "BASE is not a model folder: it has no config.json"
    and offering no way to name the base. Without `--base` the merge says which base is needed; `--base` names it;
    a base of another architecture, or of other weights under the same config, is refused in one line (the merge
    would give a wrong model silently); the merged folder loads through the Auto classes with every weight, and
    gives the adapted model's logits."""
    from transformers import AutoModelForImageTextToText

    from croc_testing.tiny import save_tiny_croc
    from trainer.hub import files_to_upload, write_upload_set
    from trainer.merge_lora import main

    out = tmp_path / "lora"
    trainer = run_stage("stage1_5.yaml", out, f"--data.path={data_dir / 'detailed.json'}",
                        f"--model.name_or_path={stage1_dir}", "--croc_preset=official", "--model.use_peft=true",
                        "--model.lora_r=4", "--model.lora_alpha=8", "--max_steps=2", "--language_model_lr=1e-2")
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    write_upload_set(out, files_to_upload(out), downloaded)  # what `hf download` gives back
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))

    def refusal(*options: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main([str(downloaded), "--out", str(tmp_path / "merged"), *options])
        message = str(stop.value.code)
        assert message.startswith("merge error: ") and "\n" not in message, message
        assert not (tmp_path / "merged").exists()
        return message

    message = refusal()
    assert f"trained on the base `{stage1_dir.name}`" in message and "--base" in message, message
    other_size = save_tiny_croc(tmp_path / "other-size", hidden_size=48)
    assert "another architecture" in refusal("--base", str(other_size))
    retrained = CrocForConditionalGeneration.from_pretrained(stage1_dir)  # the same config, other weights
    with torch.no_grad():
        for param in retrained.parameters():
            param.add_(0.01)
    retrained.save_pretrained(tmp_path / "retrained")
    assert "other weights" in refusal("--base", str(tmp_path / "retrained"))
    # transformers loads an adapter folder onto the base its adapter_config.json names: by folder name, that was the
    # downloader's own folder of that name (these other weights here), without a word. It names none now.
    shutil.copytree(tmp_path / "retrained", elsewhere / stage1_dir.name)
    with pytest.raises((OSError, ValueError, TypeError)):
        AutoModelForImageTextToText.from_pretrained(downloaded)

    main([str(downloaded), "--out", str(tmp_path / "merged"), "--base", str(stage1_dir)])
    merged, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not any(info.values()), info
    batch = build_collator(trainer.processing_class)([trainer.train_dataset[i] for i in (0, 9)])
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(**batch).logits, trainer.model.eval()(**batch).logits,
                                   rtol=1e-4, atol=1e-4)


def test_a_downloaded_adapter_finds_its_base_in_the_hub_cache(tmp_path, monkeypatch):
    """Without `--base`, the base an adapter names is looked up as a folder here, then as a Hub repository in the
    cache (offline: nothing is downloaded)."""
    import json

    from peft import LoraConfig, get_peft_model

    from croc_testing.tiny import save_tiny_croc
    from trainer.merge_lora import find_base

    base = save_tiny_croc(tmp_path / "base")
    get_peft_model(CrocForConditionalGeneration.from_pretrained(base),
                   LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "run")
    adapter_config = tmp_path / "run" / "adapter_config.json"
    adapter_config.write_text(json.dumps({**json.loads(adapter_config.read_text()),
                                          "base_model_name_or_path": "someone/croc-base"}))
    cache = tmp_path / "cache"
    snapshot = cache / "models--someone--croc-base" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((base / "config.json").read_text())
    (cache / "models--someone--croc-base" / "refs").mkdir()
    (cache / "models--someone--croc-base" / "refs" / "main").write_text("0" * 40)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ValueError, match="trained on the base `someone/croc-base`, which is neither a folder here"):
        find_base(tmp_path / "run")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert find_base(tmp_path / "run") == "someone/croc-base"
    assert find_base(tmp_path / "run", str(base)) == str(base)


def test_an_older_runs_record_names_its_own_base_by_its_versions_fingerprint(tmp_path):
    """A LoRA run older than base_config/base_weights.json: the merge compares the base with its run record's
    `lora_base_weights`, which its version computed over `training_args.bin` too (every Trainer-saved stage folder
    holds one), so the very base it trained on was refused as "other weights", with no way past (found by a hostile
    reviewer). Other weights are still refused."""
    import hashlib
    import json

    from peft import LoraConfig, get_peft_model

    from croc_testing.tiny import save_tiny_croc
    from trainer.fingerprints import _WEIGHT_PIECE_BYTES, _WEIGHT_PIECES
    from trainer.merge_lora import base_mismatch
    from trainer.run_record import RUN_RECORD

    def fingerprint_then(folder):  # `weights_fingerprint` as a run record of that version holds it
        digest = hashlib.sha256()
        for path in sorted(path for path in folder.iterdir() if path.suffix in (".safetensors", ".bin")):
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as file:
                for piece in range(_WEIGHT_PIECES):
                    file.seek(max(0, size - _WEIGHT_PIECE_BYTES) * piece // max(1, _WEIGHT_PIECES - 1))
                    digest.update(file.read(_WEIGHT_PIECE_BYTES))
        return digest.hexdigest()[:16]

    base = save_tiny_croc(tmp_path / "stage1")
    (base / "training_args.bin").write_bytes(b"the stage run's pickled arguments")
    run = tmp_path / "lora"
    get_peft_model(CrocForConditionalGeneration.from_pretrained(base),
                   LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(run)
    (run / RUN_RECORD).write_text(json.dumps({"lora_base_weights": fingerprint_then(base)}))
    assert base_mismatch(run, str(base)) is None
    other = save_tiny_croc(tmp_path / "other", seed=1)
    (other / "training_args.bin").write_bytes(b"the stage run's pickled arguments")
    assert "holds other weights" in (base_mismatch(run, str(other)) or "")


# Qwen3.5's Gated DeltaNet projections (its linear-attention layers), named as `model.lora_target_modules` names
# them; its depthwise `conv1d` is refused (tests/faults/test_faults_arguments.py).
DELTANET_PROJECTIONS = ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj")


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
def test_lora_on_qwen3_5_trains_every_adapter_and_merges_to_the_exported_parents_logits(family, data_dir, tmp_path):
    """docs/MODELS.md said LoRA on Qwen3.5 was not tested. With the default targets and the Gated DeltaNet
    projections named: every adapter the regex places (the linear layers' projections, the full-attention layer's,
    the dense MLP's or the shared expert's, never a routed expert nor the vision tower) gets a nonzero gradient in a
    stage-1.5 step, so each is applied in the forward; a LoRA run's merged folder gives the PEFT model's logits, and
    its `to-plain` export the parent class's logits of the merged model."""
    from peft import LoraConfig, get_peft_model

    from croc_testing.trainer_specs import TRAINER_SPECS
    from modeling_croc.convert.__main__ import main as convert_main
    from trainer.lora import lora_target_regex
    from trainer.script_args import DEFAULT_LORA_TARGETS

    targets = [*DEFAULT_LORA_TARGETS, *DELTANET_PROJECTIONS]
    model = SPECS_BY_NAME[family].build(croc_pretraining=True).train()
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=lora_target_regex(targets)))
    adapted = {name.split(".lora_A")[0]: module for name, module in peft_model.named_modules()
               if name.endswith(".lora_A")}
    layer_types = model.config.text_config.layer_types
    for index, kind in enumerate(layer_types):
        expected = (DELTANET_PROJECTIONS if kind == "linear_attention" else ("q_proj", "k_proj", "v_proj", "o_proj"))
        prefix = f"model.language_model.layers.{index}."
        found = {name.rsplit(".", 1)[-1] for name in adapted if f"{prefix}" in name and ".mlp." not in name}
        assert found == set(expected), (index, sorted(found))
        mlp = {name.rsplit(".", 1)[-1] for name in adapted if f"{prefix}mlp." in name}
        assert mlp == {"gate_proj", "up_proj", "down_proj"}, (index, sorted(mlp))
        assert all(".experts." not in name for name in adapted)  # the routed experts are fused parameters
    assert all(".language_model." in name for name in adapted)
    with torch.no_grad():  # LoRA starts with B = 0, which gives A no gradient: a step's B instead
        for name, param in peft_model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.02)
    batch = SPECS_BY_NAME[family].batch(model, 2)
    peft_model(**batch, croc_generator=torch.Generator().manual_seed(0)).loss.backward()
    dead = [name for name, param in peft_model.named_parameters()
            if ".lora_" in name and (param.grad is None or not param.grad.abs().sum())]
    assert not dead, dead

    spec = next(spec for spec in TRAINER_SPECS if spec.name == family)
    plain_folder, out = spec.save_plain(tmp_path / "plain"), tmp_path / "lora"
    trainer = run_stage(spec.config, out, f"--model.name_or_path={plain_folder}",
                        f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2", "--model.use_peft=true",
                        "--model.lora_r=4", "--model.lora_alpha=8", "--model.lora_dropout=0",
                        f"--model.lora_target_modules=[{', '.join(targets)}]", "--language_model_lr=1e-2")
    exported = tmp_path / "exported"
    convert_main(["to-plain", str(tmp_path / "lora-merged"), str(exported)])
    merged = spec.croc_generation.from_pretrained(tmp_path / "lora-merged").eval()
    plain = spec.parent_generation.from_pretrained(exported).eval()
    inputs = spec.logits_inputs((spec.export_processor or spec.croc_processor).from_pretrained(exported), data_dir)
    peft_model = trainer.model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain(**inputs).logits, merged(**inputs).logits, rtol=0, atol=0)
        base = spec.parent_generation.from_pretrained(plain_folder).eval()
        assert not torch.allclose(base(**inputs).logits, expected, atol=1e-4)  # the adapters changed something


@pytest.mark.parametrize("cut", ["adapters", "base"])
def test_merge_cli_names_a_weights_file_cut_short_in_one_line(tmp_path, cut):
    """An adapter file cut short ended the merge in safetensors' traceback; a base file cut short was called 'other
    weights than the base the adapters were trained on' (its fingerprint differs), which sent users looking for
    another base. Both are one `merge error:` line naming the folder whose file is cut, nothing written."""
    import json

    from peft import LoraConfig, get_peft_model

    from croc_testing.tiny import save_tiny_croc
    from trainer.croc_trainer import BASE_CONFIG_DIR, BASE_WEIGHTS_FILE
    from trainer.fingerprints import weights_fingerprint
    from trainer.merge_lora import main

    base = save_tiny_croc(tmp_path / "base")
    model = CrocForConditionalGeneration.from_pretrained(base)
    run = tmp_path / "run"
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
                   ).save_pretrained(run)
    (run / BASE_CONFIG_DIR).mkdir()
    (run / BASE_CONFIG_DIR / BASE_WEIGHTS_FILE).write_text(json.dumps(
        {"weights_fingerprint": weights_fingerprint(str(base))}))
    broken = (run / "adapter_model.safetensors") if cut == "adapters" else (base / "model.safetensors")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(SystemExit) as stop:
        main([str(run), "--out", str(tmp_path / "merged"), "--base", str(base)])
    message = str(stop.value.code)
    assert message.startswith(f"merge error: {broken.parent}: a weights file is not valid safetensors"), message
    assert "\n" not in message and "other weights" not in message
    assert not (tmp_path / "merged").exists()


def test_a_lora_run_on_a_hub_base_names_it_by_its_id_locally_and_in_the_upload(tmp_path, data_dir, stage1_dir,
                                                                             monkeypatch):
    """PEFT names the base by the folder the model loaded from, for a Hub id its snapshot in this machine's cache:
    the upload wrote it as null (and before as the snapshot's commit hash), the card named the hash, and a merge
    elsewhere needed --base (found by a hostile tester). The id is kept, and finds the base from the cache."""
    import json

    from trainer.hub import files_to_upload, write_upload_set
    from trainer.merge_lora import find_base

    repo = tmp_path / "cache" / "models--someone--croc-base"
    shutil.copytree(stage1_dir, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lora"
    run_stage("stage1_5.yaml", out, f"--data.path={data_dir / 'detailed.json'}", "--model.name_or_path=someone/croc-base",
              "--croc_preset=official", "--model.use_peft=true", "--model.lora_r=4", "--model.lora_alpha=8",
              "--max_steps=1")
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "someone/croc-base"
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    write_upload_set(out, files_to_upload(out), pushed)
    assert json.loads((pushed / "adapter_config.json").read_text())["base_model_name_or_path"] == "someone/croc-base"
    assert "the Croc base folder `someone/croc-base`" in (pushed / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    assert find_base(pushed) == "someone/croc-base"
