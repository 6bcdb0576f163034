"""Which files wdlab may replace in a folder it writes to (reports, exports, results).

Every file a command writes into a folder is recorded in that folder's
``.wdlab-files.json``: its name, a hash of its bytes and what it was written for (its
*source*: ``study HASH`` for a sweep's study, ``run`` or ``demo``). A file already there may be
replaced only if wdlab wrote it for the same source and it is unchanged since; anything else —
a file of the user's, another study's export, a report edited by hand — is refused in one line
before anything is trained or written, naming the file; ``force`` replaces it anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from wdlab.store import DB_NAME, Store, StoreError
from wdlab.store.workers import alive

MANIFEST = ".wdlab-files.json"


def study_source(directory: str | Path, identity_hash: str | None = None) -> str:
    """The source of the files written for the study in ``directory``: ``study HASH``, the
    study's config hash read (read-only) from its store. Where there is no study to read yet
    — no store, or one another process is creating at this moment — ``identity_hash`` (the
    hash the sweep about to run will store); without it the store's error is raised."""
    d = Path(directory)
    try:
        with Store(d, readonly=True) as store:
            info = store.study()
    except StoreError:
        if identity_hash is None:
            raise
        info = None
    if info is None:
        if identity_hash is None:
            raise StoreError(f"{d / DB_NAME} holds no study")
        return f"study {identity_hash}"
    return f"study {info['config_hash']}"


def check_outputs(
    folder: str | Path,
    names: Iterable[str],
    source: str,
    force: bool = False,
    how: str = "pass --force to replace it, or choose another --out",
    changed_ok: bool = False,
) -> None:
    """A one-line ``ValueError`` for the first of ``names`` in ``folder`` that wdlab may not
    replace (see the module docstring); nothing with ``force``. ``changed_ok``: a file wdlab
    wrote for ``source`` passes even if changed since (its reader says so)."""
    if force:
        return
    folder = Path(folder)
    written = _manifest(folder)
    present = [n for n in names if (folder / n).exists() or (folder / n).is_symlink()]
    if present and not written:
        check_record(folder, "files", how, present[0])
    for name in present:
        path = folder / name
        entry = written.get(name) or {}
        if not entry or not path.is_file() or path.is_symlink():
            why = "was not written by wdlab"
        elif entry.get("source") != source:
            why = f"was written by wdlab for {_what(str(entry.get('source')), source)}"
        elif not changed_ok and not entry.get("pending") and not _recorded(entry, _digest(path)):
            why = "was changed since wdlab wrote it"
        else:
            continue
        raise ValueError(f"{path} exists and {why}; {how}")


