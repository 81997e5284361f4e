import json
from pathlib import Path

import pytest

from almost.evaluation.formats import (ABExample, HHPair, MCQuestion, load_hh_rlhf, load_hhh, load_questions,
                                       load_truthfulqa_mc, parse_hh_transcript, write_hhh, write_truthfulqa_mc)
from almost.records import RecordError, Turn
from tests.conftest import write_lines

SHARED_DATA = Path("/work/shared/data")

GOOD_AB = {"input": "How do I boil an egg?", "target_scores": {"Put it in boiling water for 8 minutes.": 1, "No.": 0}}
GOOD_MC = {"question": "What colour is the sky on a clear day?",
           "mc1_targets": {"Blue.": 1, "Green.": 0, "Red.": 0},
           "mc2_targets": {"Blue.": 1, "Usually blue.": 1, "Green.": 0}}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=1))
    return path


# ------------------------------------------------------------------------------------------ HHH A/B


def test_hhh_load_and_round_trip(tmp_path):
    flipped = {"input": "q2", "target_scores": {"worse one": 0, "better one": 1}}
    path = write_json(tmp_path / "task.json", {"name": "hhh", "canary": "x", "examples": [GOOD_AB, flipped]})
    examples = load_hhh(path)
    assert examples == [ABExample("How do I boil an egg?", "Put it in boiling water for 8 minutes.", "No."),
                        ABExample("q2", "better one", "worse one")]
    write_hhh(tmp_path / "out" / "task.json", examples)
    assert load_hhh(tmp_path / "out" / "task.json") == examples


@pytest.mark.parametrize("bad_example, problem", [
    ({"input": "q"}, "missing field 'target_scores'"),
    ({**GOOD_AB, "input": 3}, "field 'input' must be a string"),
    ({**GOOD_AB, "target_scores": ["a", "b"]}, "field 'target_scores' must be an object"),
    ({**GOOD_AB, "target_scores": {"a": 1, "b": 0, "c": 0}}, "exactly 2 responses, got 3"),
    ({**GOOD_AB, "target_scores": {"a": 1}}, "exactly 2 responses, got 1"),
    ({**GOOD_AB, "target_scores": {"a": 1, "b": 1}}, "one response 1 and the other 0"),
    ({**GOOD_AB, "target_scores": {"a": "1", "b": 0}}, "expected 1 or 0"),
    ({**GOOD_AB, "target_scores": {"a": True, "b": 0}}, "expected 1 or 0"),
    ({**GOOD_AB, "comment": "x"}, "unknown field 'comment'"),
    ("just a string", "expected a JSON object"),
])
def test_hhh_bad_example_names_file_and_index(tmp_path, bad_example, problem):
    path = write_json(tmp_path / "task.json", {"examples": [GOOD_AB, bad_example]})
    with pytest.raises(RecordError) as error:
        load_hhh(path)
    assert str(error.value).startswith(f"{path}: examples[1]: ")
    assert problem in str(error.value)


