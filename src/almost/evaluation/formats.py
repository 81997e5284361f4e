"""Loaders (and writers) for the evaluation sets of the paper's section 3, validated like ``almost.records``.

Every loader checks every record and raises :class:`~almost.records.RecordError` naming the file, the
line (JSONL) or the record index (JSON documents) and the problem; nothing is dropped silently.

Formats::

    HHH A/B (BIG-bench hhh_alignment task.json)
        {"examples": [{"input": str, "target_scores": {response: 1, other_response: 0}}, ...], ...}
        other top-level keys (name, description, canary, ...) are task metadata and are ignored.
    TruthfulQA multiple choice (mc_task.json)
        [{"question": str, "mc1_targets": {answer: 0 | 1, ...}, "mc2_targets": {answer: 0 | 1, ...}}, ...]
        mc1 has exactly one true answer; mc1 and mc2 each have at least one false answer, mc2 at least one true.
    HH-RLHF preferences (JSONL)
        {"chosen": transcript, "rejected": transcript}, transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..."
    Vicuna / MT-bench questions (JSONL)
        {"question_id": int, "category": str, "turns": [str, ...], "reference": [str, ...] (MT-bench only)}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from almost.records import RecordError, Turn, _check_keys, _text, iter_json_objects

# --------------------------------------------------------------------------------------------- helpers


def _read_json_document(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None


def _parse_each(items: list, where: Callable[[int], str], parse: Callable[[Any], Any], kind: str) -> list:
    """``parse`` every item; a ``ValueError`` becomes a :class:`RecordError` at ``where(index)``."""
    records = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValueError(f"expected a JSON object, got {type(item).__name__}")
            records.append(parse(item))
        except ValueError as e:
            raise RecordError(f"{where(i)}: {kind}: {e}") from None
    return records


def _binary_targets(obj: dict, key: str) -> dict[str, int]:
    """``obj[key]`` as a non-empty ``{answer: 0 | 1}`` mapping (ints only: ``true`` is not 1)."""
    targets = obj[key]
    if not isinstance(targets, dict):
        raise ValueError(f"field {key!r} must be an object, got {type(targets).__name__}")
    for answer, label in targets.items():
        if not answer.strip():
            raise ValueError(f"field {key!r} has an empty answer")
        if type(label) is not int or label not in (0, 1):
            raise ValueError(f"field {key!r}: answer {answer[:40]!r} has label {label!r}, expected 1 or 0")
    return dict(targets)


def _write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- HHH A/B


@dataclass(frozen=True)
class ABExample:
    """An HHH query with two candidate responses, ``better`` (target score 1) and ``worse`` (score 0)."""

    input: str
    better: str
    worse: str

    @classmethod
    def from_dict(cls, obj: dict) -> "ABExample":
        _check_keys(obj, ("input", "target_scores"), optional=())
        scores = _binary_targets(obj, "target_scores")
        if len(scores) != 2:
            raise ValueError(f"field 'target_scores' must hold exactly 2 responses, got {len(scores)}")
        if sorted(scores.values()) != [0, 1]:
            raise ValueError(f"field 'target_scores' must score one response 1 and the other 0, got {sorted(scores.values())}")
        better, worse = sorted(scores, key=scores.__getitem__, reverse=True)
        return cls(_text(obj, "input"), better, worse)

    def to_dict(self) -> dict:
        return {"input": self.input, "target_scores": {self.better: 1, self.worse: 0}}


def load_hhh(path: str | Path) -> list[ABExample]:
    """All examples of a BIG-bench ``hhh_alignment`` task file; errors name the example's index."""
    path = Path(path)
    doc = _read_json_document(path)
    if not isinstance(doc, dict) or "examples" not in doc:
        raise RecordError(f"{path}: expected a JSON object with an 'examples' list")
    if not isinstance(doc["examples"], list) or not doc["examples"]:
        raise RecordError(f"{path}: 'examples' must be a non-empty list")
    return _parse_each(doc["examples"], lambda i: f"{path}: examples[{i}]", ABExample.from_dict, "ABExample")


