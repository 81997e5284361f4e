"""One interface for every judge of an answer: ``Scorer.score(prompts, responses) -> list[float | None]``.

A prompt is the conversation so far (a list of :class:`almost.records.Turn` ending with a user turn, or a plain
string for a single user message); ``responses[i]`` is the assistant's reply to ``prompts[i]``. Scores are
"higher is better" on the scorer's own scale. ``None`` means the scorer could not judge that answer (an LLM
judge whose outputs hold no readable score): callers leave it out, they never give it a default.

Implementations, chosen in config by ``class_path`` wherever a stage takes a reward or a judge:

- :class:`RewardModelScorer`: a saved reward model (``almost.models.RewardModel``), the one RM loader;
- :class:`JudgeScorer`: a causal LM grading each answer with the additive 0-5 rubric of
  ``almost.evaluation.judge``, ``samples`` judgements averaged;
- ``almost.sandbox.scorer.OracleScorer``: the sandbox world's oracle (evaluation and gold controls only).

Models are loaded on first use (or by :meth:`Scorer.load`), so building a scorer from a config is cheap.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Sequence, Union

import torch

from almost.batching import pad_sequences
from almost.chat import ChatTemplate, encode_exchange, encode_prompt, text_ids
from almost.evaluation.judge import JUDGE_PROMPTS, JudgeTally, render_judge_prompt
from almost.generation import SamplingConfig, generate
from almost.records import Turn

PromptLike = Union[str, Sequence[Turn]]
TEMPLATE_FILE = "almost_chat_template.json"  # written beside exported weights: the template they were trained with


def as_history(prompt: PromptLike) -> list[Turn]:
    """A conversation ending with a user turn, from a plain user message or a list of turns."""
    history = [Turn("user", prompt)] if isinstance(prompt, str) else list(prompt)
    if not history or history[-1].role != "user":
        raise ValueError("a scorer's prompt must end with a user turn")
    return history


def save_template(directory: str | Path, template: ChatTemplate) -> None:
    """Record the chat template a model was trained with beside its weights (read by :func:`saved_template`)."""
    Path(directory, TEMPLATE_FILE).write_text(json.dumps(asdict(template)) + "\n", encoding="utf-8")


def saved_template(directory: str | Path) -> ChatTemplate | None:
    """The chat template saved with a model directory by :func:`save_template`, or None."""
    path = Path(directory, TEMPLATE_FILE)
    return ChatTemplate(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def resolve_template(directory: str, given: ChatTemplate | None) -> ChatTemplate:
    """The template to encode for the model in ``directory``: the one it was trained with; ``given`` must agree."""
    saved = saved_template(directory)
    if given is not None and saved is not None and given != saved:
        raise ValueError(f"{directory} was trained with the chat template {saved}, but {given} was configured")
    return given or saved or ChatTemplate()


class Scorer(ABC):
    """Scores an assistant's answers in context (see the module docstring)."""

    @abstractmethod
    def score(self, prompts: Sequence[PromptLike], responses: Sequence[str]) -> list[float | None]:
        """One score per ``(prompts[i], responses[i])``; None where the answer could not be judged."""

    def load(self) -> "Scorer":
        """Load what the scorer needs now (models load on first use otherwise); returns itself."""
        return self

    def to(self, device: torch.device | str) -> "Scorer":
        """Run on ``device`` (scorers without a network ignore it); returns itself."""
        return self

    def describe(self) -> dict:
        """Plain data naming the scorer and its settings (results files, checkpoints' hyperparameters)."""
        return {"class": type(self).__name__}

    @staticmethod
    def _check(prompts: Sequence, responses: Sequence) -> None:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


