"""Optional dependencies, imported only where they are used: a missing one is one clear line
naming the extra that brings it (``pip install 'wdlab[data]'``)."""

from __future__ import annotations

import importlib
from types import ModuleType

#: Which extra brings each optional module.
EXTRA_OF = {
    "sklearn": "data",
    "pandas": "data",
    "mnist1d": "data",
    "pyarrow": "parquet",
    "ray": "ray",
    "lightning": "lightning",
    "optuna": "optuna",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``sklearn.datasets``), or raise a ``ValueError`` saying that
    ``what`` needs the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = EXTRA_OF.get(top, top)
        raise ValueError(f"{what} needs {top}: pip install 'wdlab[{extra}]'") from None
