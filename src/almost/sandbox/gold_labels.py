"""Oracle-labelled comparisons for the reward model's ceiling rows of ``make gold`` (instruments only).

    python -m almost.sandbox.gold_labels --world runs/sandbox/world --comparisons runs/sandbox/data/comparisons.jsonl \
        --out runs/sandbox/gold/data/comparisons_oracle.jsonl
    python -m almost.sandbox.gold_labels --world runs/sandbox/world --samples runs/sandbox/gold/data/policy_samples.jsonl \
        --out runs/sandbox/gold/data/policy_pairs.jsonl

Two questions, two files of pairs for ``rm.yaml``'s training run:

- ``--comparisons``: the synthetic comparisons' own pairs, each ordered by the oracle instead of the rule of thumb
  (ties dropped). An RM trained on them shows what the same responses could teach with perfect labels.
- ``--samples``: the SFT policy's own answers (a best-of-N job's output: ``meta.samples``), every two distinct
  answers to a query whose oracle scores differ, the better one chosen. An RM trained on them shows whether a
  model of this size can learn to rank one policy's answers at all, which is what RMSP, best-of-N and PPO ask of it.

Questions the world cannot parse are skipped (the oracle cannot judge them).
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Iterable, Sequence

from almost.records import Comparison, Demonstration, load_jsonl, write_jsonl
from almost.sandbox.oracle import score
from almost.sandbox.world import World

TIE = 1e-9


def relabel(world: World, comparisons: Iterable[Comparison]) -> tuple[list[Comparison], Counter]:
    """The pairs ordered by the oracle; ties and unparseable questions dropped. Returns (pairs, counts of what
    happened: "kept", "swapped", "tie", "not parsed")."""
    pairs, counts = [], Counter()
    for pair in comparisons:
        query = world.parse(pair.prompt)
        if query is None:
            counts["not parsed"] += 1
            continue
        chosen, rejected = score(query, pair.chosen, world).total, score(query, pair.rejected, world).total
        if abs(chosen - rejected) <= TIE:
            counts["tie"] += 1
            continue
        swapped = rejected > chosen
        counts["swapped" if swapped else "kept"] += 1
        better, worse = (pair.rejected, pair.chosen) if swapped else (pair.chosen, pair.rejected)
        pairs.append(Comparison(pair.prompt, better, worse, {"oracle": [max(chosen, rejected), min(chosen, rejected)],
                                                             "synthetic_label_agrees": not swapped}))
    return pairs, counts


def sample_pairs(world: World, records: Sequence[Demonstration]) -> tuple[list[Comparison], Counter]:
    """Every pair of distinct non-empty samples (``meta.samples``) of one query whose oracle scores differ, the
    better one chosen. Returns (pairs, counts: "queries", "pairs", "tie", "not parsed")."""
    pairs, counts = [], Counter()
    for record in records:
        prompt = record.messages[0].content
        query = world.parse(prompt)
        if query is None:
            counts["not parsed"] += 1
            continue
        counts["queries"] += 1
        texts = sorted({t for t in record.meta["samples"] if t.strip()})
        judged = {t: score(query, t, world).total for t in texts}
        for i, a in enumerate(texts):
            for b in texts[i + 1:]:
                if abs(judged[a] - judged[b]) <= TIE:
                    counts["tie"] += 1
                    continue
                good, bad = (a, b) if judged[a] > judged[b] else (b, a)
                pairs.append(Comparison(prompt, good, bad, {"oracle": [judged[good], judged[bad]]}))
    counts["pairs"] = len(pairs)
    return pairs, counts


def main() -> None:
    from almost.sandbox.build import load_world

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True, help="the world's folder (world.json)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--comparisons", help="Comparison JSONL to order by the oracle")
    source.add_argument("--samples", help="a best-of-N job's Demonstration JSONL (meta.samples) to pair up")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    world = load_world(args.world)
    if args.comparisons:
        pairs, counts = relabel(world, load_jsonl(args.comparisons, Comparison))
    else:
        pairs, counts = sample_pairs(world, load_jsonl(args.samples, Demonstration))
    write_jsonl(args.out, pairs)
    print(f"{dict(counts)} -> {len(pairs)} oracle-labelled pairs in {args.out}")


if __name__ == "__main__":
    main()
