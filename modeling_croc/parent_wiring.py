"""How a Croc class is wired into transformers as its parent family's class is: the parent's signatures on the Croc
methods that replace the parent's, the Auto classes the parent is registered with, and the parent's checkpoint
renames. The stage-1.5 behaviour itself is `stage15.py`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.models.auto import modeling_auto


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


def register_croc_checkpoint_renames(croc_class: type, parent_class: type) -> None:
    """Give `croc_class` the checkpoint renames transformers keeps for `parent_class` (looked up as transformers
    does: by class name, then by model type). They are keyed by class name and not extended to subclasses defined
    outside the library: without this, loading a parent (or saved Croc) folder would leave weights such as
    `lm_head` randomly initialised. Each family's modelling file calls it, so `trust_remote_code` loads of a saved
    folder register them too."""
    renames = (get_checkpoint_conversion_mapping(parent_class.__name__)
               or get_checkpoint_conversion_mapping(parent_class.config_class.model_type))
    if renames:
        register_checkpoint_conversion_mapping(croc_class.__name__, renames, overwrite=True)


__all__ = ["croc_auto_classes_of", "forward_with_parent_signature", "parent_function",
           "register_croc_checkpoint_renames"]
