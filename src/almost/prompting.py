"""Few-shot prompts that make a vanilla (unaligned) LM play a role: assistant, simulated user, query writer.

A vanilla LM continues text, so every prompt is plain text in the chat template's layout::

    User: {demo question}\\nAssistant: {demo answer}      <- k demonstrations, one exchange per line
    User: {question}\\nAssistant: {answer}                <- the conversation so far
    User: {question}\\nAssistant:                         <- the model writes the assistant's turn

Generation stops at the next role tag (:meth:`Prompter.stop_strings`). A ``Prompter`` knows prompt
*styles* (e.g. ``faithful``, ``hhh``): each style is a pool of demonstrations of a different quality.
:class:`FewShotPrompter` reads the pools from files, for any local model; the sandbox world has its own
(``almost.sandbox.prompts.SandboxPrompter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from almost.chat import ChatTemplate
from almost.records import Demonstration, Turn, load_jsonl

Exchange = tuple[str, str]  # (user question, assistant answer)


def render_exchange(question: str, answer: str, template: ChatTemplate = ChatTemplate()) -> str:
    """``User: {question}\\nAssistant: {answer}``: one exchange, as in the corpus and in few-shot prompts."""
    return f"{template.user_segment(question)} {answer}"


def render_exchanges(exchanges: Sequence[Exchange], template: ChatTemplate) -> list[str]:
    return [render_exchange(question, answer, template) for question, answer in exchanges]


def exchanges_of(history: Sequence[Turn]) -> tuple[list[Exchange], str | None]:
    """``history`` (user, assistant, user, ...) -> (complete exchanges, the final unanswered question or None)."""
    for i, turn in enumerate(history):
        if turn.role != ("user", "assistant")[i % 2]:
            raise ValueError(f"turn {i} is a {turn.role} turn: a history alternates user and assistant, user first")
    pairs = [(history[i].content, history[i + 1].content) for i in range(0, len(history) - 1, 2)]
    return pairs, history[-1].content if len(history) % 2 else None


class Prompter:
    """Renders role prompts from demonstrations; subclasses say where demonstrations come from."""

    template: ChatTemplate = ChatTemplate()

    def demonstrations(self, style: str, shots: int, avoid: Sequence[str]) -> list[list[Exchange]]:
        """``shots`` demonstrations of ``style`` (each one or more exchanges) not asking any question in ``avoid``."""
        raise NotImplementedError

    def assistant_prompt(self, style: str, shots: int, history: Sequence[Turn]) -> str:
        """Text after which the model writes the assistant's answer to the last (user) turn of ``history``."""
        past, question = exchanges_of(history)
        if question is None:
            raise ValueError("an assistant prompt needs a history that ends with a user turn")
        demos = self.demonstrations(style, shots, avoid=[q for q, _ in past] + [question])
        lines = render_exchanges([e for demo in demos for e in demo] + past, self.template)
        return "\n".join(lines + [self.template.user_segment(question)])

    def user_prompt(self, shots: int, history: Sequence[Turn]) -> str:
        """Text after which the model writes the user's next question (style ``user``: multi-turn demonstrations)."""
        past, question = exchanges_of(history)
        if question is not None:
            raise ValueError("a user prompt needs a history that ends with an assistant turn")
        demos = self.demonstrations("user", shots, avoid=[q for q, _ in past])
        lines = render_exchanges([e for demo in demos for e in demo] + past, self.template)
        return "\n".join(lines + [self.template.user_tag])

    def query_prompt(self, examples: Sequence[str]) -> str:
        """Self-Instruct style: example user questions, one per line, then the tag of a new one."""
        return "\n".join([f"{self.template.user_tag} {q}" for q in examples] + [self.template.user_tag])

    def stop_strings(self, role: str) -> tuple[str, ...]:
        """Where a ``role`` turn ends: at the next line that starts with a role tag."""
        tags = {"assistant": [self.template.user_tag], "user": [self.template.assistant_tag, self.template.user_tag],
                "query": [self.template.assistant_tag, self.template.user_tag]}[role]
        return tuple("\n" + tag for tag in tags) + (("\n",) if role == "query" else ())


class FewShotPrompter(Prompter):
    """Demonstrations from JSONL files of ``Demonstration`` records, one file per style.

    Args:
        styles: style name -> demonstrations file; the first ``shots`` usable demonstrations are used.
            The ``user`` style (for the simulated user) should hold multi-turn conversations.
        template: the role tags.
    """

    def __init__(self, styles: dict[str, str], template: ChatTemplate = ChatTemplate()) -> None:
        self.template = template
        self.pools = {style: [self._exchanges(d, path) for d in load_jsonl(path, Demonstration)]
                      for style, path in styles.items()}

    @staticmethod
    def _exchanges(demonstration: Demonstration, path: str | Path) -> list[Exchange]:
        past, question = exchanges_of(demonstration.messages)
        if question is not None or not past:
            raise ValueError(f"{path}: a demonstration must end with an assistant turn")
        return past

    def demonstrations(self, style: str, shots: int, avoid: Sequence[str]) -> list[list[Exchange]]:
        if style not in self.pools:
            raise ValueError(f"no demonstrations for prompt style {style!r}; styles: {sorted(self.pools)}")
        usable = [d for d in self.pools[style] if not any(q in avoid for q, _ in d)]
        if len(usable) < shots:
            raise ValueError(f"prompt style {style!r} has {len(usable)} usable demonstrations, {shots} asked for")
        return usable[:shots]


@dataclass(frozen=True)
class PromptedConfig:
    """A prompted vanilla LM, named ``<model>-<style>-<k>shot`` (e.g. ``L-faithful-3shot``)."""

    model: str  # key of the model, e.g. "L"
    style: str  # prompt style, e.g. "hhh" or "faithful"
    shots: int

    @classmethod
    def parse(cls, name: str) -> "PromptedConfig":
        try:
            model, style, shots = name.split("-")
            return cls(model, style, int(shots.removesuffix("shot")))
        except ValueError:
            raise ValueError(f"configuration {name!r} is not <model>-<style>-<k>shot, e.g. L-faithful-3shot") from None

    @property
    def name(self) -> str:
        return f"{self.model}-{self.style}-{self.shots}shot"


def text_prompt_ids(tokenizer, text: str) -> list[int]:
    """A vanilla LM's prompt: BOS, then the text tokenized whole, as its pretraining documents were."""
    return [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
