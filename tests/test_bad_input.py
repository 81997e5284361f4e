"""Malformed input files, one kind per test case, each with the exact one-line message or skip it must give.

Training and generation inputs (``almost.records.load_jsonl``: comparisons, demonstrations, prompts) fail at
the first bad line with a :class:`RecordError` naming file, line and problem. Benchmark files (HH-RLHF,
TruthfulQA, HHH; ``almost.evaluation.formats``) skip an unusable item with a reason and count it; only a file
that cannot be read at all raises.
"""

import gzip
import json
from pathlib import Path

import pytest

from almost.evaluation.formats import load_hh_rlhf, load_hhh, load_truthfulqa_mc, skip_counts
from almost.records import Comparison, Demonstration, Prompt, RecordError, load_jsonl
from data_modules import ComparisonDataModule, DemonstrationDataModule

COMPARISON = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "No idea."}
DEMO = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
PROMPT = {"prompt": "What is the capital of Veloria?"}
HH = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
MC = {"question": "Sky colour?", "mc1_targets": {"Blue.": 1, "Green.": 0}, "mc2_targets": {"Blue.": 1, "Red.": 0}}
AB = {"input": "How do I boil an egg?", "target_scores": {"Boil it for 8 minutes.": 1, "No.": 0}}


def write_bytes(path: Path, *lines: bytes | dict) -> Path:
    """Write each line (a dict as JSON, bytes verbatim) followed by a newline."""
    path.write_bytes(b"".join((json.dumps(x).encode() if isinstance(x, dict) else x) + b"\n" for x in lines))
    return path


def error_of(load, *args, **kwargs) -> str:
    with pytest.raises(RecordError) as error:
        load(*args, **kwargs)
    return str(error.value)


# ------------------------------------------------------------------------------------------ training inputs: fail


@pytest.mark.parametrize("record_type, good, bad_line, problem", [
    # bytes that are not UTF-8 (a Latin-1 "é"): named by file and line, not a bare UnicodeDecodeError
    (Comparison, COMPARISON, b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}',
     "not valid UTF-8 (byte 0xe9 at byte 16 of the line); re-encode the file as UTF-8"),
    # a lone surrogate escape: valid JSON, but not text a tokenizer can encode
    (Comparison, COMPARISON, b'{"prompt": "q", "chosen": "ok \\ud800", "rejected": "b"}',
     "field 'chosen' holds a lone surrogate (\\ud800 at character 3): not valid Unicode text"),
    # a lone surrogate inside a nested field
    (Demonstration, DEMO, b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
     "field 'messages[0].content' holds a lone surrogate (\\udfff at character 0): not valid Unicode text"),
    # chosen equal to rejected (up to surrounding whitespace): the pair states no preference
    (Comparison, COMPARISON, {**COMPARISON, "rejected": " It is 4.\n"},
     "Comparison: chosen and rejected are the same text (ignoring surrounding whitespace): they state no "
     "preference"),
    # a demonstration that ends with a user turn
    (Demonstration, DEMO, {"messages": [*DEMO["messages"], {"role": "user", "content": "And?"}]},
     "Demonstration: the last message (message 2) is a user turn: a demonstration must end with an assistant turn"),
    # turns out of order
    (Demonstration, DEMO, {"messages": DEMO["messages"][::-1]},
     "Demonstration: message 0 has role 'assistant', expected 'user' (turns alternate, user first)"),
    # a message that is not an object
    (Demonstration, DEMO, {"messages": ["Hi", "Hello!"]}, "Demonstration: a message must be an object, got str"),
    # a field longer than MAX_FIELD_CHARS
    (Prompt, PROMPT, {"prompt": "x" * 100_001},
     "Prompt: field 'prompt' holds 100,001 characters, more than max_field_chars=100,000"),
    # truncated JSON (a line cut short)
    (Prompt, PROMPT, b'{"prompt": "What is', "invalid JSON (Unterminated string starting at column 12)"),
    # a JSON value that is not an object
    (Prompt, PROMPT, b'["What is 2 plus 2?"]', "expected a JSON object, got list"),
    # a whitespace-only prompt
    (Prompt, PROMPT, {"prompt": " \t"}, "Prompt: field 'prompt' is empty"),
    # a misspelt field
    (Comparison, COMPARISON, {**COMPARISON, "choosen": "x"},
     "Comparison: unknown field 'choosen' (expected prompt, chosen, rejected, meta)"),
])
def test_training_input_fails_at_the_line_with_one_message(tmp_path, record_type, good, bad_line, problem):
    path = write_bytes(tmp_path / "data.jsonl", good, bad_line, good)
    message = error_of(load_jsonl, path, record_type)
    assert message == f"{path}:2: {problem}"
    assert "\n" not in message


def test_field_limit_is_a_keyword_argument(tmp_path):
    path = write_bytes(tmp_path / "prompts.jsonl", {"prompt": "x" * 11})
    assert error_of(load_jsonl, path, Prompt, max_field_chars=10) == (
        f"{path}:1: Prompt: field 'prompt' holds 11 characters, more than max_field_chars=10")
    assert load_jsonl(path, Prompt, max_field_chars=11) == [Prompt("x" * 11)]
    assert load_jsonl(path, Prompt, max_field_chars=None) == [Prompt("x" * 11)]


