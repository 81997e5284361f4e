"""Typed records and their JSONL schemas, one schema per record type.

Every line of a JSONL file is one JSON object. Loading validates every line and raises
:class:`RecordError` naming the file, the line number and the problem; nothing is dropped silently.
Blank lines are allowed (they hold no record).

Schemas (``meta`` is optional everywhere and defaults to ``{}``)::

    Comparison     {"prompt": str, "chosen": str, "rejected": str, "meta": {...}}
    Demonstration  {"messages": [{"role": "user" | "assistant", "content": str}, ...], "meta": {...}}
    Prompt         {"prompt": str, "meta": {...}}
    CorpusDocument {"text": str, "meta": {...}}

A demonstration starts with a user turn, alternates roles, and holds at least one assistant turn;
a single prompt/response pair is the one-turn case (``Demonstration.from_pair``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Type, TypeVar

ROLES = ("user", "assistant")


class RecordError(ValueError):
    """A record that does not match its schema; the message names file and line."""


def _check_keys(obj: dict, required: tuple[str, ...], optional: tuple[str, ...] = ("meta",)) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (expected {', '.join(required + optional)})")


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value


def _meta(obj: dict) -> dict:
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"field 'meta' must be an object, got {type(meta).__name__}")
    return meta


@dataclass(frozen=True)
class Comparison:
    """One preference pair: ``chosen`` is the better response to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: dict) -> "Comparison":
        _check_keys(obj, ("prompt", "chosen", "rejected"))
        return cls(_text(obj, "prompt"), _text(obj, "chosen"), _text(obj, "rejected"), _meta(obj))


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str

    @classmethod
    def from_dict(cls, obj: Any) -> "Turn":
        if not isinstance(obj, dict):
            raise ValueError(f"a message must be an object, got {type(obj).__name__}")
        _check_keys(obj, ("role", "content"), optional=())
        role = _text(obj, "role")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        return cls(role, _text(obj, "content"))


@dataclass(frozen=True)
class Demonstration:
    """A conversation whose assistant turns are the demonstrated behaviour."""

    messages: tuple[Turn, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("field 'messages' is empty")
        for i, turn in enumerate(self.messages):
            expected = ROLES[i % 2]
            if turn.role != expected:
                raise ValueError(f"message {i} has role {turn.role!r}, expected {expected!r} (turns alternate, user first)")
        if len(self.messages) < 2:
            raise ValueError("a demonstration needs at least one assistant turn")

    @classmethod
    def from_pair(cls, prompt: str, response: str, meta: dict | None = None) -> "Demonstration":
        return cls((Turn("user", prompt), Turn("assistant", response)), meta or {})

    @classmethod
    def from_dict(cls, obj: dict) -> "Demonstration":
        _check_keys(obj, ("messages",))
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise ValueError(f"field 'messages' must be a list, got {type(messages).__name__}")
        return cls(tuple(Turn.from_dict(m) for m in messages), _meta(obj))

    def to_dict(self) -> dict:
        return {"messages": [asdict(t) for t in self.messages], "meta": self.meta}


@dataclass(frozen=True)
class Prompt:
    """A user query, e.g. an initial query for self-play or a PPO prompt."""

    prompt: str
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: dict) -> "Prompt":
        _check_keys(obj, ("prompt",))
        return cls(_text(obj, "prompt"), _meta(obj))


@dataclass(frozen=True)
class CorpusDocument:
    """A pretraining document (plain text; the model learns every token of it)."""

    text: str
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: dict) -> "CorpusDocument":
        _check_keys(obj, ("text",))
        return cls(_text(obj, "text"), _meta(obj))


@dataclass(frozen=True)
class Responses:
    """Responses of several named configurations (e.g. ``L-faithful-3shot``) to one query; a response may be
    empty (the model wrote nothing), the ranking's post-validation drops it."""

    prompt: str
    responses: dict[str, str]
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: dict) -> "Responses":
        _check_keys(obj, ("prompt", "responses"))
        responses = obj["responses"]
        if not isinstance(responses, dict) or not responses:
            raise ValueError("field 'responses' must be a non-empty object (configuration -> response)")
        for config, text in responses.items():
            if not isinstance(text, str):
                raise ValueError(f"response of {config!r} must be a string, got {type(text).__name__}")
        return cls(_text(obj, "prompt"), dict(responses), _meta(obj))


Record = TypeVar("Record", Comparison, Demonstration, Prompt, CorpusDocument, Responses)
AnyRecord = Comparison | Demonstration | Prompt | CorpusDocument | Responses


def to_dict(record: AnyRecord) -> dict:
    return record.to_dict() if isinstance(record, Demonstration) else asdict(record)


def iter_json_objects(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", object)`` for every non-blank line of a JSONL file; a line that is not a
    JSON object raises :class:`RecordError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def iter_jsonl(path: str | Path, record_type: Type[Record]) -> Iterator[Record]:
    """Yield validated records from ``path``; raise :class:`RecordError` at the first bad line."""
    for where, obj in iter_json_objects(path):
        try:
            yield record_type.from_dict(obj)
        except ValueError as e:
            raise RecordError(f"{where}: {record_type.__name__}: {e}") from None


def load_jsonl(path: str | Path, record_type: Type[Record]) -> list[Record]:
    """All records of ``path``; raises :class:`RecordError` if any line is invalid or none is present."""
    records = list(iter_jsonl(path, record_type))
    if not records:
        raise RecordError(f"{path}: no {record_type.__name__} records")
    return records


def write_jsonl(path: str | Path, records: Iterable[AnyRecord]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(to_dict(record), ensure_ascii=False) + "\n")
