"""Built-in recipes. Importing this package registers them (one module per recipe)."""

from . import croc1_5m, lcs558k, llava665k, llava802k, llava_json, synthetic  # noqa: F401
