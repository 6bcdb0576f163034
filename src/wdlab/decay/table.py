"""Which parameters decay, tensor by tensor: :class:`DecayTable`, the readable table a rule
gives (:func:`wdlab.decay.rules.decay_table`), printable, JSON-able and shown in notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from wdlab.decay.attach import Decay
from wdlab.decay.group import decays

FROZEN = "frozen, not decayed (requires_grad=False)"


@dataclass
class DecayTable:
    """Which parameters decay: one row per parameter, printable and JSON-able."""

    rows: list[dict]
    rule: str
    normalized_note: str = ""

    @property
    def decayed(self) -> tuple[int, int]:
        """(tensors, elements) that decay."""
        rows = [r for r in self.rows if r["decays"]]
        return len(rows), sum(r["numel"] for r in rows)

    @property
    def kept(self) -> tuple[int, int]:
        """(tensors, elements) that do not decay."""
        rows = [r for r in self.rows if not r["decays"]]
        return len(rows), sum(r["numel"] for r in rows)

    def summary(self) -> str:
        """The nanoGPT-style line: how many tensors and parameters decay."""
        (dt, dn), (kt, kn) = self.decayed, self.kept
        frozen = sum(r["why"] == FROZEN for r in self.rows)
        of_which = f" ({frozen} frozen)" if frozen else ""
        return (
            f"decayed: {dt} tensor{'s' * (dt != 1)}, {dn:,} parameter{'s' * (dn != 1)}; not "
            f"decayed: {kt} tensor{'s' * (kt != 1)}{of_which}, "
            f"{kn:,} parameter{'s' * (kn != 1)} ({self.rule})"
        )

    def to_text(self, normalized: bool = False) -> str:
        """A fixed-width table of the rows and the summary line; with ``normalized``, a column
        saying which decaying tensors AdamC (mode ``corrected``) treats as normalized layers;
        a ``wd`` column when the rows carry their weight decay (:meth:`with_weight_decays`)."""
        w = max([len("parameter")] + [len(r["name"]) for r in self.rows])
        why_w = max([len("why")] + [len(r["why"]) for r in self.rows])
        has_wd = any("wd" in r for r in self.rows)
        head = f"{'parameter':<{w}}  {'shape':<14} {'count':>10}  decays  {'why':<{why_w}}"
        head += "  wd" + " " * 8 if has_wd else ""
        lines = [(head + ("  AdamC-normalized" if normalized else "")).rstrip()]
        for r in self.rows:
            shape = "×".join(map(str, r["shape"])) or "scalar"
            line = (
                f"{r['name']:<{w}}  {shape:<14} {r['numel']:>10,}  "
                f"{'yes' if r['decays'] else 'no':<6}  {r['why']:<{why_w}}"
            )
            if has_wd:
                wd = r.get("wd")
                line += f"  {'-' if wd is None else f'{wd:g}':<10}"
            if normalized:
                line += "  " + (("yes" if r.get("normalized") else "no") if r["decays"] else "-")
            lines.append(line.rstrip())
        lines.append(self.summary())
        if normalized and self.normalized_note:
            lines.append(self.normalized_note)
        return "\n".join(lines)

    def with_weight_decays(self, groups: list[dict], decay: Decay, step: int = 0) -> DecayTable:
        """This table with each row's weight decay at optimizer step ``step``, from
        :func:`param_groups`' groups (``None`` where the tensor does not decay)."""
        wd_of: dict[str, float | None] = {}
        for g in groups:
            for name in g.get("names", []):
                wd_of[name] = decay.wd_at(step, g) if decays(g) else None
        rows = [{**r, "wd": wd_of.get(r["name"])} for r in self.rows]
        return DecayTable(rows, self.rule, self.normalized_note)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"DecayTable({self.summary()})"

    def _repr_html_(self) -> str:
        """The table, for notebooks."""
        return f"<pre>{escape(self.to_text())}</pre>"

    def to_dict(self) -> dict:
        """JSON-ready form."""
        (dt, dn), (kt, kn) = self.decayed, self.kept
        return {
            "rule": self.rule,
            "parameters": self.rows,
            "decayed_tensors": dt,
            "decayed_parameters": dn,
            "kept_tensors": kt,
            "kept_parameters": kn,
            "normalized_note": self.normalized_note,
        }
