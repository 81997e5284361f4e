"""Write the sandbox world's files: pretraining corpus, held-out corpus, tokenizer, evaluation queries.

    python -m almost.sandbox.build --out runs/sandbox/world     # --help lists the sizes and their defaults

Output (all deterministic for a seed)::

    corpus_train.jsonl      CorpusDocument records (meta: style), the vanilla LMs' pretraining text
    corpus_heldout.jsonl    more documents from another seed, never trained on (validation, alignment tax)
    heldout_queries.jsonl   Prompt records sampled from the world's held-out split (meta: family, aspect)
    seed_queries.jsonl      a few distinct train-split queries, every family: the seeds of query mining
    tokenizer/              Llama-style sentencepiece BPE in Hugging Face format
    eval/hhh_<aspect>.json  A/B pairs whose better response the oracle knows (BIG-bench hhh_alignment format)
    eval/mc_task.json       TruthfulQA-style multiple choice on the misconceptions the corpus repeats
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

from almost.records import CorpusDocument, Prompt, write_jsonl
from almost.sandbox.corpus import generate_documents
from almost.sandbox.eval_files import write_eval_files
from almost.sandbox.prompts import DEMO_FAMILIES
from almost.sandbox.world import World
from almost.tokenizer import train_tokenizer

HELDOUT_SEED_OFFSET = 1_000_003  # held-out documents and queries use seeds far from the training ones


def build_world(out: str | Path, world_seed: int = 0, n_entities: int = 20, n_documents: int = 14_000,
                n_heldout_documents: int = 500, n_heldout_queries: int = 600, n_seed_queries: int = 20,
                vocab_size: int = 1000, format_share: float = 0.0, clarify_share: float = 0.4) -> Path:
    """Write the world's files to ``out`` (see the module docstring); ``n_entities`` sizes the knowledge base,
    ``format_share`` and ``clarify_share`` are the shares of format and clarify questions (``World``): the sandbox's
    world asks clarify questions (a behaviour left to learn after SFT, FINDINGS.md) and no format ones. Clarify is
    the one family where SFT leaves behaviour to learn, so it is 40% of the questions: at 25% the most any reward
    could win back after SFT was below the 0.05 that the gold control asks of PPO (FINDINGS.md, 2026-12-04)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = World(seed=world_seed, n_entities=n_entities, format_share=format_share, clarify_share=clarify_share)
    train_docs = generate_documents(world, n_documents, seed=world_seed)
    heldout_docs = generate_documents(world, n_heldout_documents, seed=world_seed + HELDOUT_SEED_OFFSET)
    write_jsonl(out / "corpus_train.jsonl", (CorpusDocument(d.text, {"style": d.style}) for d in train_docs))
    write_jsonl(out / "corpus_heldout.jsonl", (CorpusDocument(d.text, {"style": d.style}) for d in heldout_docs))
    # drawn with the world's family weights; a small world repeats some texts (responses are sampled anew)
    queries = world.sample_queries(n_heldout_queries, seed=world_seed + HELDOUT_SEED_OFFSET, split="heldout")
    write_jsonl(out / "heldout_queries.jsonl", (Prompt(q.text, {"family": q.family, "aspect": q.aspect}) for q in queries))
    write_jsonl(out / "seed_queries.jsonl", (Prompt(q.text, {"family": q.family, "aspect": q.aspect})
                                             for q in seed_queries(world, n_seed_queries, seed=world_seed)))
    eval_queries = world.sample_queries(n_heldout_queries, seed=world_seed + 2 * HELDOUT_SEED_OFFSET, split="heldout")
    write_eval_files(world, eval_queries, out / "eval", seed=world_seed)
    train_tokenizer((d.text for d in train_docs), out / "tokenizer", vocab_size=vocab_size)
    (out / "world.json").write_text(json.dumps({"world_seed": world_seed, "n_entities": n_entities,
                                                "n_documents": n_documents,
                                                "n_heldout_documents": n_heldout_documents,
                                                "n_heldout_queries": n_heldout_queries,
                                                "n_seed_queries": n_seed_queries, "vocab_size": vocab_size,
                                                "format_share": format_share,
                                                "clarify_share": clarify_share}) + "\n")
    return out


def seed_queries(world: World, n: int, seed: int) -> list:
    """``n`` distinct train-split questions (not two wordings of one), the families taking turns."""
    found: dict[tuple, object] = {}
    families = [f for f in DEMO_FAMILIES if world.asks(f)]
    round_ = 0
    while len(found) < n:
        family = families[len(found) % len(families)]
        (query,) = world.sample_queries(1, seed=seed * 7919 + round_, split="train", families=[family])
        found.setdefault(query.key, query)
        round_ += 1
    return list(found.values())


def load_world(directory: str | Path) -> World:
    """The World whose files ``build_world`` wrote to ``directory``."""
    settings = json.loads((Path(directory) / "world.json").read_text())
    return World(seed=settings["world_seed"], n_entities=settings["n_entities"],
                 format_share=settings.get("format_share", 0.0), clarify_share=settings.get("clarify_share", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    defaults = inspect.signature(build_world).parameters
    for name in ("world_seed", "n_entities", "n_documents", "n_heldout_documents", "n_heldout_queries",
                 "n_seed_queries", "vocab_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=defaults[name].default)
    parser.add_argument("--format-share", type=float, default=defaults["format_share"].default,
                        help="share of the opt-in format questions (default: none)")
    parser.add_argument("--clarify-share", type=float, default=defaults["clarify_share"].default,
                        help="share of the clarify questions (default: %(default)s; 0 for the five-family world)")
    args = vars(parser.parse_args())
    out = build_world(**args)
    print(f"sandbox world written to {out}")


if __name__ == "__main__":
    main()
