"""Built-in recipes. Importing this package registers them (one module per recipe)."""

from . import croc1_5m, lcs558k, llava665k, llava802k, llava_json, recap_cc3m, synthetic  # noqa: F401