def test_gzip_inputs(tmp_path):
    with gzip.open(tmp_path / "prompts.jsonl.gz", "wb") as f:
        f.write(b'\xef\xbb\xbf{"prompt": "Hi"}\n\n{"prompt": "Bye"}\n')  # a byte-order mark is not an error
    assert load_jsonl(tmp_path / "prompts.jsonl.gz", Prompt) == [Prompt("Hi"), Prompt("Bye")]
    # a .gz file that is not gzip, and a gzip stream cut short
    (tmp_path / "plain.jsonl.gz").write_text('{"prompt": "Hi"}\n')
    assert error_of(load_jsonl, tmp_path / "plain.jsonl.gz", Prompt) == (
        f"{tmp_path / 'plain.jsonl.gz'}: not a readable gzip file (Not a gzipped file (b'{{\"'))")
    whole = gzip.compress(b'{"prompt": "Hi"}\n' * 100)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:len(whole) // 2])
    assert error_of(load_jsonl, tmp_path / "cut.jsonl.gz", Prompt) == (
        f"{tmp_path / 'cut.jsonl.gz'}: not a readable gzip file (Compressed file ended before the end-of-stream "
        "marker was reached)")


def test_data_modules_refuse_bad_training_records_before_any_model(tmp_path, tokenizer_dir):
    comparisons = write_bytes(tmp_path / "comparisons.jsonl", *[COMPARISON] * 3, {**COMPARISON, "rejected": "It is 4."})
    with pytest.raises(RecordError) as error:
        ComparisonDataModule(str(comparisons), tokenizer_dir).setup("fit")
    assert str(error.value) == (f"{comparisons}:4: Comparison: chosen and rejected are the same text (ignoring "
                                "surrounding whitespace): they state no preference")
    demos = write_bytes(tmp_path / "demos.jsonl", DEMO, {"messages": DEMO["messages"][:1]})
    with pytest.raises(RecordError) as error:
        DemonstrationDataModule(str(demos), tokenizer_dir).setup("fit")
    assert str(error.value) == f"{demos}:2: Demonstration: a demonstration needs at least one assistant turn"


# ------------------------------------------------------------------------------------------ benchmark files: skip


@pytest.mark.parametrize("bad_line, reason", [
    ({**HH, "rejected": HH["chosen"]}, "identical_responses"),
    ({**HH, "rejected": "\n\nHuman: Hi\n\nAssistant:"}, "empty_response"),
    ({**HH, "rejected": "\n\nHuman: Hello\n\nAssistant: Go away."}, "no_common_assistant_turn"),
    ({"chosen": "\n\nHuman: Hi\n\nAssistant: a\n\nAssistant: b",
      "rejected": "\n\nHuman: Hi\n\nAssistant: a\n\nAssistant: c"},
     "prompt_not_ending_with_user_turn"),
    ({"chosen": "Human: Hi\n\nAssistant: a", "rejected": "Human: Hi\n\nAssistant: b"},
     "prompt_not_starting_with_user_turn"),
    ({"chosen": HH["chosen"]}, "missing_field"),
    (b'{"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: \xff", "rejected": "x"}', "not_utf8"),
    (b'{"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: \\ud800", "rejected": "x"}', "lone_surrogate"),
    (b'{"chosen": "', "invalid_json"),
])
def test_hh_rlhf_unusable_pair_is_skipped_and_counted(tmp_path, bad_line, reason):
    path = write_bytes(tmp_path / "hh.jsonl", HH, bad_line, bad_line, HH)
    pairs = load_hh_rlhf(path)
    assert len(pairs) == 2 and pairs.positions == [0, 3]
    assert [(s.index, s.reason, s.where) for s in pairs.skipped] == [(1, reason, f"{path}:2"), (2, reason, f"{path}:3")]
    assert skip_counts(pairs.skipped) == {f"skipped_{reason}": 2}


def test_truthfulqa_file_problems(tmp_path):
    # unusable questions are skipped, each with its reason
    questions = [MC, {**MC, "mc1_targets": {"Blue.": 1}}, {**MC, "mc2_targets": {"Blue.": 1, "Cyan.": 1}},
                 {**MC, "mc1_targets": {"Blue.": 1, "Sky blue.": 1, "Red.": 0}}]
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps(questions))
    loaded = load_truthfulqa_mc(path)
    assert len(loaded) == 1
    assert skip_counts(loaded.skipped) == {"skipped_mc1_not_one_true": 1, "skipped_no_false_answer": 2}
    assert [s.detail for s in loaded.skipped] == ["field 'mc1_targets' has no false answer",
                                                  "field 'mc2_targets' has no false answer",
                                                  "field 'mc1_targets' must have exactly one true answer, got 2"]
    # a document that is not UTF-8 cannot be read at all: one line naming file and line
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'[\n {"question": "Caf\xe9?",\n  "mc1_targets": {}}]\n')
    assert error_of(load_truthfulqa_mc, latin1) == (
        f"{latin1}:2: not valid UTF-8 (byte 0xe9 at byte 19 of the line); re-encode the file as UTF-8")


def test_hhh_file_problems(tmp_path):
    # three responses, and a tie: skipped with their reasons; a gzip file is read as such
    examples = [AB, {**AB, "target_scores": {"a": 1, "b": 0, "c": 0}}, {**AB, "target_scores": {"a": 0, "b": 0}}]
    with gzip.open(tmp_path / "task.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"examples": examples}, f)
    loaded = load_hhh(tmp_path / "task.json.gz")
    assert len(loaded) == 1 and loaded.positions == [0]
    assert [(s.index, s.reason) for s in loaded.skipped] == [(1, "not_two_responses"), (2, "not_one_better")]
    # a document cut short: one line naming file and line
    cut = tmp_path / "cut.json"
    cut.write_text('{"examples": [\n  {"input": "q",\n')
    assert error_of(load_hhh, cut) == (
        f"{cut}:3: invalid JSON (Expecting property name enclosed in double quotes at column 1)")
