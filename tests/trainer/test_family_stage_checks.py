"""What a run on a model family (Qwen2.5-VL here) is held to before anything loads: stage 1 is refused on an aligned
family checkpoint, a template other than the family's is warned about, an `image_aspect_ratio` its processor does not
apply is refused when named on the command line and passed over with a log line when a shared YAML sets it, and a
YAML's `hub_datasets` stay off the card of a run that trains on other data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from trainer_helpers import CONFIGS

from croc_testing.families import save_tiny_qwen2_5_vl
from modeling_croc.families import FAMILIES
from trainer.cli import ConfigError
from trainer.resolve import STAGE1_FAMILIES, resolve_config


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen2_5_vl"))


def _argv(config, tmp_path, model, data, *overrides):
    return [str(config), f"--output_dir={tmp_path / 'out'}", f"--model.name_or_path={model}", f"--data.path={data}",
            *overrides]


def _yaml_copy(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of cpu_tiny/<name> with `changes` (a `data` mapping replaces the section's keys it names)."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_stage1_on_an_aligned_family_is_refused(qwen_dir, data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^stage 1: a qwen2_5_vl checkpoint is already aligned: start at stage 1\.5 "
                                          r"\(trainer/configs/qwen2_5_vl/stage1_5\.yaml\)$"):
        resolve_config(_argv(CONFIGS / "stage1.yaml", tmp_path, qwen_dir, data_dir / "captions.json"))


def test_every_refused_family_has_the_stage_1_5_yaml_the_refusal_names():
    repo = CONFIGS.parents[2]
    for family in FAMILIES:
        if family.trainer_data and family.plain_model_type not in STAGE1_FAMILIES:
            assert (repo / "trainer/configs" / family.plain_model_type / "stage1_5.yaml").is_file(), family


def test_another_template_on_a_family_is_warned_about(qwen_dir, data_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.resolve"):
        resolved = resolve_config(_argv(CONFIGS / "stage2.yaml", tmp_path, qwen_dir, data_dir / "qa.json",
                                        "--template=vicuna_v1"))
    assert resolved.training.template == "vicuna_v1"
    assert "template: vicuna_v1 on a qwen2_5_vl model, whose own chat format is qwen2_vl" in caplog.text


def test_the_family_template_draws_no_warning(qwen_dir, data_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.resolve"):
        resolved = resolve_config(_argv(CONFIGS / "stage2.yaml", tmp_path, qwen_dir, data_dir / "qa.json"))
    assert resolved.training.template == "qwen2_vl" and "template:" not in caplog.text


def test_image_aspect_ratio_named_for_a_family_is_refused(qwen_dir, data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^image_aspect_ratio=pad: qwen2_5_vl's processor prepares images its own "
                                          r"way and does not apply it; drop image_aspect_ratio for this model$"):
        resolve_config(_argv(CONFIGS / "stage2.yaml", tmp_path, qwen_dir, data_dir / "qa.json",
                             "--image_aspect_ratio=pad"))


def test_image_aspect_ratio_of_a_shared_yaml_is_passed_over_for_a_family(qwen_dir, data_dir, tmp_path, caplog):
    """trainer/configs/stage2.yaml sets `image_aspect_ratio: pad` for LLaVA-1.5; a family run of it still works."""
    config = _yaml_copy(tmp_path, "stage2.yaml", image_aspect_ratio="pad")
    with caplog.at_level(logging.INFO, logger="trainer.resolve"):
        resolve_config(_argv(config, tmp_path, qwen_dir, data_dir / "qa.json"))
    assert "image_aspect_ratio: pad from the YAML is not applied: qwen2_5_vl's processor" in caplog.text


def test_image_aspect_ratio_still_applies_to_llava(stage1_dir, data_dir, tmp_path):
    resolved = resolve_config(_argv(CONFIGS / "stage2.yaml", tmp_path, stage1_dir, data_dir / "qa.json",
                                    "--image_aspect_ratio=square"))
    assert resolved.training.image_aspect_ratio == "square"


@pytest.mark.parametrize(("overrides", "kept"), [
    pytest.param(("--data.path={other}",), None, id="other data: dropped"),
    pytest.param(("--data.path={other}", "--hub_datasets=[someone/mine]"), ["someone/mine"],
                 id="other data with its own hub_datasets"),
    pytest.param(("--data.path={yaml}",), ["Lin-Chen/ShareGPT4V"], id="the YAML's own data"),
    pytest.param((), ["Lin-Chen/ShareGPT4V"], id="no data.path given"),
])
def test_yaml_hub_datasets_name_only_the_yaml_data(overrides, kept, qwen_dir, data_dir, tmp_path, caplog):
    config = _yaml_copy(tmp_path, "stage1_5_qwen2_5_vl.yaml", hub_datasets=["Lin-Chen/ShareGPT4V"],
                        data={"path": str(data_dir / "detailed.json")}, model={"name_or_path": str(qwen_dir)})
    argv = [str(config), f"--output_dir={tmp_path / 'out'}",
            *(item.format(other=data_dir / "qa.json", yaml=data_dir / "detailed.json") for item in overrides)]
    with caplog.at_level(logging.INFO, logger="trainer.resolve"):
        resolved = resolve_config(argv)
    assert resolved.training.hub_datasets == kept
    dropped = "hub_datasets ['Lin-Chen/ShareGPT4V'] left off the model card" in caplog.text
    assert dropped == (kept is None)


def test_every_family_yaml_header_shows_its_stage_2():
    """A family's stage-1.5 YAML (full scale and cpu_tiny) says how its stage 2 runs: the generic stage2.yaml from the
    stage-1.5 output, which picks the family's chat format."""
    repo = CONFIGS.parents[2]
    paths = [path for family in FAMILIES if family.trainer_data and family.plain_model_type not in STAGE1_FAMILIES
             for path in (repo / "trainer/configs" / family.plain_model_type / "stage1_5.yaml",
                          CONFIGS / f"stage1_5_{family.plain_model_type}.yaml") if path.is_file()]
    problems = []
    for path in paths:
        text = path.read_text()
        header = " ".join(line.lstrip("# ") for line in text.split('stage: "1.5"')[0].splitlines())
        stage2 = "trainer/configs/cpu_tiny/stage2.yaml" if path.parent == CONFIGS else "trainer/configs/stage2.yaml"
        output_dir = yaml.safe_load(text)["output_dir"]
        if f"-m trainer.train {stage2} \\ --model.name_or_path={output_dir} " not in header:
            problems.append(str(path.relative_to(repo)))
    assert len(paths) > 20 and not problems, problems


def test_the_card_of_a_run_on_other_data_names_no_yaml_dataset(stage1_dir, data_dir, tmp_path):
    """The card a run writes: the YAML's `hub_datasets` (LLaVA-Instruct-150K) are not its datasets when the run trains
    on a JSON of its own."""
    from huggingface_hub import ModelCard

    from trainer import train as train_module

    config = _yaml_copy(tmp_path, "stage2.yaml", hub_datasets=["liuhaotian/LLaVA-Instruct-150K"])
    out = tmp_path / "out"
    train_module.main([str(config), f"--output_dir={out}", "--disable_tqdm=true", f"--model.name_or_path={stage1_dir}",
                       f"--data.path={data_dir / 'qa.json'}", "--max_steps=1"])
    card = ModelCard.load(out / "README.md")
    assert not card.data.datasets and "- Datasets: not recorded" in card.text
