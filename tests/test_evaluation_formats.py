import gzip
import json
from pathlib import Path

import pytest

from almost.evaluation.formats import (ABExample, HHPair, MCQuestion, Skipped, load_hh_rlhf, load_hhh, load_questions,
                                       load_truthfulqa_mc, parse_hh_transcript, skip_counts, split_hh_pair, write_hhh,
                                       write_truthfulqa_mc)
from almost.records import RecordError, SchemaError, Turn
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


@pytest.mark.parametrize("bad_example, reason, problem", [
    ({"input": "q"}, "missing_field", "missing field 'target_scores'"),
    ({**GOOD_AB, "input": 3}, "wrong_type", "field 'input' must be a string"),
    ({**GOOD_AB, "input": " "}, "empty_field", "field 'input' is empty"),
    ({**GOOD_AB, "target_scores": ["a", "b"]}, "wrong_type", "field 'target_scores' must be an object"),
    ({**GOOD_AB, "target_scores": {"a": 1, "b": 0, "c": 0}}, "not_two_responses", "exactly 2 responses, got 3"),
    ({**GOOD_AB, "target_scores": {"a": 1}}, "not_two_responses", "exactly 2 responses, got 1"),
    ({**GOOD_AB, "target_scores": {"a": 1, "b": 1}}, "not_one_better", "one response 1 and the other 0"),
    ({**GOOD_AB, "target_scores": {"a": "1", "b": 0}}, "bad_label", "expected 1 or 0"),
    ({**GOOD_AB, "target_scores": {"a": True, "b": 0}}, "bad_label", "expected 1 or 0"),
    ({**GOOD_AB, "target_scores": {"": 1, "b": 0}}, "empty_answer", "has an empty answer"),
    ({**GOOD_AB, "comment": "x"}, "unknown_field", "unknown field 'comment'"),
    ({**GOOD_AB, "input": "\ud800"}, "lone_surrogate", "field 'input' holds a lone surrogate"),
    ("just a string", "not_an_object", "expected a JSON object"),
])
def test_hhh_unusable_example_is_skipped_with_its_reason(tmp_path, bad_example, reason, problem):
    path = write_json(tmp_path / "task.json", {"examples": [GOOD_AB, bad_example, GOOD_AB]})
    examples = load_hhh(path)
    assert examples == [ABExample.from_dict(GOOD_AB)] * 2 and examples.positions == [0, 2]
    [skip] = examples.skipped
    assert (skip.index, skip.reason, skip.where) == (1, reason, f"{path}: examples[1]")
    assert problem in skip.detail


