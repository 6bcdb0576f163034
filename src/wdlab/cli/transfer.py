"""``wdlab transfer``: carry a tuned weight decay to a new lr, data size or batch size."""

from __future__ import annotations

COMMANDS: list = []
