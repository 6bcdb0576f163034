"""What a search did: :class:`SearchResult`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


@dataclass
class SearchResult:
    """What :func:`optimize` did.

    It holds the study (an ordinary Optuna study), the trials it ran, the metric told
    (``val_acc``…) and its direction, the batches trained, the wall time; ``scope`` names
    the trials in its table ("this search", or "the study" read back by ``load_search``)."""

    study: Any
    trials: list[FrozenTrial]
    metric: str
    direction: str
    batches: int = 0
    seconds: float = 0.0
    engine: str = ""
    scope: str = "this search"

    @property
    def best_trial(self) -> FrozenTrial | None:
        """The study's best complete trial (of every search in it), or None."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return self.study.best_trial if done else None

    @property
    def best_params(self) -> dict[str, Any] | None:
        """The best trial's parameters (``study.best_params``: of every search), or None."""
        best = self.best_trial
        return None if best is None else dict(best.params)

    @property
    def best_value(self) -> float | None:
        """The best trial's value (``study.best_value``: of every search), or None."""
        best = self.best_trial
        return None if best is None else best.value

    def counts(self) -> dict[str, int]:
        """This search's trials per state (``complete``, ``pruned``, ``fail``)."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
        return out

    def importance(self) -> dict[str, float]:
        """Optuna's parameter importance over the study's complete trials (empty with fewer
        than two, or where Optuna cannot compute it)."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < 2:
            return {}
        try:
            return dict(optuna.importance.get_param_importances(self.study))
        except (ValueError, RuntimeError):
            return {}

    def importance_line(self) -> str:
        """``importance: lr 0.90, wd 0.07``, or "" where :meth:`importance` has none."""
        shares = self.importance()
        return (
            "importance: " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()) if shares else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the study, the metric, this search's trials and the best."""
        best = self.best_trial
        return {
            "study": self.study.study_name,
            "metric": self.metric,
            "direction": self.direction,
            "counts": self.counts(),
            "batches": self.batches,
            "seconds": self.seconds,
            "engine": self.engine,
            "best": _trial_dict(best) if best is not None else None,
            "importance": self.importance(),
            "trials": [_trial_dict(t) for t in self.trials],
        }

    def table(self, top: int = 10) -> str:
        """The ``top`` trials of the study by value, one line each, and the counts."""
        done = [t for t in self.study.get_trials(deepcopy=False) if t.value is not None]
        done = [t for t in done if t.state == TrialState.COMPLETE]
        done.sort(key=lambda t: t.value, reverse=self.direction == "maximize")
        test = f"test_{self.metric.removeprefix('val_')}"
        lines = [f"{'trial':>6}  {self.metric:>10}  {test:>10}  params"]
        for t in done[:top]:
            params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            lines.append(
                f"{t.number:>6}  {t.value:>10.4f}  {t.user_attrs.get(test, math.nan):>10.4f}  "
                f"{params}"
            )
        n = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        batches = f" in {self.batches} batch{'es' * (self.batches != 1)}" if self.batches else ""
        lines.append(f"\n{self.scope}: {_trials(len(self.trials))} ({n}){batches}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        best = self.best_trial
        tail = "no complete trial"
        if best is not None:
            params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            tail = f"best {self.metric} {best.value:.4g} (trial {best.number}"
            tail += f": {params})" if params else ")"
        n = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        done = _trials(len(self.trials)) + (f" ({n})" if n else "")
        return f"SearchResult({self.study.study_name!r}: {done}; {tail})"

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The study's best trials and this search's counts, for notebooks."""
        return f"<pre>{escape(repr(self))}\n\n{escape(self.table())}</pre>"


def _trials(n: int) -> str:
    return f"{n} trial{'s' if n != 1 else ''}"


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _trial_dict(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value,
        "params": dict(t.params),
        "user_attrs": dict(t.user_attrs),
        "last_step": t.last_step,
    }
