"""Croc's training mixtures as reproducible `datasets` recipes, plus the project's synthetic scenes.

    >>> from data_recipes import build_recipe, list_recipes
    >>> list_recipes()
    ['croc1.5m', 'lcs558k', 'llava665k', 'llava802k', 'llava_json', 'synthetic_scenes']
    >>> build_recipe("llava665k", "playground/data", "builds/llava665k", seed=42)  # doctest: +SKIP

Every recipe yields rows with :data:`ROW_FEATURES`, validated by :mod:`data_recipes.validation`, and
writes a build folder with the dataset, its card, a summary and the rejected rows.
"""

from modeling_croc.constants import IMAGE_TOKEN

from . import recipes  # noqa: F401  (registers the built-in recipes)
from .build import (
    DEFAULT_SEED,
    BuildResult,
    build_dropped,
    build_recipe,
    recorded_image_root,
    unfinished_build,
)
from .catalog import CATALOG, CROC_1_5M_COUNTS, SourceInfo
from .io import DataError
from .parts import RecipeResult, SourcePart
from .recipes.croc1_5m import DEFAULT_CAPTION_INSTRUCTION
from .recipes.llava802k import EXTRA_802K_COUNTS
from .registry import RECIPES, Recipe, get_recipe, list_recipes, register_recipe
from .schema import (
    PROBLEM_COLUMN,
    READ_FEATURES,
    ROW_FEATURES,
    load_llava_json,
    normalise_row,
    rows_to_dataset,
)
from .synthetic_scenes import SyntheticScenes, generate_synthetic_scenes
from .text_sources import TEXT_CONVERTERS, register_text_converter
from .validation import (
    NOTICES,
    REJECT_REASONS,
    RejectedRowsError,
    StrictValidationError,
    ValidationReport,
    exceeds_reject_budget,
    format_counts,
    kept_rows,
    rate_exceeds_reject_budget,
    rejected_rows,
    validate_dataset,
    write_rejects,
)

__all__ = [
    "BuildResult",
    "CATALOG",
    "DataError",
    "NOTICES",
    "PROBLEM_COLUMN",
    "READ_FEATURES",
    "RejectedRowsError",
    "ValidationReport",
    "exceeds_reject_budget",
    "rate_exceeds_reject_budget",
    "format_counts",
    "kept_rows",
    "rejected_rows",
    "write_rejects",
    "CROC_1_5M_COUNTS",
    "DEFAULT_CAPTION_INSTRUCTION",
    "DEFAULT_SEED",
    "EXTRA_802K_COUNTS",
    "IMAGE_TOKEN",
    "RECIPES",
    "REJECT_REASONS",
    "ROW_FEATURES",
    "Recipe",
    "RecipeResult",
    "SourceInfo",
    "SourcePart",
    "StrictValidationError",
    "SyntheticScenes",
    "TEXT_CONVERTERS",
    "build_dropped",
    "build_recipe",
    "generate_synthetic_scenes",
    "get_recipe",
    "list_recipes",
    "load_llava_json",
    "normalise_row",
    "recorded_image_root",
    "register_recipe",
    "register_text_converter",
    "rows_to_dataset",
    "unfinished_build",
    "validate_dataset",
]
