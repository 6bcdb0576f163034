"""What the command line needs from the registries and the config schema to build its parser.

Building the parser must not import torch (``wdlab --help``, ``--version``, ``transfer`` and every
usage error answer in well under a second), but the flags, their choices, help and defaults come
from modules that do (the config schema, model kinds, rule presets, executors). So those facts
are kept in ``facts.json`` beside this module, written by :func:`collect`, which asks the
registries themselves; ``tests/test_cli.py`` fails when the file and the registries disagree.
After adding a config key, a mode, a source or an executor option, write it again::

    python -m wdlab.cli.facts
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FACTS_FILE = Path(__file__).with_name("facts.json")
#: The types an executor option's flag may have (anything else is read as text and checked by
#: the executor itself).
OPTION_TYPES = {"str": str, "int": int, "float": float}


def collect() -> dict[str, Any]:
    """The facts, asked of the registries (this imports torch)."""
    from wdlab.config import MAX_CONFIGS, SECTIONS, SWEEP_GRID, section_keys
    from wdlab.devices import DEFAULT_MAX_MEMORY_MB
    from wdlab.executors import EXECUTORS
    from wdlab.models import ACTIVATIONS, MODEL_KINDS
    from wdlab.timescale import transfer_modes

    keys = []
    for section in SECTIONS:
        for f, k in section_keys(section):
            if k.flag:
                keys.append(
                    {
                        "key": f"{section}.{f.name}",
                        "flag": k.flag,
                        "help": k.help,
                        "cli": k.cli,
                        "choices": list(k.choices) if k.choices else None,
                        "default": f.default_factory(),
                    }
                )
    executors = {
        name: [
            {
                "name": o.name,
                "flag": o.cli_flag,
                "type": o.type.__name__ if o.type in OPTION_TYPES.values() else "str",
                "help": o.help,
            }
            for o in e.options
        ]
        for name, e in EXECUTORS.items()
    }
    return {
        "experiment": keys,
        "sweep_grid": SWEEP_GRID,
        "max_configs": MAX_CONFIGS,
        "max_memory_mb": DEFAULT_MAX_MEMORY_MB,
        "model_kinds": [k for k in MODEL_KINDS if k != "custom"],
        "activations": list(ACTIVATIONS),
        "executors": executors,
        "transfer_modes": transfer_modes(),
    }


def dumps(facts: dict[str, Any]) -> str:
    """The file's text: stable, readable JSON."""
    return json.dumps(facts, indent=1, ensure_ascii=False) + "\n"


@cache
def load() -> dict[str, Any]:
    """The facts as written in ``facts.json`` (no torch)."""
    return json.loads(FACTS_FILE.read_text(encoding="utf-8"))


def flags() -> dict[str, str]:
    """Each config key's flag, by key (``train.lr``: ``--lr``), for the keys that have one."""
    return {k["key"]: k["flag"] for k in load()["experiment"] if k.get("flag")}


def key(dotted: str) -> dict[str, Any]:
    """The facts of config key ``section.name``."""
    for k in load()["experiment"]:
        if k["key"] == dotted:
            return k
    raise KeyError(dotted)


def write() -> Path:
    """Write ``facts.json`` from the registries."""
    FACTS_FILE.write_text(dumps(collect()), encoding="utf-8")
    return FACTS_FILE


if __name__ == "__main__":
    print(f"wrote {write()}")
