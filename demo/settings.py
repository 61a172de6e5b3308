"""What a demo run is made of: data size, model size, and (for `--quick`) the step budget that replaces the YAMLs'.

The full run takes its step counts, batch sizes and learning rates from `trainer/configs/demo/*.yaml`; only the paths
and the seed are passed on top, as a user would. `--quick` (the test suite's run) also shrinks the data, the model and
the steps through the same `--key=value` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model_spec import ModelSpec
from .tower import TowerPretraining


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run.

    Attributes:
        name: "full" or "quick", recorded in the report.
        num_images: synthetic scenes drawn; `test_fraction` of them are held out (their questions are the test set).
        image_size: pixels of a rendered scene (the model's input size, so nothing is resized).
        model: the stage-0 model.
        max_steps: YAML name -> `max_steps` override (None: the YAML's own values).
        extra_overrides: further `--key=value` overrides for every stage.
        eval_batch_size: questions per batched `generate` call.
        max_eval_questions: evaluate only the first N held-out questions (None: all).
        max_new_tokens: longest generated answer (answers are one to three words).
        num_samples: test images in the sample-generation figure.
    """

    name: str = "full"
    num_images: int = 2400
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    image_size: int = 84
    model: ModelSpec = field(default_factory=ModelSpec)
    max_steps: dict[str, int] | None = None
    extra_overrides: tuple[str, ...] = ()
    eval_batch_size: int = 64
    max_eval_questions: int | None = None
    max_new_tokens: int = 8
    num_samples: int = 6


FULL = DemoSettings()

# A few steps of a 2-layer, 32-wide model on 24 scenes: every code path of the full run, in seconds. The step
# counts keep the arms equal (stage1 + stage1_5 == baseline_stage1).
QUICK = DemoSettings(
    name="quick",
    num_images=24,
    test_fraction=0.25,
    val_fraction=0.25,
    image_size=56,
    model=ModelSpec(hidden_size=32, num_layers=2, num_heads=4, vision_hidden_size=24, vision_layers=2, image_size=56,
                    patch_size=28, vocab_size=400, prompt_pool_size=8,
                    tower=TowerPretraining(steps=3, batch_size=8)),
    max_steps={"stage1": 2, "stage1_5": 2, "stage2": 3, "baseline_stage1": 4, "baseline_stage2": 3,
               "stage1_5_nearest": 2, "stage1_5_causal": 2, "stage1_5_brief": 2, "stage1_5_dcg": 2,
               "stage1_5_vtr_cosine": 2, "stage1_5_vtr_last_layer": 2, "stage1_5_vtr_linear_l2": 2,
               "stage1_5_vtr_literal": 2, "stage1_5_vtr_bert_l2": 2},
    extra_overrides=("--logging_steps=1", "--global_batch_size=4", "--per_device_train_batch_size=4",
                     "--pool_calibration_images=4"),
    eval_batch_size=16,
    max_eval_questions=24,
    max_new_tokens=4,
    num_samples=4,
)

PRESETS: dict[str, DemoSettings] = {"full": FULL, "quick": QUICK}
