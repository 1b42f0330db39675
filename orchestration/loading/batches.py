"""Inserting buffered rows into DuckDB, and the rejected rows of a file."""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

BATCH_ROWS = 100_000  # rows buffered in memory before they are inserted (same transaction)


def insert_frame(
    con: duckdb.DuckDBPyConnection, sql: str, columns: dict[str, Any], params: list[Any]
) -> None:
    """Run ``sql`` (which selects from ``_cdp_batch``) over ``columns`` as a DataFrame."""
    frame = pd.DataFrame(columns, copy=False)
    con.register("_cdp_batch", frame)
    try:
        con.execute(sql, params)
    finally:
        con.unregister("_cdp_batch")


class Rejects:
    """Buffers rejected rows of one file and inserts them into raw.rejected_rows in batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, kind: str) -> None:
        self.con, self.source, self.kind = con, source, kind
        self.lines: list[int] = []
        self.reasons: list[str] = []
        self.texts: list[str | None] = []
        self.count = 0

    def add(self, line: int, reason: str, text: str | None) -> None:
        self.lines.append(line)
        self.reasons.append(reason)
        self.texts.append(text)
        self.count += 1
        if len(self.lines) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        insert_frame(
            self.con,
            "INSERT INTO raw.rejected_rows (source_file, source_line, file_kind, reason, "
            "raw_text, rejected_at) SELECT ?, line, ?, reason, raw_text, now() FROM _cdp_batch",
            {
                "line": pd.array(self.lines, dtype="int64"),
                "reason": pd.Series(self.reasons, dtype=object),
                "raw_text": pd.Series(self.texts, dtype=object),
            },
            [self.source, self.kind],
        )
        self.lines, self.reasons, self.texts = [], [], []