def test_hhh_bad_document(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "examples": [\n  {"input": "q",\n')
    with pytest.raises(RecordError, match=rf"^{broken}:4: invalid JSON"):
        load_hhh(broken)
    for doc, problem in (([GOOD_AB], "with an 'examples' list"), ({"examples": {}}, "non-empty list"),
                         ({"examples": []}, "non-empty list")):
        with pytest.raises(RecordError, match=problem):
            load_hhh(write_json(tmp_path / "task.json", doc))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_hhh(tmp_path / "nope.json")


# ------------------------------------------------------------------------------------------ TruthfulQA


def test_truthfulqa_load_split_and_round_trip(tmp_path):
    path = write_json(tmp_path / "mc_task.json", [GOOD_MC, {**GOOD_MC, "question": "Second?"}])
    questions = load_truthfulqa_mc(path)
    assert [q.question for q in questions] == ["What colour is the sky on a clear day?", "Second?"]
    assert MCQuestion.split(questions[0].mc1) == (["Blue."], ["Green.", "Red."])
    assert MCQuestion.split(questions[0].mc2) == (["Blue.", "Usually blue."], ["Green."])
    write_truthfulqa_mc(tmp_path / "out.json", questions)
    assert load_truthfulqa_mc(tmp_path / "out.json") == questions


@pytest.mark.parametrize("bad_question, problem", [
    ({"question": "q", "mc1_targets": GOOD_MC["mc1_targets"]}, "missing field 'mc2_targets'"),
    ({**GOOD_MC, "question": ["q"]}, "field 'question' must be a string"),
    ({**GOOD_MC, "mc1_targets": {"a": 1, "b": 1, "c": 0}}, "exactly one true answer, got 2"),
    ({**GOOD_MC, "mc1_targets": {"a": 0, "b": 0}}, "exactly one true answer, got 0"),
    ({**GOOD_MC, "mc1_targets": {"a": 1}}, "'mc1_targets' has no false answer"),
    ({**GOOD_MC, "mc2_targets": {"a": 0, "b": 0}}, "'mc2_targets' has no true answer"),
    ({**GOOD_MC, "mc2_targets": {"a": 1, "b": 2}}, "label 2, expected 1 or 0"),
    ({**GOOD_MC, "mc2_targets": [["a", 1]]}, "'mc2_targets' must be an object"),
    (7, "expected a JSON object, got int"),
])
def test_truthfulqa_bad_question_names_file_and_index(tmp_path, bad_question, problem):
    path = write_json(tmp_path / "mc_task.json", [GOOD_MC, GOOD_MC, bad_question])
    with pytest.raises(RecordError) as error:
        load_truthfulqa_mc(path)
    assert str(error.value).startswith(f"{path}: question[2]: ")
    assert problem in str(error.value)


def test_truthfulqa_bad_document(tmp_path):
    broken = tmp_path / "mc_task.json"
    broken.write_text('[\n {"question": "q"\n')
    with pytest.raises(RecordError, match=rf"^{broken}:3: invalid JSON"):
        load_truthfulqa_mc(broken)
    with pytest.raises(RecordError, match="expected a non-empty JSON list"):
        load_truthfulqa_mc(write_json(tmp_path / "obj.json", {"questions": [GOOD_MC]}))


# ------------------------------------------------------------------------------------------ HH-RLHF

CONTEXT = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?"


def test_hh_multi_turn_pair():
    pair = HHPair.from_dict({"chosen": CONTEXT + "\n\nAssistant: It is 4.", "rejected": CONTEXT + "\n\nAssistant: 5."})
    assert pair == HHPair((Turn("user", "Hi there"), Turn("assistant", "Hello! How can I help?"),
                           Turn("user", "What is 2+2?")), "It is 4.", "5.", contexts_differ=False)


def test_hh_transcript_details():
    # "Human:" inside a turn is text, not a turn boundary; an empty final Assistant turn is an empty response
    assert parse_hh_transcript("\n\nHuman: Say 'Human: hi'\n\nAssistant: Human: hi") == (
        Turn("user", "Say 'Human: hi'"), Turn("assistant", "Human: hi"))
    assert parse_hh_transcript("\n\nHuman: Anything?\n\nAssistant:") == (Turn("user", "Anything?"), Turn("assistant", ""))
    # multi-line turns keep their single newlines
    assert parse_hh_transcript("\n\nHuman: a\nb\n\nAssistant: c\nd")[1] == Turn("assistant", "c\nd")


def test_hh_contexts_differ_before_last_turn(tmp_path):
    same = {"chosen": CONTEXT + "\n\nAssistant: 4", "rejected": CONTEXT + "\n\nAssistant: 22"}
    differ = {"chosen": "\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken...\n\nHuman: Another\n\nAssistant: A",
              "rejected": "\n\nHuman: Tell me a joke\n\nAssistant: No.\n\nHuman: Another\n\nAssistant: B"}
    path = write_lines(tmp_path / "hh.jsonl", [same, differ])
    pairs = load_hh_rlhf(path)
    assert [p.contexts_differ for p in pairs] == [False, True]
    # the chosen transcript's context is kept, and each side's own final response
    assert pairs[1].context == (Turn("user", "Tell me a joke"), Turn("assistant", "Why did the chicken..."),
                                Turn("user", "Another"))
    assert (pairs[1].chosen, pairs[1].rejected) == ("A", "B")
    with pytest.raises(RecordError, match=rf"^{path}:2: HHPair: .*differ before their final Assistant turn"):
        load_hh_rlhf(path, on_mismatch="raise")
    # a different number of context turns is a mismatch too
    longer = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: y\n\nAssistant: c"}
    assert HHPair.from_dict(longer).contexts_differ


@pytest.mark.parametrize("bad_line, problem", [
    ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"', "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b"}, "missing field 'rejected'"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": 3}, "field 'rejected' must be a string"),
    ({"chosen": "\n\nHuman: hello", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "'chosen': transcript has no Assistant turn"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c"},
     "'rejected': transcript ends with a Human turn"),
    ({"chosen": "Human: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}, "must start with"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c", "prompt": "a"},
     "unknown field 'prompt'"),
])
def test_hh_bad_line_names_file_and_line(tmp_path, bad_line, problem):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    path = write_lines(tmp_path / "hh.jsonl", [good, "", bad_line])
    with pytest.raises(RecordError) as error:
        load_hh_rlhf(path)
    assert str(error.value).startswith(f"{path}:3: ")
    assert problem in str(error.value)


def test_hh_empty_file_and_bad_policy(tmp_path):
    with pytest.raises(RecordError, match="no HHPair records"):
        load_hh_rlhf(write_lines(tmp_path / "hh.jsonl", []))
    with pytest.raises(ValueError, match="on_mismatch"):
        load_hh_rlhf(tmp_path / "hh.jsonl", on_mismatch="skip")


# ------------------------------------------------------------------------------------------ Vicuna / MT-bench

GOOD_Q = {"question_id": 1, "category": "generic", "turns": ["How do I sleep better?"]}


def test_questions_load(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [GOOD_Q, {"question_id": 7, "category": "math", "turns": ["a", "b"],
                                                      "reference": ["r1", "r2"]}])
    first, second = load_questions(path)
    assert (first.question_id, first.category, first.text, first.later_turns) == (1, "generic", "How do I sleep better?", ())
    assert (second.text, second.later_turns, second.reference) == ("a", ("b",), ("r1", "r2"))


@pytest.mark.parametrize("bad_line, problem", [
    ({**GOOD_Q, "question_id": "2"}, "'question_id' must be an integer"),
    ({**GOOD_Q, "question_id": 1}, "question_id 1 already used at"),
    ({"question_id": 2, "turns": ["x"]}, "missing field 'category'"),
    ({**GOOD_Q, "question_id": 2, "turns": []}, "field 'turns' is empty"),
    ({**GOOD_Q, "question_id": 2, "turns": "x"}, "'turns' must be a list of non-empty strings"),
    ({**GOOD_Q, "question_id": 2, "turns": ["x", ""]}, "'turns' must be a list of non-empty strings"),
    ({**GOOD_Q, "question_id": 2, "answer": "x"}, "unknown field 'answer'"),
    ('{"question_id": 2,', "invalid JSON"),
])
def test_questions_bad_line_names_file_and_line(tmp_path, bad_line, problem):
    path = write_lines(tmp_path / "q.jsonl", [GOOD_Q, bad_line])
    with pytest.raises(RecordError) as error:
        load_questions(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert problem in str(error.value)


def test_vicuna_and_mt_bench_files():
    vicuna, mt_bench = SHARED_DATA / "vicuna" / "question.jsonl", SHARED_DATA / "mt_bench" / "question.jsonl"
    if not vicuna.is_file() or not mt_bench.is_file():
        pytest.skip(f"evaluation data not found under {SHARED_DATA} (see its SOURCES.md)")
    questions = load_questions(vicuna)
    assert len(questions) == 80
    assert [q.question_id for q in questions] == list(range(1, 81))
    assert len({q.category for q in questions}) == 9
    assert all(q.later_turns == () for q in questions)
    mt = load_questions(mt_bench)
    assert len(mt) == 80 and all(len(q.later_turns) == 1 for q in mt)
    assert len({q.category for q in mt}) == 8


def test_questions_reference_may_hold_empty_strings(tmp_path):
    # MT-bench gives some second turns no reference answer: an empty string keeps the turn alignment
    path = write_lines(tmp_path / "q.jsonl", [{**GOOD_Q, "turns": ["a", "b"], "reference": ["r1", ""]}])
    assert load_questions(path)[0].reference == ("r1", "")
    with pytest.raises(RecordError, match="'reference' must be a list of strings"):
        load_questions(write_lines(tmp_path / "bad.jsonl", [{**GOOD_Q, "reference": "r1"}]))
