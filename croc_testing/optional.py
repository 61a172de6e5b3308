"""Skip markers for the tests that need what only the `dev` extra, the no-deps packages or an installed project
provide. The `test` extra alone (the GPU check's wheelhouse, put on PYTHONPATH with the checkout) lacks them; the
lock's environment has them all, and `tests/test_packaging.py` checks that it is the lock's."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_deepspeed = pytest.mark.skipif(_missing("deepspeed"), reason="DeepSpeed is not installed (`deepspeed` extra)")
needs_lmms_eval = pytest.mark.skipif(_missing("lmms_eval"),
                                     reason="lmms-eval is not installed (requirements/no-deps.txt)")
needs_installed_project = pytest.mark.skipif(
    not _installed("croc-transformers"),
    reason="croc-transformers is not installed (a checkout on PYTHONPATH, as gpu_check.sh's wheelhouse runs it)")


def image_processor_backend(name: str) -> str:
    """The class transformers loads for image processor `name` (e.g. `Gemma3ImageProcessor`): its PIL backend
    (`...Pil`) without torchvision, the torchvision one where torchvision is importable (a CUDA image)."""
    return name + "Pil" if _missing("torchvision") else name