def test_hhh_bad_document(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "examples": [\n  {"input": "q",\n')
    with pytest.raises(RecordError, match=rf"^{broken}:4: invalid JSON"):
        load_hhh(broken)
    for doc, problem in (([GOOD_AB], "with an 'examples' list"), ({"examples": {}}, "non-empty list"),
                         ({"examples": []}, "non-empty list")):
        with pytest.raises(RecordError, match=problem):
            load_hhh(write_json(tmp_path / "task.json", doc))
    all_bad = write_json(tmp_path / "bad.json", {"examples": [{"input": "q"}, 3, {"input": "r"}]})
    with pytest.raises(RecordError) as error:
        load_hhh(all_bad)
    assert str(error.value) == (f"{all_bad}: no usable ABExample records, all 3 skipped (missing_field 2, "
                                f"not_an_object 1); first: {all_bad}: examples[0]: missing field 'target_scores'")
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


@pytest.mark.parametrize("bad_question, reason, problem", [
    ({"question": "q", "mc1_targets": GOOD_MC["mc1_targets"]}, "missing_field", "missing field 'mc2_targets'"),
    ({**GOOD_MC, "question": ["q"]}, "wrong_type", "field 'question' must be a string"),
    ({**GOOD_MC, "mc1_targets": {"a": 1, "b": 1, "c": 0}}, "mc1_not_one_true", "exactly one true answer, got 2"),
    ({**GOOD_MC, "mc1_targets": {"a": 0, "b": 0}}, "mc1_not_one_true", "exactly one true answer, got 0"),
    ({**GOOD_MC, "mc1_targets": {"a": 1}}, "no_false_answer", "'mc1_targets' has no false answer"),
    ({**GOOD_MC, "mc2_targets": {"a": 0, "b": 0}}, "no_true_answer", "'mc2_targets' has no true answer"),
    ({**GOOD_MC, "mc2_targets": {"a": 1, "b": 2}}, "bad_label", "label 2, expected 1 or 0"),
    ({**GOOD_MC, "mc2_targets": [["a", 1]]}, "wrong_type", "'mc2_targets' must be an object"),
    (7, "not_an_object", "expected a JSON object, got int"),
])
def test_truthfulqa_unusable_question_is_skipped_with_its_reason(tmp_path, bad_question, reason, problem):
    path = write_json(tmp_path / "mc_task.json", [GOOD_MC, GOOD_MC, bad_question])
    questions = load_truthfulqa_mc(path)
    assert len(questions) == 2 and questions.positions == [0, 1] and questions.n_items == 3
    [skip] = questions.skipped
    assert (skip.index, skip.reason, skip.where) == (2, reason, f"{path}: question[2]")
    assert problem in skip.detail


def test_truthfulqa_bad_document(tmp_path):
    broken = tmp_path / "mc_task.json"
    broken.write_text('[\n {"question": "q"\n')
    with pytest.raises(RecordError, match=rf"^{broken}:3: invalid JSON"):
        load_truthfulqa_mc(broken)
    with pytest.raises(RecordError, match="expected a non-empty JSON list"):
        load_truthfulqa_mc(write_json(tmp_path / "obj.json", {"questions": [GOOD_MC]}))


# ------------------------------------------------------------------------------------------ HH-RLHF

CONTEXT = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?"
CONTEXT_TURNS = (Turn("user", "Hi there"), Turn("assistant", "Hello! How can I help?"), Turn("user", "What is 2+2?"))


def test_hh_transcript_details():
    # "Human:" inside a turn is text, not a turn boundary; an empty final Assistant turn is an empty turn
    assert parse_hh_transcript("\n\nHuman: Say 'Human: hi'\n\nAssistant: Human: hi") == (
        Turn("user", "Say 'Human: hi'"), Turn("assistant", "Human: hi"))
    assert parse_hh_transcript("\n\nHuman: Anything?\n\nAssistant:") == (Turn("user", "Anything?"),
                                                                          Turn("assistant", ""))
    # multi-line turns keep their single newlines
    assert parse_hh_transcript("\n\nHuman: a\nb\n\nAssistant: c\nd")[1] == Turn("assistant", "c\nd")
    with pytest.raises(SchemaError, match="must start with") as error:
        parse_hh_transcript("Human: a\n\nAssistant: b")
    assert error.value.reason == "prompt_not_starting_with_user_turn"


@pytest.mark.parametrize("chosen, rejected, context, chosen_response, rejected_response", [
    # the usual pair: same context, one final Assistant turn each
    (CONTEXT + "\n\nAssistant: It is 4.", CONTEXT + "\n\nAssistant: 5.", CONTEXT_TURNS, "It is 4.", "5."),
    # an extra Human turn inside a response is kept in it, verbatim
    (CONTEXT + "\n\nAssistant: It is 4.\n\nHuman: Thanks!\n\nAssistant: Welcome.", CONTEXT + "\n\nAssistant: 5.",
     CONTEXT_TURNS, "It is 4.\n\nHuman: Thanks!\n\nAssistant: Welcome.", "5."),
    # transcripts that differ before the last turn: the prompt stops at the last shared Assistant marker
    ("\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken...\n\nHuman: Another\n\nAssistant: A",
     "\n\nHuman: Tell me a joke\n\nAssistant: No.\n\nHuman: Another\n\nAssistant: B",
     (Turn("user", "Tell me a joke"),), "Why did the chicken...\n\nHuman: Another\n\nAssistant: A",
     "No.\n\nHuman: Another\n\nAssistant: B"),
    # responses that start alike are cut at the marker, not where they part
    (CONTEXT + "\n\nAssistant: Sure, it is 4.", CONTEXT + "\n\nAssistant: Sure thing: 5.", CONTEXT_TURNS,
     "Sure, it is 4.", "Sure thing: 5."),
    # one transcript continues the other
    (CONTEXT + "\n\nAssistant: 4", CONTEXT + "\n\nAssistant: 4\n\nHuman: Sure?\n\nAssistant: No, 5", CONTEXT_TURNS,
     "4", "4\n\nHuman: Sure?\n\nAssistant: No, 5"),
    # surrounding whitespace of a response is stripped
    (CONTEXT + "\n\nAssistant:  It is 4.\n", CONTEXT + "\n\nAssistant:\n5.", CONTEXT_TURNS, "It is 4.", "5."),
])
def test_hh_split_rule(chosen, rejected, context, chosen_response, rejected_response):
    assert split_hh_pair(chosen, rejected) == (context, chosen_response, rejected_response)
    pair = HHPair.from_dict({"chosen": chosen, "rejected": rejected})
    assert pair == HHPair(context, chosen_response, rejected_response)
    assert pair.multi_turn == ("\n\nHuman:" in chosen_response + rejected_response)


@pytest.mark.parametrize("chosen, rejected, reason", [
    (CONTEXT + "\n\nAssistant: 4", CONTEXT + "\n\nAssistant: 4", "identical_responses"),
    (CONTEXT + "\n\nAssistant: 4", CONTEXT + "\n\nAssistant: 4 \n", "identical_responses"),
    (CONTEXT + "\n\nAssistant: 4", CONTEXT + "\n\nAssistant:", "empty_response"),
    (CONTEXT + "\n\nAssistant:  ", CONTEXT + "\n\nAssistant: 4", "empty_response"),
    ("\n\nHuman: a\n\nAssistant: b", "\n\nHuman: x\n\nAssistant: b", "no_common_assistant_turn"),
    ("\n\nHuman: a", "\n\nHuman: b", "no_common_assistant_turn"),
    ("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c", "\n\nHuman: a\n\nAssistant: b\n\nAssistant: d",
     "prompt_not_ending_with_user_turn"),
    ("Human: a\n\nAssistant: b", "Human: a\n\nAssistant: c", "prompt_not_starting_with_user_turn"),
])
def test_hh_unusable_pairs(chosen, rejected, reason):
    with pytest.raises(SchemaError) as error:
        split_hh_pair(chosen, rejected)
    assert error.value.reason == reason


def test_hh_file_skips_unusable_lines_and_counts_them(tmp_path):
    good = {"chosen": CONTEXT + "\n\nAssistant: 4", "rejected": CONTEXT + "\n\nAssistant: 22"}
    path = tmp_path / "hh.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps(good).encode(),
        b"",  # blank lines hold no item
        b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"',
        b"[1, 2]",
        json.dumps({"chosen": good["chosen"]}).encode(),
        json.dumps({**good, "rejected": 3}).encode(),
        json.dumps({**good, "prompt": "a"}).encode(),
        json.dumps({**good, "rejected": good["chosen"]}).encode(),
        b'{"chosen": "\xff", "rejected": "x"}',
        json.dumps({**good, "rejected": CONTEXT + "\n\nAssistant: \ud800"}).encode(),
        json.dumps(good).encode(),
    ]) + b"\n")
    pairs = load_hh_rlhf(path)
    assert pairs == [HHPair(CONTEXT_TURNS, "4", "22")] * 2 and pairs.positions == [0, 9]
    assert [(s.index, s.reason, s.where) for s in pairs.skipped] == [
        (1, "invalid_json", f"{path}:3"), (2, "not_an_object", f"{path}:4"), (3, "missing_field", f"{path}:5"),
        (4, "wrong_type", f"{path}:6"), (5, "unknown_field", f"{path}:7"), (6, "identical_responses", f"{path}:8"),
        (7, "not_utf8", f"{path}:9"), (8, "lone_surrogate", f"{path}:10")]
    assert pairs.skipped[6] == Skipped(7, "not_utf8", f"{path}:9", "not valid UTF-8 (byte 0xff at byte 13 of the "
                                       "line); re-encode the file as UTF-8")
    assert skip_counts(pairs.skipped) == {
        "skipped_identical_responses": 1, "skipped_invalid_json": 1, "skipped_lone_surrogate": 1,
        "skipped_missing_field": 1, "skipped_not_an_object": 1, "skipped_not_utf8": 1, "skipped_unknown_field": 1,
        "skipped_wrong_type": 1}


