"""Output of a long job, written in shards as it is produced, so that an interrupted job resumes.

A job numbers its input records ``0..N-1`` and writes the outputs of one batch as one shard file
(``<dir>/part-<first index>-<rank>.jsonl``): every line is a JSON object with an ``"index"`` key naming
the input record it came from. A shard is written to a temporary file and renamed, so a shard on disk
is always whole: a killed job loses at most the batch in flight. A rerun reads :meth:`ShardStore.done`
and skips those inputs; :meth:`ShardStore.merge` finally writes every row in input order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator


class ShardStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.jsonl"))

    def rows(self) -> Iterator[dict]:
        """Every row of every shard (unordered across shards)."""
        for shard in self.shards():
            yield from _read_shard(shard)

    def done(self) -> set[int]:
        """Input indices with at least one output row."""
        return {row["index"] for row in self.rows()}

    def write(self, rows: list[dict], rank: int = 0) -> Path | None:
        """Write one batch's rows as a new shard, atomically. Returns its path (None for no rows)."""
        if not rows:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        first = min(row["index"] for row in rows)
        path = self.directory / f"part-{first:09d}-{rank}.jsonl"
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        os.replace(temporary, path)
        return path

    def merged_rows(self) -> list[dict]:
        """All rows in input order (rows of one input keep their order); an input done twice is an error."""
        by_index: dict[int, list[dict]] = {}
        owner: dict[int, Path] = {}
        for shard in self.shards():
            for row in _read_shard(shard):
                index = row["index"]
                if owner.setdefault(index, shard) != shard:
                    raise ValueError(f"input {index} has rows in two shards: {owner[index]} and {shard}")
                by_index.setdefault(index, []).append(row)
        return [row for index in sorted(by_index) for row in by_index[index]]


def _read_shard(shard: Path) -> Iterator[dict]:
    for line_number, line in enumerate(shard.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("index"), int):
                raise ValueError(f"{shard}:{line_number}: a shard row needs an integer 'index'")
            yield row