def write_hhh(path: str | Path, examples: list[ABExample], name: str = "hhh_alignment", description: str = "") -> None:
    _write_json(path, {"name": name, "description": description, "examples": [e.to_dict() for e in examples]})


# --------------------------------------------------------------------------------------------- TruthfulQA MC


@dataclass(frozen=True)
class MCQuestion:
    """A TruthfulQA question; ``mc1`` / ``mc2`` map answer strings to 1 (true) or 0 (false)."""

    question: str
    mc1: dict[str, int]
    mc2: dict[str, int]

    @classmethod
    def from_dict(cls, obj: dict) -> "MCQuestion":
        _check_keys(obj, ("question", "mc1_targets", "mc2_targets"), optional=())
        mc1, mc2 = _binary_targets(obj, "mc1_targets"), _binary_targets(obj, "mc2_targets")
        if sum(mc1.values()) != 1:
            raise ValueError(f"field 'mc1_targets' must have exactly one true answer, got {sum(mc1.values())}")
        for key, targets in (("mc1_targets", mc1), ("mc2_targets", mc2)):
            if 0 not in targets.values():
                raise ValueError(f"field {key!r} has no false answer")
        if 1 not in mc2.values():
            raise ValueError("field 'mc2_targets' has no true answer")
        return cls(_text(obj, "question"), mc1, mc2)

    def to_dict(self) -> dict:
        return {"question": self.question, "mc1_targets": dict(self.mc1), "mc2_targets": dict(self.mc2)}

    @staticmethod
    def split(targets: dict[str, int]) -> tuple[list[str], list[str]]:
        """``(true answers, false answers)`` of ``mc1`` or ``mc2``, in file order."""
        return [a for a, y in targets.items() if y == 1], [a for a, y in targets.items() if y == 0]


def load_truthfulqa_mc(path: str | Path) -> list[MCQuestion]:
    """All questions of a TruthfulQA ``mc_task.json``; errors name the question's index."""
    path = Path(path)
    doc = _read_json_document(path)
    if not isinstance(doc, list) or not doc:
        raise RecordError(f"{path}: expected a non-empty JSON list of questions, got {type(doc).__name__}")
    return _parse_each(doc, lambda i: f"{path}: question[{i}]", MCQuestion.from_dict, "MCQuestion")


def write_truthfulqa_mc(path: str | Path, questions: list[MCQuestion]) -> None:
    _write_json(path, [q.to_dict() for q in questions])


# --------------------------------------------------------------------------------------------- HH-RLHF

# A turn starts at "\n\nHuman:" or "\n\nAssistant:"; the space after the colon is optional because
# some HH-RLHF transcripts end in an empty "\n\nAssistant:" turn.
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> tuple[Turn, ...]:
    """Split an HH-RLHF transcript into turns (roles ``user`` / ``assistant``; contents verbatim).

    The transcript must start with a Human turn and end with an Assistant turn; consecutive turns of
    one role (rare in HH-RLHF) are kept as they are. Raises ``ValueError`` otherwise.
    """
    if not text.startswith("\n\nHuman:"):
        raise ValueError(f"transcript must start with '\\n\\nHuman: ', got {text[:30]!r}")
    pieces = _HH_TURN.split(text)  # ["", role, content, role, content, ...]
    turns = tuple(Turn(_HH_ROLES[role], content) for role, content in zip(pieces[1::2], pieces[2::2]))
    if not any(t.role == "assistant" for t in turns):
        raise ValueError("transcript has no Assistant turn")
    if turns[-1].role != "assistant":
        raise ValueError("transcript ends with a Human turn, not an Assistant response")
    return turns


