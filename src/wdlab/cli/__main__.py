"""``python -m wdlab.cli``."""

from wdlab.cli import entry

entry()