class RewardModelScorer(Scorer):
    """A saved reward model: reward of each exchange, read at its last token, encoded as the RM was trained.

    Args:
        path: directory of a saved reward model (``RewardModel.save_pretrained``: backbone and head file).
        max_length: longest exchange scored; the prompt is cut from the left first.
        batch_size: exchanges per forward pass.
        dtype: dtype of the loaded weights.
        template: chat template; default the one saved with the model (``almost_chat_template.json``), else
            ``ChatTemplate()``. A template that contradicts the saved one is refused.
    """

    def __init__(self, path: str, max_length: int = 512, batch_size: int = 32, dtype: str = "float32",
                 template: ChatTemplate | None = None) -> None:
        self.path, self.max_length, self.batch_size, self.dtype = path, max_length, batch_size, dtype
        self.template = resolve_template(path, template)
        self._net = None
        self._tokenizer = None

    @classmethod
    def of_model(cls, net, tokenizer, template: ChatTemplate, max_length: int = 512,
                 batch_size: int = 32) -> "RewardModelScorer":
        """A scorer around a reward model already loaded (an evaluation's own network, kept where its module put
        it); ``path`` is then only a description."""
        scorer = cls.__new__(cls)
        scorer.path, scorer.max_length, scorer.batch_size = "<in memory>", max_length, batch_size
        scorer.dtype, scorer.template, scorer._net, scorer._tokenizer = None, template, net, tokenizer
        return scorer

    def load(self) -> "RewardModelScorer":
        if self._net is None:
            from almost.models import ModelSource, RewardModel, load_tokenizer

            source = ModelSource(path=self.path, dtype=self.dtype)
            self._net = RewardModel.load(source).eval().requires_grad_(False)
            self._tokenizer = load_tokenizer(source)
        return self

    @property
    def net(self):
        """The ``RewardModel`` (frozen, eval mode)."""
        return self.load()._net

    @property
    def tokenizer(self):
        return self.load()._tokenizer

    def to(self, device: torch.device | str) -> "RewardModelScorer":
        self.net.to(device)
        return self

    def describe(self) -> dict:
        return {"class": type(self).__name__, "path": self.path, "max_length": self.max_length,
                "template": asdict(self.template)}

    @torch.no_grad()
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token path: rewards ``(B,)`` float32 of sequences already encoded with this RM's tokenizer and
        template, ``(B, T)`` each, padded on either side (read at each row's last real token)."""
        device = next(self.net.parameters()).device
        return self.net.score(input_ids.to(device), attention_mask.to(device)).float()

    def score(self, prompts: Sequence[PromptLike], responses: Sequence[str]) -> list[float]:
        self._check(prompts, responses)
        tokenizer = self.tokenizer
        sequences = [encode_exchange(tokenizer, self.template, as_history(p), r, self.max_length)
                     for p, r in zip(prompts, responses)]
        scores: list[float] = []
        for start in range(0, len(sequences), self.batch_size):
            input_ids, attention_mask = pad_sequences(sequences[start:start + self.batch_size],
                                                      tokenizer.pad_token_id, side="right")
            scores += self.score_ids(input_ids, attention_mask).tolist()
        return scores


class JudgeScorer(Scorer):
    """An LLM judge: the causal LM at ``path`` grades each answer alone with the additive 0-5 rubric
    (``almost.evaluation.judge``), ``samples`` times; the score is the mean of the judgements it could read.

    Each answer is shown on its own, so no presentation order can favour one side. An output without a
    readable last ``Score: n`` line is counted (``tally.unparseable``) and left out of the mean; an answer with
    no readable judgement at all scores None.

    Args:
        path: directory of the judge's causal LM (HF format).
        samples: judgements per answer (``k``), averaged.
        temperature, top_p: sampling of the judgements; ``temperature`` 0 is greedy (then ``samples`` > 1
            repeats the same judgement, so it must be 1).
        max_new_tokens: longest judgement.
        batch_size: judge prompts per generation batch.
        seed: sampling seed (each call advances it, so repeated calls sample afresh but reproducibly).
        dtype: dtype of the loaded weights.
        template: chat template the judge is prompted with (default: the one saved with the model).
        prompt: the judge prompt, a name of ``almost.evaluation.judge.JUDGE_PROMPTS``: "rubric" (the rubric in
            full) or "short" (its points in one line, for models with a short context).
        share_prefix: compute the prompts' common beginning (the rubric) once per batch
            (``almost.generation.SamplingConfig.share_prefix``).
        reply_prefix: text the judge's reply starts with, written for it (e.g. ``"Score:"``: a model too small to
            follow the rubric's format then only has to name the number); each output is read with it in front.
    """

    def __init__(self, path: str, samples: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, batch_size: int = 16, seed: int = 0, dtype: str = "float32",
                 template: ChatTemplate | None = None, prompt: str = "rubric", share_prefix: bool = False,
                 reply_prefix: str = "") -> None:
        if samples < 1:
            raise ValueError(f"JudgeScorer: samples must be >= 1, got {samples}")
        if samples > 1 and temperature == 0:
            raise ValueError("JudgeScorer: greedy judgements (temperature 0) are all the same; use samples: 1")
        if prompt not in JUDGE_PROMPTS:
            raise ValueError(f"JudgeScorer: prompt {prompt!r} is not one of {', '.join(JUDGE_PROMPTS)}")
        self.prompt, self.reply_prefix = prompt, reply_prefix
        self.path, self.samples, self.batch_size, self.seed, self.dtype = path, samples, batch_size, seed, dtype
        self.template = resolve_template(path, template)
        self.sampling = SamplingConfig(max_new_tokens, temperature, top_p, stop_strings=(f"\n{self.template.user_tag}",),
                                       share_prefix=share_prefix)
        self.tally = JudgeTally()
        self.calls = 0
        self._net = None
        self._tokenizer = None

    def load(self) -> "JudgeScorer":
        if self._net is None:
            from almost.models import ModelSource, build_causal_lm, load_tokenizer

            source = ModelSource(path=self.path, dtype=self.dtype)
            self._tokenizer = load_tokenizer(source)
            self._net = build_causal_lm(source, self._tokenizer).eval().requires_grad_(False)
        return self

    def use_network(self, net, tokenizer) -> "JudgeScorer":
        """Judge with a causal LM already in memory that holds the weights of ``path`` (a policy judging its own
        answers) instead of loading a second copy; returns itself."""
        self._net, self._tokenizer = net, tokenizer
        return self

    def to(self, device: torch.device | str) -> "JudgeScorer":
        self.load()._net.to(device)
        return self

    def describe(self) -> dict:
        return {"class": type(self).__name__, "path": self.path, "samples": self.samples, "prompt": self.prompt,
                "reply_prefix": self.reply_prefix,
                "sampling": asdict(self.sampling)}

    def judge_prompt(self, prompt: PromptLike, response: str) -> str:
        """The rubric prompt for one answer; a longer conversation is shown whole as the question."""
        history = as_history(prompt)
        if len(history) == 1:
            question = history[0].content
        else:
            tags = {"user": self.template.user_tag, "assistant": self.template.assistant_tag}
            question = "\n".join(f"{tags[t.role]} {t.content}" for t in history)
        return render_judge_prompt(question, response, self.prompt)

    def judgements(self, prompts: Sequence[PromptLike], responses: Sequence[str]) -> list[list[str]]:
        """``samples`` judge outputs per answer, generated as the assistant's reply to the rubric prompt."""
        self._check(prompts, responses)
        self.load()
        texts = [self.judge_prompt(p, r) for p, r in zip(prompts, responses) for _ in range(self.samples)]
        reply = text_ids(self._tokenizer, self.template, self.reply_prefix) if self.reply_prefix else []
        ids = [encode_prompt(self._tokenizer, self.template, [Turn("user", t)]) + reply for t in texts]
        seed = self.seed + 1_000_003 * self.calls
        self.calls += 1
        generations = generate(self._net, self._tokenizer, ids, self.sampling, self.batch_size, seed)
        outputs = [f"{self.reply_prefix} {g.text}" if self.reply_prefix else g.text for g in generations]
        return [outputs[i * self.samples:(i + 1) * self.samples] for i in range(len(responses))]

    def scores_of(self, outputs: Sequence[str]) -> float | None:
        """Mean of the readable scores among one answer's judge outputs (each counted in ``tally``), or None."""
        parsed = [s for s in (self.tally.add(text) for text in outputs) if s is not None]
        return sum(parsed) / len(parsed) if parsed else None

    def score(self, prompts: Sequence[PromptLike], responses: Sequence[str]) -> list[float | None]:
        return [self.scores_of(outputs) for outputs in self.judgements(prompts, responses)]
