"""`python -m data_recipes` entry point."""

import sys

from .cli import main

sys.exit(main())
