"""PPO's prompts: the mined queries, drawn so that their question families follow the held-out mix.

    python -m almost.sandbox.prompt_mix --world runs/sandbox/world --queries runs/sandbox/data/queries.jsonl \
        --out runs/sandbox/data/ppo_prompts.jsonl

Mining does not keep the world's family shares: the vanilla L model writes arithmetic questions far more often
than the others (36% of the mined queries against 15% of the held-out ones on seed 0), and about one in seven of
its questions is not one the world can ask. PPO trained on that mix spends its rollouts where the evaluation
does not look. This stage sorts the mined queries by family with the world's question grammar (``World.parse``,
a topic classifier: it reads the question only, never an answer, so no judgement of the oracle reaches
training), drops the unparseable ones, and draws ``n`` prompts with the world's family weights
(``World.family_weights``), each family's mined queries in a seeded order, repeated only when a family has fewer
than its share. The mined file itself is unchanged (RMSP and self-play keep reading it).
"""

from __future__ import annotations

import argparse
import random
import warnings
from collections import Counter
from typing import Sequence

from almost.records import Prompt, load_jsonl, write_jsonl
from almost.sandbox.world import FAMILIES, World


def family_counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """``n`` split by ``weights`` with the largest-remainder rule: the counts sum to ``n`` exactly."""
    total = sum(weights.values())
    exact = {f: n * w / total for f, w in weights.items()}
    counts = {f: int(x) for f, x in exact.items()}
    for family in sorted(exact, key=lambda f: (counts[f] - exact[f], f))[: n - sum(counts.values())]:
        counts[family] += 1
    return counts


def mix_prompts(world: World, queries: Sequence[Prompt], n: int, seed: int = 0) -> list[Prompt]:
    """``n`` prompts from the distinct texts of ``queries`` whose families follow ``world.family_weights`` (``meta``:
    family, aspect), in a seeded shuffled order. A family with no parseable query is left out with a warning, the
    others sharing its place."""
    by_family: dict[str, list[Prompt]] = {f: [] for f in FAMILIES}
    seen: set[str] = set()
    for record in queries:
        query = world.parse(record.prompt)
        if query is not None and record.prompt not in seen:
            seen.add(record.prompt)
            by_family[query.family].append(Prompt(record.prompt, {"family": query.family, "aspect": query.aspect}))
    weights = {f: w for f, w in world.family_weights.items() if world.asks(f) and by_family[f]}
    if not weights:
        raise ValueError("none of the mined queries is a question of the world")
    missing = sorted(f for f in FAMILIES if world.asks(f) and f not in weights)
    if missing:
        warnings.warn(f"no mined query of the families {missing}: the other families share their place")
    rng = random.Random(f"prompt_mix:{seed}")
    chosen: list[Prompt] = []
    for family, count in family_counts(n, weights).items():
        pool = by_family[family][:]
        rng.shuffle(pool)
        chosen += [pool[i % len(pool)] for i in range(count)]
    rng.shuffle(chosen)
    return chosen


def main() -> None:
    from almost.sandbox.build import load_world

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True, help="the world's folder (world.json)")
    parser.add_argument("--queries", required=True, help="the mined queries (Prompt JSONL)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=1000, help="prompts to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    world, queries = load_world(args.world), load_jsonl(args.queries, Prompt)
    prompts = mix_prompts(world, queries, args.n, args.seed)
    write_jsonl(args.out, prompts)
    parsed = Counter(q.family for q in (world.parse(r.prompt) for r in queries) if q is not None)
    print(f"{len(queries)} mined queries, {len(queries) - sum(parsed.values())} not the world's; by family "
          f"{dict(parsed)} -> {len(prompts)} prompts: {dict(Counter(p.meta['family'] for p in prompts))} -> {args.out}")


if __name__ == "__main__":
    main()
