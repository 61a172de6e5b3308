"""Shared fixtures: tiny Croc/Llava models built in code, the offline SentencePiece tokenizer, and the guard that
turns a deprecation transformers logs into a test failure."""

import atexit
import logging
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# `datasets`' cache (where runs keep the Arrow files of the JSON rows they read, `data_recipes.row_cache`) is this
# session's own, never the user's: set before `datasets` is imported, inherited by the runs tests launch.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="croc-tests-datasets-")
atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)

import modeling_croc  # noqa: E402,F401  (registers the Auto classes)
from croc_testing.tiny import llama_sentencepiece_tokenizer, tiny_croc_config  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The tests of files marked `slow` first (a stable sort: each file's own order stays). With the Makefile's
    `--dist loadfile --no-loadscope-reorder`, the two workers start on them and the many short files fill the end of
    the run; in xdist's default order (the files with the most tests first) a slow file of few tests came last and
    one worker ran it alone while the other idled."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def make_config():
    """Factory for tiny Croc configs (vocab 128, 16 visual tokens per 56-px image) with eager attention."""

    def factory(**fields):
        fields.setdefault("attn_implementation", "eager")
        return tiny_croc_config(**fields)

    return factory


@pytest.fixture(scope="session")
def sp_tokenizer():
    return llama_sentencepiece_tokenizer()


class _DeprecationRecords(logging.Handler):
    """Keeps the deprecation messages transformers logs (it warns about renamed arguments and fields through its
    logger, not only through `warnings`, so pytest's `filterwarnings` alone would miss them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecated" in message.lower():
            self.messages.append(f"{record.name}: {message}")


@pytest.fixture(autouse=True)
def no_transformers_deprecation_logged():
    """Fail the test during which transformers logs a deprecation: the next upstream rename shows up here, a release
    before it breaks. (The `warnings` side is `filterwarnings` in setup.cfg.)"""
    records = _DeprecationRecords()
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(records)
    try:
        yield
    finally:
        library_logger.removeHandler(records)
    if records.messages:
        pytest.fail("transformers logged a deprecation:\n" + "\n".join(records.messages), pytrace=False)


@pytest.fixture(autouse=True)
def root_logging_restored():
    """`python -m trainer.train` configures logging the way a command does (`logging.basicConfig(force=True)`,
    writing to the stderr of that moment). A test that runs it while pytest captures stderr would leave a handler
    writing to a closed capture: the root logger's handlers and level go back to what they were after every test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
