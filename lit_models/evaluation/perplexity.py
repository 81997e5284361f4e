"""Alignment tax (ALMoST section 3): perplexity of a model on held-out text, through a sliding window.

    python train.py test --config configs/eval/perplexity.yaml --model.init_args.source.path=runs/sandbox/ppo/hf
"""

from __future__ import annotations

from functools import partial

import torch

from almost.chat import ChatTemplate, SpecialIds
from almost.evaluation import perplexity, sliding_window_nll
from almost.logprobs import next_token_logprobs
from almost.models import ModelSource, build_causal_lm
from lit_models.evaluation.base import EvaluationModule, Row


class PerplexityEvaluation(EvaluationModule):
    """Token-level perplexity over every document of a held-out corpus; batches from
    ``data_modules.evaluation.TextDataModule``.

    A document is tokenized as in pretraining, ``<s> text </s>``, and every token after ``<s>`` is scored
    once by ``almost.evaluation.sliding_window_nll``: windows of ``window`` tokens advancing ``stride`` at a
    time, so a token sees at least ``window - stride`` tokens of context once past the first window.
    Metrics: ``perplexity`` = exp(total NLL / scored tokens) over the corpus, ``nll_per_token``,
    ``n_tokens`` and ``n_documents``. Compare the value before and after alignment for the tax.

    Args:
        window: tokens per forward pass (at most the model's context length).
        stride: new tokens scored per window after the first; ``1 <= stride < window``.
    """

    task = "perplexity"

    def __init__(self, source: ModelSource, out_dir: str, window: int = 256, stride: int = 128,
                 template: ChatTemplate | None = None) -> None:
        if window < 2 or not 1 <= stride < window:
            raise ValueError(f"need window >= 2 and 1 <= stride < window, got window={window}, stride={stride}")
        super().__init__(source, out_dir, template)
        self.net: torch.nn.Module | None = None

    def build_networks(self) -> None:
        self.net = build_causal_lm(self.source, self.tokenizer)

    def document_ids(self, text: str) -> list[int]:
        special = SpecialIds.of(self.tokenizer)
        return [special.bos, *self.tokenizer(text, add_special_tokens=False)["input_ids"], special.eos]

    def evaluate_batch(self, batch: list) -> list[Row]:
        logprob_fn = partial(next_token_logprobs, self.net)
        rows = []
        for item in batch:  # one document at a time: the windows of a document depend on its length
            nll, n_tokens = sliding_window_nll(self.document_ids(item.record.text), self.hparams.window,
                                               self.hparams.stride, logprob_fn)
            rows.append({"index": item.index, "nll": nll, "n_tokens": n_tokens})
        return rows

    def summarize(self, rows: list[Row]) -> dict[str, float]:
        total_nll, n_tokens = sum(r["nll"] for r in rows), sum(r["n_tokens"] for r in rows)
        return {"perplexity": perplexity(total_nll, n_tokens), "nll_per_token": total_nll / n_tokens,
                "n_tokens": n_tokens, "n_documents": len(rows)}
