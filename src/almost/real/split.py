"""Hold out whole queries of the synthetic comparisons, so the reward model's accuracy is measured on queries it
never saw (a pair-level split would put other pairs of the same responses in training).

    python -m almost.real.split runs/gemma/data/comparisons.jsonl --fraction 0.2
    # -> comparisons_train.jsonl and comparisons_heldout.jsonl next to it
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

from almost.records import Comparison, load_jsonl, write_jsonl


def split_by_query(comparisons: list[Comparison], fraction: float, seed: int = 0
                   ) -> tuple[list[Comparison], list[Comparison]]:
    """(train, heldout): ``ceil(fraction * queries)`` of the distinct queries (at least one, at most all but one),
    chosen by a seeded hash of the query text so the choice does not depend on the file's order; every pair keeps
    its query's side and the records keep their order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    queries = sorted({c.prompt for c in comparisons},
                     key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    if len(queries) < 2:
        raise ValueError(f"need comparisons of at least 2 queries to hold some out, got {len(queries)}")
    heldout = set(queries[:min(len(queries) - 1, max(1, math.ceil(fraction * len(queries))))])
    return [c for c in comparisons if c.prompt not in heldout], [c for c in comparisons if c.prompt in heldout]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", type=Path)
    parser.add_argument("--fraction", type=float, default=0.2, help="share of the queries held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, heldout = split_by_query(load_jsonl(args.comparisons, Comparison), args.fraction, args.seed)
    stem = args.comparisons.with_suffix("")
    write_jsonl(f"{stem}_train.jsonl", train)
    write_jsonl(f"{stem}_heldout.jsonl", heldout)
    print(f"{args.comparisons}: {len(train)} pairs to train on, {len(heldout)} held out "
          f"({len({c.prompt for c in heldout})} queries)")


if __name__ == "__main__":
    main()
