"""``wdlab audit``: a lint for weight decay in code you already have."""

from __future__ import annotations

COMMANDS: list = []
