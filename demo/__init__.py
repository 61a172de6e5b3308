"""The Croc CPU demo: `python -m demo` (see `demo/__main__.py` and docs/DEMO.md)."""
