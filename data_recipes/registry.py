"""The recipe registry: `@register_recipe("name")` on a function returning a :class:`RecipeResult`.

A recipe function's signature is its interface: `data_root` first, then `seed`, then keyword-only
parameters with defaults, which the CLI fills from `--set key=value`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .parts import RecipeResult
from .sampling import check_count

RecipeFn = Callable[..., RecipeResult]


@dataclass(frozen=True)
class Recipe:
    """A registered recipe."""

    name: str
    fn: RecipeFn

    @property
    def summary(self) -> str:
        """The first line of the recipe's docstring."""
        lines = self.doc.splitlines()
        return lines[0] if lines else ""

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""

    def parameters(self) -> dict[str, Any]:
        """The tunable parameters (everything after `data_root` and `seed`) and their defaults."""
        params = inspect.signature(self.fn).parameters
        return {n: p.default for n, p in params.items() if n not in ("data_root", "seed")}

    def __call__(self, data_root: str | Path, *, seed: int, **params: Any) -> RecipeResult:
        unknown = set(params) - set(self.parameters())
        if unknown:
            known = ", ".join(self.parameters()) or "(none)"
            raise TypeError(f"recipe {self.name!r} has no parameter(s) {sorted(unknown)}; it takes: {known}")
        _check_counts(self.name, params)
        return self.fn(Path(data_root), seed=seed, **params)


def _check_counts(name: str, params: dict[str, Any]) -> None:
    """Check the row counts (`count`, and `counts.NAME` of the mixtures) before the recipe reads its sources, which
    takes minutes at full size: a bad one otherwise stopped the build only once its source had been read."""
    if "count" in params:
        check_count(params["count"], name)
    counts = params.get("counts")
    if not isinstance(counts, Mapping):  # None, or one value for all: `parts.merge_overrides` refuses that
        return
    for source, count in counts.items():
        check_count(count, f"{name}: counts.{source}")


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str) -> Callable[[RecipeFn], RecipeFn]:
    """Register a recipe function under `name` (the name used by `python -m data_recipes build NAME`)."""

    def decorator(fn: RecipeFn) -> RecipeFn:
        if name in RECIPES and RECIPES[name].fn is not fn:
            raise ValueError(f"recipe {name!r} is already registered by {RECIPES[name].fn.__module__}")
        RECIPES[name] = Recipe(name, fn)
        return fn

    return decorator


def get_recipe(name: str) -> Recipe:
    """Look up a recipe by name, with the list of known names in the error."""
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(list_recipes())}") from None


def list_recipes() -> list[str]:
    """Names of the registered recipes, sorted."""
    return sorted(RECIPES)