def check_record(folder: str | Path, what: str, how: str, name: str | None = None) -> None:
    """A one-line ``ValueError`` where ``folder``'s record cannot be read (damaged): the files
    there (``what``; ``name``, the one in the way) cannot be told apart from others', and
    writing would replace the record; ``how`` says what to do. A file where the folder goes
    is one line too (found only when writing there, after the training)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{folder} is a file, not a folder: the study keeps its {what} there; move it, "
            "or choose another --out"
        )
    if _damaged(folder):
        which = (
            f"{name} cannot be told apart from a file"
            if name
            else ("they cannot be told apart from files")
        )
        raise ValueError(
            f"{folder / MANIFEST}, wdlab's record of the {what} it wrote there, cannot be read "
            f"(damaged), so {which} of yours; {how}"
        )


def changed_since_written(folder: str | Path, name: str, data: bytes | None = None) -> bool:
    """Whether wdlab recorded writing ``name`` in ``folder`` and the file's bytes (``data``,
    where the caller has read them) are no longer the ones it recorded (the file was edited,
    damaged or replaced since)."""
    entry = _manifest(Path(folder)).get(name) or {}
    path = Path(folder) / name
    if not entry or not path.is_file():
        return False
    digest = _digest(path) if data is None else hashlib.sha256(data).hexdigest()
    return not _recorded(entry, digest)


def deleted_since_written(folder: str | Path) -> list[str]:
    """The files wdlab recorded writing in ``folder`` that are no longer there, by name."""
    return sorted(n for n in _manifest(Path(folder)) if not (Path(folder) / n).exists())


def _recorded(entry: Mapping[str, str], digest: str) -> bool:
    """Whether ``digest`` is a hash the record ``entry`` holds (the file's, or the one noted
    for the file about to replace it)."""
    return digest in {entry.get("sha256"), entry.get("next")} - {None}


def claim_outputs(folder: str | Path, names: Iterable[str], source: str) -> None:
    """Note that ``names`` are about to be written into ``folder`` for ``source`` (the folder
    made where it is not): until :func:`record_outputs` records them, a file of that name is
    ``source``'s, whole or not, so a process killed while writing them leaves files the next
    one for the same source may replace (call it once :func:`check_outputs` allowed them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = _manifest(folder)
    for name in names:
        entry = written.get(name) or {}
        kept = entry if entry.get("source") == source else {}
        written[name] = {**kept, "source": source, "pending": "writing"}
    _write_manifest(folder, written)


def record_outputs(
    folder: str | Path,
    paths: Iterable[str | Path],
    source: str,
    note: Mapping[str, str] | None = None,
) -> None:
    """Record ``paths`` (files just written into ``folder``) as written for ``source``, with
    ``note`` (more facts about each, e.g. the ``keep`` a weights file was written under).
    ``source``'s claims on names that are not there (figures a report had no data for) are
    dropped: a file of the user's by such a name is the user's again."""
    folder = Path(folder)
    written = _manifest(folder)
    for p in map(Path, paths):
        if p.parent.resolve() == folder.resolve() and p.is_file():
            written[p.name] = {**(note or {}), "source": source, "sha256": _digest(p)}
    for name, entry in list(written.items()):
        claimed = entry.get("pending") and entry.get("source") == source
        if claimed and not ((folder / name).exists() or (folder / name).is_symlink()):
            del written[name]
    _write_manifest(folder, written)


def expect_output(folder: str | Path, name: str, new: str | Path, source: str) -> None:
    """Note that file ``new`` is about to replace ``name`` in ``folder``: until ``name`` is
    recorded again, either file under that name is wdlab's, so a process killed between the
    rename and the record leaves a file the next one may use and replace (call it once
    :func:`check_outputs` allowed the write: another source's entry is then stale)."""
    folder = Path(folder)
    written = _manifest(folder)
    entry = written.get(name) or {}
    kept = entry if entry.get("source") == source else {}
    written[name] = {**kept, "source": source, "next": _digest(Path(new))}
    _write_manifest(folder, written)


def settle_output(folder: str | Path, name: str) -> None:
    """The file :func:`expect_output` noted has replaced ``name``: the hash it noted is now
    the record's (the file is not read again)."""
    folder = Path(folder)
    written = _manifest(folder)
    entry = dict(written.get(name) or {})
    entry["sha256"] = entry.pop("next")
    written[name] = entry
    _write_manifest(folder, written)


def _write_manifest(folder: Path, written: Mapping[str, Mapping[str, str]]) -> None:
    """Replace the record of ``folder`` with ``written`` (never half written); a failure (a
    full disk) removes the temporary and is one ``ValueError`` line naming the record."""
    tmp = folder / f"{MANIFEST}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(written, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / MANIFEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(_write_error(folder / MANIFEST, exc)) from None


def written_outputs(folder: str | Path) -> dict[str, dict[str, str]]:
    """What the record of ``folder`` says of each file wdlab wrote there (a copy)."""
    return _manifest(Path(folder))


def forget_outputs(folder: str | Path, names: Iterable[str]) -> None:
    """Drop ``names`` (files just deleted from ``folder``) from its record."""
    folder = Path(folder)
    written = _manifest(folder)
    gone = [n for n in names if n in written]
    if not gone:
        return
    for n in gone:
        del written[n]
    _write_manifest(folder, written)


def sweep_dead_writes(folder: str | Path, suffix: str = ".pt") -> None:
    """Remove the temporary files that writers killed mid-write left in ``folder``
    (``.<name><suffix>.<pid>.tmp`` of a file, ``.wdlab-files.json.<pid>.tmp`` of the record;
    their process gone): never a whole file, never another program's."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in [*folder.glob(f".*{suffix}.*.tmp"), *folder.glob(f"{MANIFEST}.*.tmp")]:
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not alive(int(pid)):
            path.unlink(missing_ok=True)


def _what(other: str, source: str) -> str:
    """What another source was, in words."""
    if other.startswith("study"):
        return "another study" if source.startswith("study") else "a study"
    return f"`wdlab {other}`"


def _manifest(folder: Path) -> dict[str, dict[str, str]]:
    """The record of ``folder`` (empty where there is none, or it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, RecursionError):
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if isinstance(v, dict)}
    return {}


def _damaged(folder: Path) -> bool:
    """Whether ``folder`` has a record that cannot be read as one."""
    path = folder / MANIFEST
    if not (path.exists() or path.is_symlink()):
        return False
    try:
        return not isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError, RecursionError):
        return True


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_error(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words: torch's first
    sentence, or, for its "Weights only load failed" paragraph (which suggests
    ``weights_only=False``: no advice for a file one did not write), the reason inside it."""
    text = str(exc).strip() or type(exc).__name__
    if not text.startswith("Weights only load failed"):
        first = text.splitlines()[0]
        return f"not a whole torch file ({_short(first)})"  # cut short: "negative seek value"
    for line in (ln.strip() for ln in text.splitlines()[1:]):
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        if line and not line.startswith(ADVICE):
            return f"not plain tensors and data ({_short(line.replace('GLOBAL ', ''))})"
    return "not plain tensors and data"


def save_to(tmp: Path, obj: object, named: Path, sync: bool = False) -> None:
    """``torch.save`` of ``obj`` into ``tmp`` (through a handle: the archive's inner name is not
    the temporary's), flushed to disk with ``sync``; a failure (a full disk) removes ``tmp`` and
    is one ``ValueError`` line naming ``named``, the file it was to become."""
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:  # torch's archive writer, out of space: RuntimeError
        tmp.unlink(missing_ok=True)
        raise ValueError(_write_error(named, exc)) from None


def _write_error(path: str | Path, exc: BaseException) -> str:
    """Why a file could not be written, in one line naming it: the system's reason, or (torch's
    archive writer says "unexpected pos" for a full disk) the space left where it goes."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot write {path}: {exc.strerror}"
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if free is not None and free < 2**20:
        return f"cannot write {path}: no space left on its device ({free:,} bytes free)"
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return f"cannot write {path}: {_short(text)}"


ADVICE = ("(1)", "(2)", "Please file", "Check the doc", "In PyTorch", "Re-running", "Do it only")


def _short(text: str) -> str:
    """The first sentence of ``text``, at most 160 characters (cut between words)."""
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 160 else first[:160].rsplit(" ", 1)[0] + "…"
