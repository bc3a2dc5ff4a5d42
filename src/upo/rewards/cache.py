"""A persistent cache of reward scores, shared by runs and processes (sqlite, stdlib).

Key: (scorer name, scorer version, sha256(prompt + "\\x00" + completion)). A new scorer version
simply misses; old rows stay in the file until it is deleted.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

# SQLite's historical limit on bound parameters per statement is 999.
_CHUNK = 900


def default_cache_dir() -> Path:
    """`$UPO_CACHE` if set, else `~/.cache/upo`."""
    env = os.environ.get("UPO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "upo"


def text_hash(prompt: str, completion: str) -> bytes:
    """sha256 of prompt + NUL + completion (the NUL keeps ("ab", "c") apart from ("a", "bc"))."""
    # surrogatepass: text loaded from JSON may hold lone surrogates, which strict utf-8 rejects
    return hashlib.sha256((prompt + "\x00" + completion).encode("utf-8", "surrogatepass")).digest()


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL. The switch takes an exclusive lock and, unlike ordinary statements, fails at
    once with "database is locked" instead of waiting out the busy timeout when another process
    opens the file at the same moment, so retry it with backoff until `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class ScoreCache:
    """Reward scores in `<cache_dir>/scores.sqlite`.

    Several processes may open the same file (e.g. one per GPU): WAL mode lets readers run
    beside a writer, and the timeout makes a writer wait for another's transaction.
    """

    def __init__(self, cache_dir: str | Path | None = None, timeout: float = 60.0):
        self.path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "scores.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=timeout)
        _enable_wal(self._conn, timeout)
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS scores ("
                " scorer TEXT NOT NULL, version TEXT NOT NULL, text_hash BLOB NOT NULL,"
                " score REAL NOT NULL, PRIMARY KEY (scorer, version, text_hash)) WITHOUT ROWID"
            )

    def get_many(
        self, scorer: str, version: str, prompts: Sequence[str], completions: Sequence[str]
    ) -> list[float | None]:
        """The cached score of each (prompt, completion), None where there is none."""
        if len(prompts) != len(completions):
            raise ValueError(f"get_many: {len(prompts)} prompts but {len(completions)} completions")
        hashes = [text_hash(p, c) for p, c in zip(prompts, completions, strict=True)]
        found: dict[bytes, float] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            rows = self._conn.execute(
                "SELECT text_hash, score FROM scores WHERE scorer = ? AND version = ?"
                f" AND text_hash IN ({','.join('?' * len(chunk))})",
                [scorer, version, *chunk],
            )
            found.update(rows)
        return [found.get(h) for h in hashes]

    def put_many(
        self,
        scorer: str,
        version: str,
        prompts: Sequence[str],
        completions: Sequence[str],
        scores: Sequence[float],
    ) -> None:
        """Store one score per (prompt, completion), replacing any stored under the same key."""
        if not len(prompts) == len(completions) == len(scores):
            raise ValueError(
                f"put_many: {len(prompts)} prompts, {len(completions)} completions, {len(scores)} scores"
            )
        rows = [
            (scorer, version, text_hash(p, c), float(s))
            for p, c, s in zip(prompts, completions, scores, strict=True)
        ]
        with self._conn:  # one transaction: all rows or none
            self._conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