def test_hh_gzip_and_empty_files(tmp_path):
    good = {"chosen": CONTEXT + "\n\nAssistant: 4", "rejected": CONTEXT + "\n\nAssistant: 22"}
    with gzip.open(tmp_path / "hh.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(good) + "\n")
    assert load_hh_rlhf(tmp_path / "hh.jsonl.gz") == [HHPair(CONTEXT_TURNS, "4", "22")]
    (tmp_path / "plain.jsonl.gz").write_text(json.dumps(good) + "\n")
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'plain.jsonl.gz'}: not a readable gzip file"):
        load_hh_rlhf(tmp_path / "plain.jsonl.gz")
    with pytest.raises(RecordError, match="no HHPair records"):
        load_hh_rlhf(write_lines(tmp_path / "hh.jsonl", []))


# ------------------------------------------------------------------------------------------ Vicuna / MT-bench

GOOD_Q = {"question_id": 1, "category": "generic", "turns": ["How do I sleep better?"]}


def test_questions_load(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [GOOD_Q, {"question_id": 7, "category": "math", "turns": ["a", "b"],
                                                      "reference": ["r1", "r2"]}])
    first, second = load_questions(path)
    assert (first.question_id, first.category, first.text, first.later_turns) == (1, "generic", "How do I sleep better?", ())
    assert (second.text, second.later_turns, second.reference) == ("a", ("b",), ("r1", "r2"))


