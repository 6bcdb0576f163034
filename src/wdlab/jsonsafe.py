"""JSON for results: NaN and infinities become null (JSON has neither), keys become strings;
and reading a JSON file back with one line naming the file for anything wrong with it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps`` writes as strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (strict: ``allow_nan=False``)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``: a one-line ``ValueError`` naming the file when it is not
    UTF-8, not JSON, or nested too deeply to read (a hand-made or damaged file)."""
    p = Path(path)
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{p} is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{p}: arrays or objects nested too deeply to read") from None
