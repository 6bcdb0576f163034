"""Reading results back: a study folder (study.db) or a demo/run folder (results.json), plus the
checks ``wdlab verify --out`` left there; and remaking a report from them."""

from __future__ import annotations

from pathlib import Path

from wdlab.jsonsafe import read_json
from wdlab.pipelines.results import DemoResult, SweepResult
from wdlab.pipelines.study import load_study
from wdlab.records import SCHEMA, SCHEMA_VERSION, Check, Result
from wdlab.report.html import write_report


def load_result(path: str | Path) -> Result:
    """The result value stored in a folder.

    It is read from a sweep's study.db, or a demo's or run's results.json (any schema version
    this wdlab reads)."""
    p = Path(path)
    if p.is_file():  # (it said "no results.json and no study.db" of a study.db itself)
        raise ValueError(f"nothing to report in {p} (a file, not a folder): give its folder")
    for name in ("study.db", "results.json"):
        if (p / name).exists() and not (p / name).is_file():  # a FIFO would block the read
            raise ValueError(
                f"{p / name} is not a regular file: wdlab reads only the files it wrote"
            )
    if (p / "study.db").exists():
        result: Result = load_study(p)
    else:
        results = p / "results.json"
        if not results.exists():
            alone = (
                " (verify.json shows in the report of a run or study there)"
                * (p / "verify.json").exists()
            )
            raise ValueError(f"nothing to report in {p}: no results.json and no study.db{alone}")
        base = _results_document(results, read_json(results))
        cls = DemoResult if base.kind == "demo" else SweepResult
        result = cls(**{k: v for k, v in vars(base).items()})
        if not result.name:
            result.name = p.name
    verify = p / "verify.json"
    if verify.exists():  # `wdlab verify --out FOLDER` wrote the oracle checks here
        try:
            for c in read_json(verify).get("checks", []):
                result.checks[c["name"]] = Check.from_dict(c)
        except (TypeError, KeyError, AttributeError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise ValueError(f"{verify} is not a wdlab checks document ({why})") from None
    return result


def _results_document(path: Path, doc: object) -> Result:
    """The result in a results.json, or one line naming the file and what is wrong with it."""
    if isinstance(doc, dict) and doc.get("schema") != SCHEMA and "runs" not in doc:
        raise ValueError(f"{path} is not a wdlab results document (no runs, no wdlab schema)")
    if isinstance(doc, dict) and doc.get("version", 1) in range(2, SCHEMA_VERSION + 1):
        why = _damage(doc)
        if why:  # (a selection of null was reported as "no weight decay has a finite score")
            raise ValueError(f"{path} is damaged: {why}; run the command again to rewrite it")
    try:
        return Result.from_dict(doc)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path} is not a wdlab results document ({why})") from None


_NUMBERS = ("lr", "weight_decay", "val", "test_mean", "test_std", "test_at_zero")


def _damage(doc: dict) -> str | None:
    """What in a results document of this schema is not as wdlab writes it: its runs (a list
    of objects, curves of their epochs' lengths, final numbers) and, for a run, its
    selection (a list, the numbers numbers); None where nothing is."""
    runs, selection = doc.get("runs"), doc.get("selection")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        return "runs is not a list of runs"
    if doc.get("kind", "run") != "demo" and runs and not isinstance(selection, list):
        return (
            f"selection is {'null' if selection is None else type(selection).__name__}, not a list"
        )
    for i, row in enumerate(selection or []):
        bad = [k for k in _NUMBERS if not _number(row.get(k) if isinstance(row, dict) else 0)]
        if not isinstance(row, dict) or bad:
            return f"selection[{i}].{bad[0] if bad else ''} is not a number"
    for i, run in enumerate(runs):
        curves = run.get("curves") or {}
        sizes = {len(curves.get(k) or []) for k in ("epoch", "eval_epoch")}
        odd = [k for k, v in curves.items() if not isinstance(v, list) or len(v) not in sizes]
        wrong = [k for k, v in (run.get("final") or {}).items() if not _number(v)]
        if odd or wrong:
            return f"runs[{i}]: " + (f"curve {odd[0]} is not one value per epoch" if odd else
                                     f"final {wrong[0]} is not a number")  # fmt: skip
    return None


def _number(v: object) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def build_report(path: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html`` and its PNGs for the results in ``path`` into ``out`` (default:
    ``path``), from the stored results alone."""
    return write_report(load_result(path), out if out is not None else path)