@pytest.mark.parametrize("bad_line, reason, problem", [
    ({**GOOD_Q, "question_id": "2"}, "wrong_type", "'question_id' must be an integer"),
    ({**GOOD_Q, "question_id": 1}, "duplicate_question_id", "question_id 1 already used at"),
    ({"question_id": 2, "turns": ["x"]}, "missing_field", "missing field 'category'"),
    ({**GOOD_Q, "question_id": 2, "turns": []}, "empty_field", "field 'turns' is empty"),
    ({**GOOD_Q, "question_id": 2, "turns": "x"}, "wrong_type", "'turns' must be a list of non-empty strings"),
    ({**GOOD_Q, "question_id": 2, "turns": ["x", ""]}, "wrong_type", "'turns' must be a list of non-empty strings"),
    ({**GOOD_Q, "question_id": 2, "answer": "x"}, "unknown_field", "unknown field 'answer'"),
    ('{"question_id": 2,', "invalid_json", "invalid JSON"),
])
def test_questions_unusable_line_is_skipped_with_its_reason(tmp_path, bad_line, reason, problem):
    path = write_lines(tmp_path / "q.jsonl", [GOOD_Q, bad_line])
    questions = load_questions(path)
    assert [q.question_id for q in questions] == [1]
    [skip] = questions.skipped
    assert (skip.index, skip.reason, skip.where) == (1, reason, f"{path}:2")
    assert problem in skip.detail


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
    with pytest.raises(RecordError, match="all 1 skipped .*'reference' must be a list of strings"):
        load_questions(write_lines(tmp_path / "bad.jsonl", [{**GOOD_Q, "reference": "r1"}]))
