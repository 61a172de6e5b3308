"""CrocConfig presets, explicit overrides and validation."""

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

from modeling_croc import CROC_PRESETS, CrocConfig


def test_paper_is_the_default(make_config):
    config = make_config()
    assert config.croc_preset == "paper"
    for name, value in CROC_PRESETS["paper"].items():
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
    config = make_config(croc_preset="official", token_matching="hungarian", vtr_head_layers=0)
    assert config.token_matching == "hungarian" and config.vtr_head_layers == 0
    assert config.bidirectional_span == "prompt"


def test_round_trip_keeps_resolved_fields(make_config, tmp_path):
    config = make_config(croc_preset="official", mask_ratio=0.5)
    config.save_pretrained(tmp_path)
    loaded = CrocConfig.from_pretrained(tmp_path)
    for name in CROC_PRESETS["official"]:
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
        ({"prompt_pool_size": 8}, "Hungarian matching is one-to-one"),
    ],
)
def test_invalid_values_fail_at_construction(make_config, fields, message):
    with pytest.raises(ValueError, match=message):
        make_config(**fields)


@pytest.mark.parametrize(
    "fields", [{"token_matching": "greedy"}, {"vtr_loss": "l1"}, {"bidirectional_span": "all"},
               {"croc_preset": "mine"}]
)
def test_unknown_choices_are_rejected(make_config, fields):
    with pytest.raises(StrictDataclassFieldValidationError):
        make_config(**fields)


def test_nearest_allows_a_pool_smaller_than_the_masked_set(make_config):
    config = make_config(token_matching="nearest", prompt_pool_size=1)
    assert config.prompt_pool_size == 1
