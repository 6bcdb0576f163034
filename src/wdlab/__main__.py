"""``python -m wdlab``: the command line, as the ``wdlab`` script (and ``python -m wdlab.cli``)."""

from wdlab.cli import entry

entry()
