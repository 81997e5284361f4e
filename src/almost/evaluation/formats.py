"""Loaders (and writers) for the evaluation sets of the paper's section 3: public files as they are.

A loader reads every item of a file and keeps the usable ones; an unusable item (a malformed JSON line, a
missing field, a pair that states no preference, ...) is skipped, never fatal, and reported: the result is a
:class:`Loaded` list of records whose ``skipped`` lists each left-out item as a :class:`Skipped` (its index,
a short ``reason`` such as ``identical_responses``, where it is and the problem in words). Only a file that
cannot be read at all (missing, not gzip, not JSON, not UTF-8, wrong top-level shape) or that holds no
usable item raises :class:`~almost.records.RecordError`. ``.gz`` files are read through gzip.

Formats::

    HHH A/B (BIG-bench hhh_alignment task.json)
        {"examples": [{"input": str, "target_scores": {response: 1, other_response: 0}}, ...], ...}
        other top-level keys (name, description, canary, ...) are task metadata and are ignored.
    TruthfulQA multiple choice (mc_task.json)
        [{"question": str, "mc1_targets": {answer: 0 | 1, ...}, "mc2_targets": {answer: 0 | 1, ...}}, ...]
        mc1 has exactly one true answer; mc1 and mc2 each have at least one false answer, mc2 at least one true.
    HH-RLHF preferences (JSONL), split by :func:`split_hh_pair`
        {"chosen": transcript, "rejected": transcript}, transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..."
    Vicuna / MT-bench questions (JSONL)
        {"question_id": int, "category": str, "turns": [str, ...], "reference": [str, ...] (MT-bench only)}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from almost.records import (IDENTICAL_RESPONSES, RecordError, SchemaError, Turn, _check_keys, _text, check_unicode,
                            invalid_json, read_text, same_text, scan_jsonl)

# --------------------------------------------------------------------------------------------- skipping


@dataclass(frozen=True)
class Skipped:
    """An item left out of an evaluation set.

    ``index``: its position among the file's items (JSONL: non-blank lines; JSON: list entries), from 0; a
    DataModule joining several files renumbers it to the position in the whole set. ``reason``: a short name
    (counted as the ``skipped_<reason>`` metric); ``where``: ``file:line`` or ``file: examples[i]``;
    ``detail``: the problem in words.
    """

    index: int
    reason: str
    where: str
    detail: str


class Loaded(list):
    """The usable records of a file, in file order (a plain list), with ``positions`` (each record's index
    among the file's items, skipped ones counted) and ``skipped`` (the items left out, in file order)."""

    def __init__(self, records: Iterable = (), positions: Iterable[int] | None = None,
                 skipped: Iterable[Skipped] = ()) -> None:
        super().__init__(records)
        self.positions = list(range(len(self))) if positions is None else list(positions)
        self.skipped = list(skipped)
        assert len(self.positions) == len(self), "one position per record"

    @property
    def n_items(self) -> int:
        """Every item of the file: the records and the skipped ones."""
        return len(self) + len(self.skipped)


def skip_counts(skipped: Sequence[Skipped]) -> dict[str, int]:
    """``{"skipped_<reason>": count}`` for every reason that occurs, sorted by reason."""
    counts: dict[str, int] = {}
    for skip in skipped:
        counts[skip.reason] = counts.get(skip.reason, 0) + 1
    return {f"skipped_{reason}": counts[reason] for reason in sorted(counts)}


def _collect(items: Iterable[tuple[int, str, Any]], parse: Callable[[dict, str], Any], path: Path,
             kind: str) -> Loaded:
    """``parse(item, where)`` every ``(index, where, item)``; a :class:`SchemaError` (raised, or given in place of
    the item by ``scan_jsonl``) skips the item. Raises :class:`RecordError` when no item is usable."""
    records, positions, skipped = [], [], []
    for index, where, item in items:
        try:
            if isinstance(item, SchemaError):
                raise item
            if not isinstance(item, dict):
                raise SchemaError("not_an_object", f"expected a JSON object, got {type(item).__name__}")
            check_unicode(item)
            records.append(parse(item, where))
            positions.append(index)
        except SchemaError as e:
            skipped.append(Skipped(index, e.reason, where, str(e)))
    if not records:
        if not skipped:
            raise RecordError(f"{path}: no {kind} records")
        reasons = ", ".join(f"{name.removeprefix('skipped_')} {n}" for name, n in skip_counts(skipped).items())
        raise RecordError(f"{path}: no usable {kind} records, all {len(skipped)} skipped ({reasons}); "
                          f"first: {skipped[0].where}: {skipped[0].detail}")
    return Loaded(records, positions, skipped)


# --------------------------------------------------------------------------------------------- helpers


def _read_json_document(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}: {invalid_json(e)}") from None


def _binary_targets(obj: dict, key: str) -> dict[str, int]:
    """``obj[key]`` as a non-empty ``{answer: 0 | 1}`` mapping (ints only: ``true`` is not 1)."""
    targets = obj[key]
    if not isinstance(targets, dict):
        raise SchemaError("wrong_type", f"field {key!r} must be an object, got {type(targets).__name__}")
    for answer, label in targets.items():
        if not answer.strip():
            raise SchemaError("empty_answer", f"field {key!r} has an empty answer")
        if type(label) is not int or label not in (0, 1):
            raise SchemaError("bad_label",
                              f"field {key!r}: answer {answer[:40]!r} has label {label!r}, expected 1 or 0")
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
            raise SchemaError("not_two_responses",
                              f"field 'target_scores' must hold exactly 2 responses, got {len(scores)}")
        if sorted(scores.values()) != [0, 1]:
            raise SchemaError("not_one_better", "field 'target_scores' must score one response 1 and the other 0, "
                              f"got {sorted(scores.values())}")
        better, worse = sorted(scores, key=scores.__getitem__, reverse=True)
        return cls(_text(obj, "input"), better, worse)

    def to_dict(self) -> dict:
        return {"input": self.input, "target_scores": {self.better: 1, self.worse: 0}}


def load_hhh(path: str | Path) -> Loaded:
    """The usable examples of a BIG-bench ``hhh_alignment`` task file (:class:`ABExample`); skips name
    ``file: examples[i]``."""
    path = Path(path)
    doc = _read_json_document(path)
    if not isinstance(doc, dict) or "examples" not in doc:
        raise RecordError(f"{path}: expected a JSON object with an 'examples' list")
    if not isinstance(doc["examples"], list) or not doc["examples"]:
        raise RecordError(f"{path}: 'examples' must be a non-empty list")
    items = ((i, f"{path}: examples[{i}]", example) for i, example in enumerate(doc["examples"]))
    return _collect(items, lambda obj, where: ABExample.from_dict(obj), path, "ABExample")


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
            raise SchemaError("mc1_not_one_true",
                              f"field 'mc1_targets' must have exactly one true answer, got {sum(mc1.values())}")
        for key, targets in (("mc1_targets", mc1), ("mc2_targets", mc2)):
            if 0 not in targets.values():
                raise SchemaError("no_false_answer", f"field {key!r} has no false answer")
        if 1 not in mc2.values():
            raise SchemaError("no_true_answer", "field 'mc2_targets' has no true answer")
        return cls(_text(obj, "question"), mc1, mc2)

    def to_dict(self) -> dict:
        return {"question": self.question, "mc1_targets": dict(self.mc1), "mc2_targets": dict(self.mc2)}

    @staticmethod
    def split(targets: dict[str, int]) -> tuple[list[str], list[str]]:
        """``(true answers, false answers)`` of ``mc1`` or ``mc2``, in file order."""
        return [a for a, y in targets.items() if y == 1], [a for a, y in targets.items() if y == 0]


def load_truthfulqa_mc(path: str | Path) -> Loaded:
    """The usable questions of a TruthfulQA ``mc_task.json`` (:class:`MCQuestion`); skips name
    ``file: question[i]``."""
    path = Path(path)
    doc = _read_json_document(path)
    if not isinstance(doc, list) or not doc:
        raise RecordError(f"{path}: expected a non-empty JSON list of questions, got {type(doc).__name__}")
    items = ((i, f"{path}: question[{i}]", question) for i, question in enumerate(doc))
    return _collect(items, lambda obj, where: MCQuestion.from_dict(obj), path, "MCQuestion")


def write_truthfulqa_mc(path: str | Path, questions: list[MCQuestion]) -> None:
    _write_json(path, [q.to_dict() for q in questions])


# --------------------------------------------------------------------------------------------- HH-RLHF

# A turn starts at "\n\nHuman:" or "\n\nAssistant:"; the space after the colon is optional because
# some HH-RLHF transcripts end in an empty "\n\nAssistant:" turn.
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_ASSISTANT = "\n\nAssistant:"


def parse_hh_transcript(text: str) -> tuple[Turn, ...]:
    """Split (part of) an HH-RLHF transcript into turns (roles ``user`` / ``assistant``; contents verbatim).

    The text must start with a Human turn (else ``SchemaError`` ``prompt_not_starting_with_user_turn``);
    "Human:" inside a line is text, and consecutive turns of one role (rare in HH-RLHF) are kept as they are.
    """
    if not text.startswith("\n\nHuman:"):
        raise SchemaError("prompt_not_starting_with_user_turn",
                          f"the transcript must start with '\\n\\nHuman: ', got {text[:30]!r}")
    pieces = _HH_TURN.split(text)  # ["", role, content, role, content, ...]
    return tuple(Turn(_HH_ROLES[role], content) for role, content in zip(pieces[1::2], pieces[2::2]))


def split_hh_pair(chosen: str, rejected: str) -> tuple[tuple[Turn, ...], str, str]:
    """``(prompt turns, chosen response, rejected response)`` of an HH-RLHF pair of transcripts.

    The rule: the shared prefix of the two transcripts up to their last common ``"\\n\\nAssistant:"`` marker is
    the prompt, parsed into turns; it must end with a user turn. Each response is the whole rest of its own
    transcript after that marker, stripped, and kept verbatim otherwise: when the transcripts differ before
    their final Assistant turn, or a response holds an extra "Human:" turn, the responses hold those turns
    as text (:attr:`HHPair.multi_turn`). Raises :class:`SchemaError` with reason ``identical_responses``,
    ``no_common_assistant_turn`` (they differ before the first Assistant turn), ``empty_response``,
    ``prompt_not_starting_with_user_turn`` or ``prompt_not_ending_with_user_turn``.
    """
    if same_text(chosen, rejected):
        raise SchemaError("identical_responses", IDENTICAL_RESPONSES)
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(HH_ASSISTANT, 0, shared)  # the whole marker lies inside the shared prefix
    if cut < 0:
        raise SchemaError("no_common_assistant_turn",
                          "the transcripts share no '\\n\\nAssistant:' turn: they differ before the first one")
    responses = chosen[cut + len(HH_ASSISTANT):].strip(), rejected[cut + len(HH_ASSISTANT):].strip()
    for key, response in zip(("chosen", "rejected"), responses):
        if not response:
            raise SchemaError("empty_response", f"the {key} response (after the last shared Assistant turn) is empty")
    if responses[0] == responses[1]:
        raise SchemaError("identical_responses", IDENTICAL_RESPONSES)
    prompt = parse_hh_transcript(chosen[:cut])
    if not prompt or prompt[-1].role != "user":
        raise SchemaError("prompt_not_ending_with_user_turn", "the shared prompt (up to the last shared Assistant "
                          "turn) ends with an Assistant turn, not a Human one")
    return prompt, responses[0], responses[1]


@dataclass(frozen=True)
class HHPair:
    """An HH-RLHF comparison split by :func:`split_hh_pair`: ``context`` (the shared prompt's turns) and the two
    responses to it."""

    context: tuple[Turn, ...]  # starts and ends with a user turn
    chosen: str
    rejected: str

    @property
    def multi_turn(self) -> bool:
        """Whether a response holds more than one turn (as "\\n\\nHuman: ..." text)."""
        return any(_HH_TURN.search(response) for response in (self.chosen, self.rejected))

    @classmethod
    def from_dict(cls, obj: dict) -> "HHPair":
        _check_keys(obj, ("chosen", "rejected"), optional=())
        for key in ("chosen", "rejected"):
            if not isinstance(obj[key], str):
                raise SchemaError("wrong_type", f"field {key!r} must be a string, got {type(obj[key]).__name__}")
        return cls(*split_hh_pair(obj["chosen"], obj["rejected"]))


def load_hh_rlhf(path: str | Path) -> Loaded:
    """The usable pairs of an HH-RLHF JSONL file (:class:`HHPair`); skips name ``file:line``."""
    path = Path(path)
    return _collect(scan_jsonl(path), lambda obj, where: HHPair.from_dict(obj), path, "HHPair")


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
            raise SchemaError("wrong_type", f"field 'question_id' must be an integer, got {type(qid).__name__}")
        turns, reference = obj["turns"], obj.get("reference", [])
        if not isinstance(turns, list) or not all(isinstance(t, str) and t.strip() for t in turns):
            raise SchemaError("wrong_type", "field 'turns' must be a list of non-empty strings")
        if not turns:
            raise SchemaError("empty_field", "field 'turns' is empty")
        # one reference per turn; MT-bench leaves some empty ("" = no reference for that turn)
        if not isinstance(reference, list) or not all(isinstance(r, str) for r in reference):
            raise SchemaError("wrong_type", "field 'reference' must be a list of strings")
        return cls(qid, _text(obj, "category"), turns[0], tuple(turns[1:]), tuple(reference))


def load_questions(path: str | Path) -> Loaded:
    """The usable questions of a Vicuna / MT-bench ``question.jsonl`` (:class:`InstructionQuestion`); a
    question whose id was used before is skipped (``duplicate_question_id``)."""
    path = Path(path)
    first_use: dict[int, str] = {}

    def parse(obj: dict, where: str) -> InstructionQuestion:
        question = InstructionQuestion.from_dict(obj)
        if question.question_id in first_use:
            raise SchemaError("duplicate_question_id",
                              f"question_id {question.question_id} already used at {first_use[question.question_id]}")
        first_use[question.question_id] = where
        return question

    return _collect(scan_jsonl(path), parse, path, "InstructionQuestion")
