"""``python -m wdlab.cli``."""

from wdlab.cli import main

raise SystemExit(main())
