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

from modeling_croc.constants import IMAGE_TOKEN

from .catalog import check_licence_id
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
        return self.fn(Path(data_root), seed=seed, **self.check_params(params))

    def check_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check the parameters a build passes before any source is read (a bad one otherwise stopped the build after
        minutes of reading, or was trained on), and return them with `~` in folder and file values expanded. Raises
        `ValueError`, one line. Calling it again on its result changes nothing."""
        params = dict(params or {})
        _check_counts(self.name, params)
        if "instruction" in params:
            check_instruction(params["instruction"])
        _check_image_dirs(params.get("image_dirs"))
        if "licence" in params:
            check_licence_id(params["licence"])
        return _expand_paths(params)


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


def check_instruction(instruction: Any) -> None:
    """Refuse a caption instruction that is not null, `none`, a non-empty string or a non-empty list of them: a list
    given with YAML's quoting wrong (`[What is it?, ...]` read as one string, `[a: b]` as a mapping) was written into
    every prompt as its text or repr, and `42` stopped the build with a traceback."""
    if instruction is None or instruction == "none":
        return
    pool = instruction if isinstance(instruction, list) else [instruction]
    if not pool or not all(isinstance(item, str) and item.strip() for item in pool):
        raise ValueError(f"instruction must be a non-empty text, a non-empty list of non-empty texts, or null/none; got "
                         f"{instruction!r} (on the command line quote list items that hold `?`, `: ` or `#`: "
                         "--set 'instruction=[\"What is in the image?\", Describe it.]')")
    marked = [item for item in pool if IMAGE_TOKEN in item]
    if marked:
        # The recipe puts the marker before the instruction itself: a second one rejected every caption row as
        # too_many_image_markers.
        raise ValueError(f"instruction {marked[0]!r} holds {IMAGE_TOKEN}: the recipe adds the image marker before the "
                         f"instruction itself; give the text without {IMAGE_TOKEN}")


def _check_image_dirs(image_dirs: Any) -> None:
    """Refuse an absolute `image_dirs.NAME`: it prefixes the rows' image paths, which must stay under the data root
    (the image root), so every row of that source was rejected as image_outside_root."""
    if not isinstance(image_dirs, Mapping):
        return
    for name, folder in image_dirs.items():
        if isinstance(folder, str) and (Path(folder).is_absolute() or folder.startswith("~")):
            raise ValueError(f"image_dirs.{name}={folder}: must be a folder relative to --data-root (the image paths "
                             "of a build are relative to it); move or link the images under the data root")


# Parameters naming a file or folder on this machine (`paths` one per source): `~` is the home folder there, as in
# every folder option (a quoted `~/x` was recorded and read as ROOT/~/x).
_PATH_PARAMS = ("image_root", "annotation")


def _expand_paths(params: dict[str, Any]) -> dict[str, Any]:
    def expand(value: Any) -> Any:
        return str(Path(value).expanduser()) if isinstance(value, str) and value.startswith("~") else value

    for key in _PATH_PARAMS:
        # With `hub`, llava_json's annotation is a file in the repo, not on this machine.
        if key in params and not (key == "annotation" and params.get("hub")):
            params[key] = expand(params[key])
    if isinstance(params.get("paths"), Mapping):
        params["paths"] = {name: expand(value) for name, value in params["paths"].items()}
    return params


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
