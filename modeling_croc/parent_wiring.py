"""How a Croc class is wired into transformers as its parent family's class is: the parent's signatures on the Croc
methods that replace the parent's, the Auto classes the parent is registered with, and the parent's checkpoint
renames. The stage-1.5 behaviour itself is `stage15.py`."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable

from transformers import GenerationMixin
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.core_model_loading import WeightRenaming
from transformers.models.auto import modeling_auto

from .constants import PROMPT_POOL_MODULE, PROMPT_POOL_PREFIX


def parent_function(cls: type, name: str, own: tuple[type, ...]) -> Callable | None:
    """The first definition of `name` in `cls`'s MRO outside the classes `own` (and their subclasses): the parent
    family's (None if the class defines its own or no parent has one)."""
    if name in vars(cls):
        return None
    for base in cls.__mro__[1:]:
        if name in vars(base) and not issubclass(base, own):
            return vars(base)[name]
    return None


def forward_with_parent_signature(croc_forward: Callable, parent_forward: Callable) -> Callable:
    """`croc_forward` (which takes everything but `self` by keyword) under the parent class's forward signature
    plus the Croc arguments: positional arguments are read in the parent's order, and `inspect.signature` shows the
    parent's parameters, which `generate` (`_validate_model_kwargs`) and the Trainer (its signature columns) read
    to decide which inputs a model takes (`image_sizes`, `image_grid_thw`, ...)."""
    parent = inspect.signature(parent_forward)
    parameters = [parameter for parameter in parent.parameters.values()
                  if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]
    names = {parameter.name for parameter in parameters}
    croc_only = [parameter.replace(kind=parameter.KEYWORD_ONLY)
                 for parameter in inspect.signature(croc_forward).parameters.values()
                 if parameter.name not in names and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
                 and parameter.default is not parameter.empty]
    positional = tuple(parameter.name for parameter in parameters[1:] if parameter.kind is parameter.POSITIONAL_OR_KEYWORD)

    @functools.wraps(croc_forward)
    def forward(self, *args, **kwargs):
        if len(args) > len(positional):
            raise TypeError(f"forward() takes {len(positional)} positional arguments but {len(args)} were given")
        if twice := set(positional[:len(args)]) & set(kwargs):
            raise TypeError(f"forward() got multiple values for {sorted(twice)}")
        kwargs.update(zip(positional, args))
        return croc_forward(self, **kwargs)

    forward.__signature__ = parent.replace(parameters=[
        *[parameter for parameter in parameters if parameter.kind is parameter.POSITIONAL_OR_KEYWORD],
        *[parameter for parameter in parameters if parameter.kind is parameter.KEYWORD_ONLY], *croc_only,
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
    return forward


def croc_auto_classes_of(parent_model_type: str, croc_for_parent: dict[str, str]) -> dict[str, str]:
    """Auto class name -> Croc class name, for every transformers Auto model class that maps `parent_model_type`
    to one of the parent classes named in `croc_for_parent` (parent class name -> the Croc class standing for it):
    a Croc family is registered wherever its parent is, in the installed transformers."""
    found = {}
    # The Auto classes live in modeling_auto; walking `dir(transformers)` would import every model of the library.
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and names.get(parent_model_type) in croc_for_parent:
            found[name] = croc_for_parent[names[parent_model_type]]
    return found


class LoadOnlyRenaming(WeightRenaming):
    """A checkpoint rename applied when a folder is loaded, never when one is saved: its reverse renames nothing, so
    a model saves under the names it would have without it (those transformers writes for the parent family)."""

    def reverse_transform(self) -> WeightRenaming:
        reverse = _NoRenaming(source_patterns=self._original_target_patterns,
                              target_patterns=self._original_source_patterns)
        reverse.scope_prefix, reverse.base_model_prefix = self.scope_prefix, self.base_model_prefix
        return reverse


class _NoRenaming(WeightRenaming):
    """The reverse of a `LoadOnlyRenaming`: leaves every key as it is."""

    def rename_source_key(self, source_key: str) -> tuple[str, None]:
        return source_key, None


def register_croc_checkpoint_renames(croc_class: type, parent_class: type,
                                     load_only: dict[str, str] | None = None) -> None:
    """Give `croc_class` the checkpoint renames transformers keeps for `parent_class` (looked up as transformers
    does: by class name, then by model type). They are keyed by class name and not extended to subclasses defined
    outside the library: without this, loading a parent (or saved Croc) folder would leave weights such as
    `lm_head` randomly initialised. Each family's modelling file calls it, so `trust_remote_code` loads of a saved
    folder register them too.

    A base model (no generation head) also gets `load_only` (source regex -> target, applied before the parent's)
    and the saved pool's rename: `AutoModel` on a saved generation folder reads `model.prompt_pool.weight`, which a
    parent rename that moves every other `model.X` under the language model (Qwen2-VL's, LLaVA-OneVision-1.5's)
    would otherwise capture, leaving the pool drawn afresh (it is never reported missing: stage-1 folders have
    none). Both apply only to a base model loaded on its own: inside a generation model the parent's renames have
    already moved the key, and saving never applies them."""
    renames = (get_checkpoint_conversion_mapping(parent_class.__name__)
               or get_checkpoint_conversion_mapping(parent_class.config_class.model_type))
    if not renames:
        return
    if not issubclass(croc_class, GenerationMixin):
        load_only = {**(load_only or {}), f"^{re.escape(PROMPT_POOL_PREFIX)}": f"{PROMPT_POOL_MODULE}."}
        renames = [LoadOnlyRenaming(source_patterns=source, target_patterns=target)
                   for source, target in load_only.items()] + renames
    register_checkpoint_conversion_mapping(croc_class.__name__, renames, overwrite=True)


__all__ = ["LoadOnlyRenaming", "croc_auto_classes_of", "forward_with_parent_signature", "parent_function",
           "register_croc_checkpoint_renames"]
