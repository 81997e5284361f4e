"""Typed records and their JSONL schemas, one schema per record type.

Every line of a JSONL file is one JSON object. Loading validates every line and raises
:class:`RecordError` naming the file, the line number and the problem in one line; nothing is dropped
silently. Blank lines are allowed (they hold no record); a ``.gz`` file is read through gzip.

Schemas (``meta`` is optional everywhere and defaults to ``{}``)::

    Comparison     {"prompt": str, "chosen": str, "rejected": str, "meta": {...}}
    Demonstration  {"messages": [{"role": "user" | "assistant", "content": str}, ...], "meta": {...}}
    Prompt         {"prompt": str, "meta": {...}}
    CorpusDocument {"text": str, "meta": {...}}

A demonstration starts with a user turn, alternates roles, and ends with an assistant turn; a single
prompt/response pair is the one-turn case (``Demonstration.from_pair``). A comparison's chosen and rejected
responses differ (ignoring surrounding whitespace), as ``almost.feedback.build_comparisons`` makes them.

Besides the schema, every line must be UTF-8, hold no lone surrogate (a ``"\\ud800"`` escape without its
pair, which no tokenizer can encode), and no string longer than ``max_field_chars`` (default
:data:`MAX_FIELD_CHARS`; a longer one is usually lines glued together or binary junk).
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Type, TypeVar

ROLES = ("user", "assistant")
MAX_FIELD_CHARS = 100_000  # longest string a record may hold (load_jsonl's max_field_chars)


class RecordError(ValueError):
    """A record that does not match its schema; the message names file and line."""


class SchemaError(ValueError):
    """One record's problem. ``reason`` names it in a word or two (``missing_field``, ``identical_responses``)
    so that loaders which skip unusable records can count them; the message says it in full."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_keys(obj: dict, required: tuple[str, ...], optional: tuple[str, ...] = ("meta",)) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise SchemaError("missing_field", f"missing field {missing[0]!r}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise SchemaError("unknown_field", f"unknown field {unknown[0]!r} (expected {', '.join(required + optional)})")


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise SchemaError("wrong_type", f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SchemaError("empty_field", f"field {key!r} is empty")
    return value


def _meta(obj: dict) -> dict:
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise SchemaError("wrong_type", f"field 'meta' must be an object, got {type(meta).__name__}")
    return meta


def same_text(a: str, b: str) -> bool:
    """Two responses that state no preference: the same text, ignoring surrounding whitespace
    (the rule of ``almost.feedback.build_comparisons``)."""
    return a.strip() == b.strip()


IDENTICAL_RESPONSES = ("chosen and rejected are the same text (ignoring surrounding whitespace): they state no "
                       "preference")


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
        comparison = cls(_text(obj, "prompt"), _text(obj, "chosen"), _text(obj, "rejected"), _meta(obj))
        if same_text(comparison.chosen, comparison.rejected):
            raise SchemaError("identical_responses", IDENTICAL_RESPONSES)
        return comparison


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str

    @classmethod
    def from_dict(cls, obj: Any) -> "Turn":
        if not isinstance(obj, dict):
            raise SchemaError("wrong_type", f"a message must be an object, got {type(obj).__name__}")
        _check_keys(obj, ("role", "content"), optional=())
        role = _text(obj, "role")
        if role not in ROLES:
            raise SchemaError("unknown_role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        return cls(role, _text(obj, "content"))


@dataclass(frozen=True)
class Demonstration:
    """A conversation whose assistant turns are the demonstrated behaviour; it ends with an assistant turn."""

    messages: tuple[Turn, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.messages:
            raise SchemaError("empty_field", "field 'messages' is empty")
        for i, turn in enumerate(self.messages):
            expected = ROLES[i % 2]
            if turn.role != expected:
                raise SchemaError("roles_out_of_order", f"message {i} has role {turn.role!r}, expected {expected!r} "
                                  "(turns alternate, user first)")
        if len(self.messages) < 2:
            raise SchemaError("no_assistant_turn", "a demonstration needs at least one assistant turn")
        if self.messages[-1].role != "assistant":
            raise SchemaError("ends_with_user_turn", f"the last message (message {len(self.messages) - 1}) is a user "
                              "turn: a demonstration must end with an assistant turn")

    @classmethod
    def from_pair(cls, prompt: str, response: str, meta: dict | None = None) -> "Demonstration":
        return cls((Turn("user", prompt), Turn("assistant", response)), meta or {})

    @classmethod
    def from_dict(cls, obj: dict) -> "Demonstration":
        _check_keys(obj, ("messages",))
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise SchemaError("wrong_type", f"field 'messages' must be a list, got {type(messages).__name__}")
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
            raise SchemaError("wrong_type", "field 'responses' must be a non-empty object (configuration -> response)")
        for config, text in responses.items():
            if not isinstance(text, str):
                raise SchemaError("wrong_type", f"response of {config!r} must be a string, got {type(text).__name__}")
        return cls(_text(obj, "prompt"), dict(responses), _meta(obj))


Record = TypeVar("Record", Comparison, Demonstration, Prompt, CorpusDocument, Responses)
AnyRecord = Comparison | Demonstration | Prompt | CorpusDocument | Responses


def to_dict(record: AnyRecord) -> dict:
    return record.to_dict() if isinstance(record, Demonstration) else asdict(record)


# --------------------------------------------------------------------------------------------- reading lines


def open_binary(path: str | Path) -> BinaryIO:
    """``path`` opened for reading bytes, through gzip when its name ends in ``.gz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _not_utf8(byte: int, offset: int) -> str:
    """The problem of a line whose byte ``byte`` at ``offset`` (0-based, in the line) does not decode."""
    return f"not valid UTF-8 (byte 0x{byte:02x} at byte {offset + 1} of the line); re-encode the file as UTF-8"


def read_text(path: str | Path) -> str:
    """The whole of a UTF-8 text file (gzip when its name ends in ``.gz``; a byte-order mark is dropped);
    undecodable bytes raise :class:`RecordError` naming the file and the line."""
    path = Path(path)
    try:
        with open_binary(path) as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise RecordError(f"{path}: not a readable gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line_no = data.count(b"\n", 0, line_start) + 1
        raise RecordError(f"{path}:{line_no}: {_not_utf8(data[e.start], e.start - line_start)}") from None


def strings_of(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """``(field, string)`` for every string of a parsed JSON value, object keys included; ``field`` is its
    path in the value (``chosen``, ``messages[1].content``)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield where or key, key
            yield from strings_of(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings_of(item, f"{where}[{i}]")


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON text that may decode to a lone surrogate


def check_unicode(value: Any) -> None:
    """Raise :class:`SchemaError` ``lone_surrogate`` if a string of ``value`` holds a lone surrogate: JSON
    can write one (``"\\ud800"`` without its pair), but it is not Unicode text and tokenizers fail on it."""
    for where, text in strings_of(value):
        found = _SURROGATE.search(text)
        if found:
            raise SchemaError("lone_surrogate", f"field {where!r} holds a lone surrogate "
                              f"(\\u{ord(found.group()):04x} at character {found.start()}): not valid Unicode text")


def invalid_json(error: json.JSONDecodeError) -> str:
    """The problem of a JSON text that does not parse (without its line: callers name that)."""
    return f"invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno})"


def _parse_line(data: bytes, first_line: bool) -> dict | SchemaError:
    """One JSONL line as a JSON object, or the problem that makes it unusable."""
    try:
        text = data.decode("utf-8-sig" if first_line else "utf-8")
    except UnicodeDecodeError as e:
        return SchemaError("not_utf8", _not_utf8(data[e.start], e.start))
    try:
        obj = json.loads(text.rstrip("\r\n"))  # a line cut short fails on its end, not on the newline
    except json.JSONDecodeError as e:
        return SchemaError("invalid_json", invalid_json(e))
    if not isinstance(obj, dict):
        return SchemaError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text):  # rare: only then look at every string
        try:
            check_unicode(obj)
        except SchemaError as e:
            return e
    return obj


def scan_jsonl(path: str | Path) -> Iterator[tuple[int, str, dict | SchemaError]]:
    """``(item, "file:line", object or problem)`` for every non-blank line of a JSONL file (``.gz``: through
    gzip). ``item`` counts the non-blank lines from 0; a line that is not UTF-8, not JSON, not an object or
    holds a lone surrogate comes as a :class:`SchemaError`, for the caller to raise or to skip."""
    path = Path(path)
    item = 0
    try:
        with open_binary(path) as f:
            for line_no, data in enumerate(f, start=1):
                if data.strip():
                    yield item, f"{path}:{line_no}", _parse_line(data, first_line=line_no == 1)
                    item += 1
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise RecordError(f"{path}: not a readable gzip file ({e})") from None


def iter_json_objects(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", object)`` for every non-blank line of a JSONL file; a line that is not a
    JSON object (see :func:`scan_jsonl`) raises :class:`RecordError` naming file and line."""
    for _, where, obj in scan_jsonl(path):
        if isinstance(obj, SchemaError):
            raise RecordError(f"{where}: {obj}")
        yield where, obj


def _check_lengths(obj: dict, max_field_chars: int | None) -> None:
    if max_field_chars is None:
        return
    for where, text in strings_of(obj):
        if len(text) > max_field_chars:
            raise SchemaError("field_too_long", f"field {where!r} holds {len(text):,} characters, more than "
                              f"max_field_chars={max_field_chars:,}")


def iter_jsonl(path: str | Path, record_type: Type[Record],
               max_field_chars: int | None = MAX_FIELD_CHARS) -> Iterator[Record]:
    """Yield validated records from ``path``; raise :class:`RecordError` at the first bad line.
    ``max_field_chars``: longest string a record may hold (``None``: no limit)."""
    for where, obj in iter_json_objects(path):
        try:
            _check_lengths(obj, max_field_chars)
            yield record_type.from_dict(obj)
        except ValueError as e:
            raise RecordError(f"{where}: {record_type.__name__}: {e}") from None


def load_jsonl(path: str | Path, record_type: Type[Record], *,
               max_field_chars: int | None = MAX_FIELD_CHARS) -> list[Record]:
    """All records of ``path``; raises :class:`RecordError` if any line is invalid or none is present
    (see the module docstring; ``max_field_chars=None`` lifts the length limit)."""
    records = list(iter_jsonl(path, record_type, max_field_chars))
    if not records:
        raise RecordError(f"{path}: no {record_type.__name__} records")
    return records


def write_jsonl(path: str | Path, records: Iterable[AnyRecord]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(to_dict(record), ensure_ascii=False) + "\n")
