"""An SQLite store of retraining results, so interrupted sweeps resume and nothing is recomputed.

One row per retrain: ``setting`` (a hash of everything that determines the numbers: model
parameters and architecture, data, config, mode, parameter selection, dtype, ...) and ``item``
(which points were removed: ``"17"``, ``"3,8,11"``, ``"control"``, ``"seed=4"``) map to the
per-test-point losses after that retrain and the final gradient norm. Results under another
setting are never returned, so a changed setting always recomputes.

A file that is not an SQLite database, or one locked by another process for longer than the
store's ``timeout``, raises :class:`StoreError` naming the file and what to do.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._cache import cache_dir, stable_json

DEFAULT_NAME = "loo.sqlite"
_ADVICE = "pass store=None (keep no results) or store='<another file>.sqlite'"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    setting TEXT NOT NULL,
    item TEXT NOT NULL,
    losses BLOB NOT NULL,
    n_test INTEGER NOT NULL,
    grad_norm REAL,
    objective REAL,
    created REAL NOT NULL,
    PRIMARY KEY (setting, item)
);
CREATE TABLE IF NOT EXISTS settings (
    setting TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class StoreError(RuntimeError):
    """The LOO store's file cannot be used: not a database, locked, or not writable."""


@dataclass(frozen=True)
class Record:
    """One stored retrain: test losses ``(n_test,)`` (float64), gradient norm, objective."""

    losses: torch.Tensor
    grad_norm: float
    objective: float = float("nan")


class LOOStore:
    """Retraining results in one SQLite file (WAL mode, one transaction per finished chunk).

    ``LOOStore()`` uses ``<cache_dir()>/loo.sqlite``; ``LOOStore(path)`` any file. ``timeout``:
    seconds to wait for another process that holds the file locked before :class:`StoreError`.
    """

    def __init__(self, path: str | Path | None = None, *, timeout: float = 60.0) -> None:
        self.path = Path(path) if path is not None else cache_dir(create=False) / DEFAULT_NAME
        self.timeout = float(timeout)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of the LOO store {self.path} ({e}); "
                             f"{_ADVICE}") from e
        with self._open() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            con.commit()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.timeout)

    @contextmanager
    def _open(self, transaction: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection (in one transaction if asked), closed afterwards; SQLite errors become a
        :class:`StoreError` that names the file and what to do."""
        try:
            with closing(self._connect()) as con:
                if transaction:
                    with con:
                        yield con
                else:
                    yield con
        except sqlite3.DatabaseError as e:
            raise self._error(e) from e

    def _error(self, e: sqlite3.DatabaseError) -> StoreError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return StoreError(
                f"the LOO store {self.path} is locked by another process (waited "
                f"{self.timeout:g} s: {text}); let that process finish and run again, or "
                f"{_ADVICE}")
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return StoreError(
                f"the LOO store {self.path} is not a usable SQLite database ({text}); move or "
                f"delete that file (results stored in it are lost), or {_ADVICE}")
        return StoreError(f"the LOO store {self.path} cannot be used ({type(e).__name__}: "
                          f"{text}); {_ADVICE}")

    def __repr__(self) -> str:
        return f"LOOStore({str(self.path)!r})"

    def describe(self, setting: str, description: Mapping[str, Any]) -> None:
        """Record what a setting hash stands for (human-readable, for inspection)."""
        with self._open(transaction=True) as con:
            con.execute("INSERT OR IGNORE INTO settings VALUES (?, ?, ?)",
                        (setting, stable_json(dict(description)), time.time()))

    def description(self, setting: str) -> dict[str, Any] | None:
        import json

        with self._open() as con:
            row = con.execute("SELECT description FROM settings WHERE setting = ?",
                              (setting,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get(self, setting: str, items: Iterable[str]) -> dict[str, Record]:
        """The stored records among ``items`` (missing ones are simply absent)."""
        items = list(items)
        out: dict[str, Record] = {}
        with self._open() as con:
            for start in range(0, len(items), 500):
                part = items[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = con.execute(
                    "SELECT item, losses, n_test, grad_norm, objective FROM results "
                    f"WHERE setting = ? AND item IN ({marks})", (setting, *part)).fetchall()
                for item, blob, n_test, gn, obj in rows:
                    losses = _unseal(setting, item, blob, n_test, gn, obj)
                    if losses is None:
                        continue  # a damaged or edited row is treated as missing: recomputed
                    out[item] = Record(losses, _float(gn), _float(obj))
        return out

    def put(self, setting: str, records: Mapping[str, Record]) -> None:
        """Store records in one transaction (all of them or none)."""
        now = time.time()
        rows = []
        for item, r in records.items():
            arr = r.losses.detach().to("cpu", torch.float64).contiguous().numpy()
            data = arr.tobytes()
            seal = _seal(setting, item, data, arr.size, r.grad_norm, r.objective)
            rows.append((setting, item, data + seal, arr.size, r.grad_norm, r.objective, now))
        with self._open(transaction=True) as con:
            con.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def count(self, setting: str | None = None) -> int:
        with self._open() as con:
            if setting is None:
                return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM results WHERE setting = ?",
                               (setting,)).fetchone()[0]

    def settings(self) -> list[str]:
        with self._open() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT setting FROM results")]

    def clear(self, setting: str | None = None) -> int:
        """Delete all results (or those of one setting); returns how many rows went."""
        with self._open(transaction=True) as con:
            if setting is None:
                cur = con.execute("DELETE FROM results")
                con.execute("DELETE FROM settings")
            else:
                cur = con.execute("DELETE FROM results WHERE setting = ?", (setting,))
                con.execute("DELETE FROM settings WHERE setting = ?", (setting,))
            return cur.rowcount


_SEAL = 32  # bytes of sha256 after the losses in each blob


def _seal(setting: str, item: str, data: bytes, n_test: int, grad_norm: Any, objective: Any) -> bytes:
    """sha256 of everything a row says (its key, losses, count, gradient norm, objective), kept
    after the losses in the blob: a row edited or damaged after it was written no longer
    matches, and is recomputed instead of trusted (as the zoo's weights are checked)."""
    import hashlib

    h = hashlib.sha256(f"{setting}|{item}|{n_test}|{_float(grad_norm)!r}|"
                       f"{_float(objective)!r}|".encode())
    h.update(data)
    return h.digest()


def _unseal(setting: str, item: str, blob: Any, n_test: Any, grad_norm: Any,
            objective: Any) -> torch.Tensor | None:
    """The losses of a stored row, or None when it is damaged, edited, truncated or written
    without a seal (by an older version): such a row is recomputed."""
    if not isinstance(blob, bytes) or not isinstance(n_test, int) or n_test < 0:
        return None
    size = 8 * n_test
    if len(blob) != size + _SEAL:
        return None
    data, seal = blob[:size], blob[size:]
    if seal != _seal(setting, item, data, n_test, grad_norm, objective):
        return None
    return torch.from_numpy(np.frombuffer(data, dtype=np.float64).copy())


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def open_store(store: Any) -> LOOStore | None:
    """``"auto"`` -> the default store, ``None`` -> no store, a path or a LOOStore as given."""
    if store is None:
        return None
    if isinstance(store, LOOStore):
        return store
    if isinstance(store, str) and store == "auto":
        return LOOStore()
    if isinstance(store, str | Path):
        return LOOStore(store)
    raise TypeError("store must be 'auto', None, a file path or a LOOStore, "
                    f"got {type(store).__name__}")
