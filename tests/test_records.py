import pytest

from almost.records import Comparison, Demonstration, Prompt, RecordError, Turn, load_jsonl, write_jsonl
from tests.conftest import write_lines

GOOD_COMPARISON = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "No idea."}
GOOD_DEMO = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def test_round_trip(tmp_path):
    records = [Comparison("p", "c", "r", {"configs": ["A", "B"]}), Comparison("p2", "c2", "r2")]
    write_jsonl(tmp_path / "c.jsonl", records)
    assert load_jsonl(tmp_path / "c.jsonl", Comparison) == records
    demos = [Demonstration.from_pair("q", "a"), Demonstration((Turn("user", "a"), Turn("assistant", "b"),
                                                              Turn("user", "c"), Turn("assistant", "d")))]
    write_jsonl(tmp_path / "d.jsonl", demos)
    assert load_jsonl(tmp_path / "d.jsonl", Demonstration) == demos
    write_jsonl(tmp_path / "p.jsonl", [Prompt("q")])
    assert load_jsonl(tmp_path / "p.jsonl", Prompt) == [Prompt("q")]


def test_blank_lines_are_not_records(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [GOOD_COMPARISON, "", "   ", GOOD_COMPARISON])
    assert len(load_jsonl(path, Comparison)) == 2


@pytest.mark.parametrize("bad_line, record_type, problem", [
    ('{"prompt": "x", "chosen": "y"', Comparison, "invalid JSON"),
    ('["prompt"]', Comparison, "expected a JSON object"),
    ({"prompt": "x", "chosen": "y"}, Comparison, "missing field 'rejected'"),
    ({**GOOD_COMPARISON, "chosen": "  "}, Comparison, "field 'chosen' is empty"),
    ({**GOOD_COMPARISON, "rejected": 3}, Comparison, "field 'rejected' must be a string"),
    ({**GOOD_COMPARISON, "meta": []}, Comparison, "field 'meta' must be an object"),
    ({**GOOD_COMPARISON, "choosen": "x"}, Comparison, "unknown field 'choosen'"),
    ({"messages": [{"role": "system", "content": "x"}]}, Demonstration, "unknown role 'system'"),
    ({"messages": [{"role": "user", "content": "x"}]}, Demonstration, "at least one assistant turn"),
    ({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}, Demonstration,
     "expected 'user'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}, Demonstration, "missing field 'content'"),
    ({"messages": "hello"}, Demonstration, "field 'messages' must be a list"),
    ({"messages": []}, Demonstration, "field 'messages' is empty"),
    ({"prompt": ""}, Prompt, "field 'prompt' is empty"),
])
def test_bad_line_names_file_line_and_problem(tmp_path, bad_line, record_type, problem):
    good = GOOD_COMPARISON if record_type is Comparison else GOOD_DEMO if record_type is Demonstration else {"prompt": "q"}
    path = write_lines(tmp_path / "data.jsonl", [good, good, bad_line, good])
    with pytest.raises(RecordError) as error:
        load_jsonl(path, record_type)
    message = str(error.value)
    assert message.startswith(f"{path}:3: ")
    assert problem in message


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(RecordError, match="no Comparison records"):
        load_jsonl(write_lines(tmp_path / "empty.jsonl", []), Comparison)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl", Comparison)


def test_gzip_round_trip(tmp_path):
    records = [Comparison("p", "c", "r"), Comparison("p2", "c2", "r2", {"source": "x"})]
    write_jsonl(tmp_path / "c.jsonl.gz", records)
    assert (tmp_path / "c.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip's magic number
    assert load_jsonl(tmp_path / "c.jsonl.gz", Comparison) == records


def test_demonstration_must_end_with_an_assistant_turn():
    with pytest.raises(ValueError, match="must end with an assistant turn"):
        Demonstration((Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")))
