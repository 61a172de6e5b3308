"""The Croc CPU demo: `python -m demo` (see `demo/__main__.py` and the README's "Demo" section)."""
