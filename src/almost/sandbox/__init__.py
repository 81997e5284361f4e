"""The sandbox world: a tiny procedural world, its oracle, pretraining corpus and prompts (no torch).

    world    World, Query, Misconception, split_of: entities, facts, questions and their splits
    oracle   score -> OracleScore: a programmatic judge standing in for human raters
    corpus   generate_corpus / generate_documents, corpus_stats: mixed-quality pretraining text
    prompts  render_prompt ("hhh", "faithful", "user"), render_user_prompt: few-shot prompts
"""

from almost.sandbox.corpus import Document, corpus_stats, generate_corpus, generate_documents
from almost.sandbox.oracle import OracleScore, score
from almost.sandbox.prompts import render_prompt, render_user_prompt
from almost.sandbox.world import Misconception, Query, World, split_of

__all__ = ["Document", "Misconception", "OracleScore", "Query", "World", "corpus_stats", "generate_corpus",
           "generate_documents", "render_prompt", "render_user_prompt", "score", "split_of"]