@dataclass(frozen=True)
class HHPair:
    """An HH-RLHF comparison: ``context`` (the turns before the final Assistant turn) and two responses.

    ``contexts_differ`` is True when the two transcripts differ before their final Assistant turn; the
    ``context`` is then the chosen transcript's (see :func:`load_hh_rlhf`).
    """

    context: tuple[Turn, ...]  # starts with a user turn, ends with the turn the responses answer
    chosen: str
    rejected: str
    contexts_differ: bool = False

    @classmethod
    def from_dict(cls, obj: dict, on_mismatch: Literal["keep_chosen", "raise"] = "keep_chosen") -> "HHPair":
        _check_keys(obj, ("chosen", "rejected"), optional=())
        turns = {}
        for key in ("chosen", "rejected"):
            if not isinstance(obj[key], str):
                raise ValueError(f"field {key!r} must be a string, got {type(obj[key]).__name__}")
            try:
                turns[key] = parse_hh_transcript(obj[key])
            except ValueError as e:
                raise ValueError(f"field {key!r}: {e}") from None
        context, rejected_context = turns["chosen"][:-1], turns["rejected"][:-1]
        differ = context != rejected_context
        if differ and on_mismatch == "raise":
            raise ValueError("the chosen and rejected transcripts differ before their final Assistant turn")
        return cls(context, turns["chosen"][-1].content, turns["rejected"][-1].content, differ)


def load_hh_rlhf(path: str | Path, on_mismatch: Literal["keep_chosen", "raise"] = "keep_chosen") -> list[HHPair]:
    """All pairs of an HH-RLHF JSONL file.

    When the two transcripts of a line differ before the final Assistant turn, ``"keep_chosen"`` keeps
    the pair with the chosen transcript's context and marks it ``contexts_differ`` (count them with
    ``sum(p.contexts_differ for p in pairs)``, and filter them out if the comparison must be strict);
    ``"raise"`` rejects the file at that line. Pairs with identical responses are kept (metrics count
    them as ties).
    """
    if on_mismatch not in ("keep_chosen", "raise"):
        raise ValueError(f"on_mismatch must be 'keep_chosen' or 'raise', got {on_mismatch!r}")
    path = Path(path)
    pairs = []
    for where, obj in iter_json_objects(path):
        try:
            pairs.append(HHPair.from_dict(obj, on_mismatch))
        except ValueError as e:
            raise RecordError(f"{where}: HHPair: {e}") from None
    if not pairs:
        raise RecordError(f"{path}: no HHPair records")
    return pairs


# --------------------------------------------------------------------------------------------- Vicuna / MT-bench


@dataclass(frozen=True)
class InstructionQuestion:
    """A Vicuna / MT-bench question; ``text`` is its first turn (MT-bench follow-ups in ``later_turns``)."""

    question_id: int
    category: str
    text: str
    later_turns: tuple[str, ...] = ()
    reference: tuple[str, ...] = ()  # MT-bench reference answers, one per turn ("" where none)

    @classmethod
    def from_dict(cls, obj: dict) -> "InstructionQuestion":
        _check_keys(obj, ("question_id", "category", "turns"), optional=("reference",))
        qid = obj["question_id"]
        if type(qid) is not int:
            raise ValueError(f"field 'question_id' must be an integer, got {type(qid).__name__}")
        turns, reference = obj["turns"], obj.get("reference", [])
        if not isinstance(turns, list) or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError("field 'turns' must be a list of non-empty strings")
        if not turns:
            raise ValueError("field 'turns' is empty")
        # one reference per turn; MT-bench leaves some empty ("" = no reference for that turn)
        if not isinstance(reference, list) or not all(isinstance(r, str) for r in reference):
            raise ValueError("field 'reference' must be a list of strings")
        return cls(qid, _text(obj, "category"), turns[0], tuple(turns[1:]), tuple(reference))


def load_questions(path: str | Path) -> list[InstructionQuestion]:
    """All questions of a Vicuna / MT-bench ``question.jsonl``; question ids must be unique."""
    path = Path(path)
    questions, seen = [], {}
    for where, obj in iter_json_objects(path):
        try:
            question = InstructionQuestion.from_dict(obj)
        except ValueError as e:
            raise RecordError(f"{where}: InstructionQuestion: {e}") from None
        if question.question_id in seen:
            raise RecordError(f"{where}: question_id {question.question_id} already used at {seen[question.question_id]}")
        seen[question.question_id] = where
        questions.append(question)
    if not questions:
        raise RecordError(f"{path}: no InstructionQuestion records")
    return questions
