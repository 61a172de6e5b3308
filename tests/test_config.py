"""CrocConfig presets (one table for model and optimiser), explicit overrides and validation."""

import dataclasses

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

from modeling_croc import CROC_PRESETS, CrocConfig
from modeling_croc.configuration_croc import CROC_FIELD_NAMES
from modeling_croc.presets import preset_for_released_model_type
from trainer.stages import PARAMETER_GROUPS, STAGES


def test_paper_is_the_default(make_config):
    config = make_config()
    assert config.croc_preset == "paper"
    for name, value in CROC_PRESETS["paper"].model_fields.items():
        if name != "prompt_pool_size":  # the tiny factory shrinks the pool
            assert getattr(config, name) == value, name


def test_official_preset_reproduces_the_released_code(make_config):
    config = make_config(croc_preset="official")
    assert config.token_matching == "nearest"
    assert config.bidirectional_span == "prompt"
    assert config.vtr_loss == "smooth_l1" and config.vtr_smooth_l1_beta == 0.01
    assert config.vtr_positions == "all" and config.vtr_head_layers == 1
    assert config.normalize_visual_tokens is True and config.prompt_pool_init == "normal"


def test_explicit_fields_win_over_the_preset(make_config):
    config = make_config(croc_preset="official", token_matching="hungarian", vtr_head="none")
    assert config.token_matching == "hungarian" and config.vtr_head == "none"
    assert config.bidirectional_span == "prompt"


def test_round_trip_keeps_resolved_fields(make_config, tmp_path):
    config = make_config(croc_preset="official", mask_ratio=0.5)
    config.save_pretrained(tmp_path)
    loaded = CrocConfig.from_pretrained(tmp_path)
    for name in CROC_PRESETS["official"].model_fields:
        assert getattr(loaded, name) == getattr(config, name), name


def test_image_seq_length_follows_the_vision_tower(make_config):
    assert make_config(image_size=112).image_seq_length == 64
    assert CrocConfig().image_seq_length == 576  # CLIP ViT-L/14 at 336 px


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"mask_ratio": -0.1}, "mask_ratio"),
        ({"prompt_pool_size": 0}, "prompt_pool_size"),
        ({"vtr_loss_weight": -1.0}, "vtr_loss_weight"),
        ({"vtr_head_layers": -1}, "vtr_head_layers"),
        ({"vtr_head": "bert", "vtr_head_layers": 0}, "vtr_head_layers >= 1"),
        ({"prompt_pool_size": 8}, "Hungarian matching is one-to-one"),
    ],
)
def test_invalid_values_fail_at_construction(make_config, fields, message):
    with pytest.raises(ValueError, match=message):
        make_config(**fields)


@pytest.mark.parametrize("fields", [{"token_matching": "greedy"}, {"vtr_loss": "l1"}, {"bidirectional_span": "all"}])
def test_unknown_choices_are_rejected(make_config, fields):
    with pytest.raises(StrictDataclassFieldValidationError):
        make_config(**fields)


def test_unknown_preset_is_rejected(make_config):
    with pytest.raises(ValueError, match="croc_preset must be one of"):
        make_config(croc_preset="mine")


def test_the_preset_table_owns_every_preset_field():
    """Every Croc field a config leaves to its preset (default None) is set by every preset, with a value the
    config accepts; each preset names a learning rate for every trainable part of every stage."""
    own_fields = [field for field in dataclasses.fields(CrocConfig) if field.name in CROC_FIELD_NAMES]
    left_to_preset = {field.name for field in own_fields if field.default is None}
    for preset in CROC_PRESETS.values():
        assert set(preset.model_fields) == left_to_preset, preset.name
        config = CrocConfig(croc_preset=preset.name)
        assert {name: getattr(config, name) for name in preset.model_fields} == dict(preset.model_fields)
        for stage in STAGES.values():
            rates = preset.stage_learning_rates(stage.name)
            assert set(stage.trainable_parts) <= set(rates) <= set(PARAMETER_GROUPS), (preset.name, stage.name)
            assert all(rate > 0 for rate in rates.values())


def test_released_checkpoints_take_the_preset_they_were_trained_with():
    assert preset_for_released_model_type("croc_llama") == "official"
    assert preset_for_released_model_type("llava_llama") == "paper"
    assert preset_for_released_model_type(None) == "paper"


def test_nearest_allows_a_pool_smaller_than_the_masked_set(make_config):
    config = make_config(token_matching="nearest", prompt_pool_size=1)
    assert config.prompt_pool_size == 1
