import pytest

from almost.evaluation.judge import JUDGE_RUBRIC, JudgeTally, parse_score, render_judge_prompt


def test_prompt_holds_rubric_question_answer_and_asks_for_score_line():
    prompt = render_judge_prompt("  How do I boil an egg?\n", "Put it in boiling water for 8 minutes.")
    assert JUDGE_RUBRIC in prompt
    assert "<question>\nHow do I boil an egg?\n</question>" in prompt
    assert "<answer>\nPut it in boiling water for 8 minutes.\n</answer>" in prompt
    assert prompt.endswith('a final line of its own, exactly in the form "Score: <n>" with <n> a whole number from 0 to 5.')
    # five additive points
    assert sum(line.startswith("- ") for line in JUDGE_RUBRIC.splitlines()) == 5


def test_short_prompt_holds_the_five_points_in_one_line_and_asks_for_score_line():
    prompt = render_judge_prompt("  How many legs has a cat?\n", " Four. ", "short")
    lines = prompt.splitlines()
    assert lines[0].startswith("Grade the answer from 0 to 5.") and lines[0].count(", it ") == 4  # five points
    assert lines[1:] == ["Question: How many legs has a cat?", "Answer: Four.", "End with the line Score: n."]
    assert JUDGE_RUBRIC not in prompt and render_judge_prompt("Q?", "A.") == render_judge_prompt("Q?", "A.", "rubric")
    with pytest.raises(ValueError, match="judge prompt 'long': unknown; one of rubric, short"):
        render_judge_prompt("Q?", "A.", "long")


@pytest.mark.parametrize("text, score", [
    ("The answer is relevant and correct.\nScore: 4", 4),
    ("Nothing useful.\nScore: 0", 0),
    ("Score:5", 5),
    ("  Score: 3  \n", 3),
    ("Looks fine.\r\nScore: 5\r\n", 5),  # Windows line ends
    ("Score: 3\nThat is my final verdict.", 3),  # the score line need not be the very last line
    ("Points 1 and 2 hold.\nScore: 2\nOn reflection, point 3 holds too.\nScore: 3", 3),  # the last one counts
])
def test_parse_score_reads_last_score_line(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", [
    "",
    "I would give it four points.",  # no score line
    "The Score: 4 seems fair.",  # not a line of its own
    "score: 4",  # wrong case
    "Score: 6",  # out of range
    "Score: -1",
    "Score: 4/5",
    "Score: 3.5",
    "Score: four",
    "Score: \u0663",  # a non-ASCII digit
    "Score: ",
    "Score: 4\nScore: 9",  # the last score line is invalid: not replaced by the earlier one
    "Score: 2\nScore: N/A",
])
def test_parse_score_never_guesses(text):
    assert parse_score(text) is None


def test_tally_counts_parsed_and_unparseable():
    tally = JudgeTally()
    assert (tally.total, tally.unparseable_rate, tally.mean_score) == (0, 0.0, None)
    outputs = ["Score: 4", "Score: 2", "no idea", "Score: 7", "Score: 4", "Score: 0"]
    assert [tally.add(o) for o in outputs] == [4, 2, None, None, 4, 0]
    assert tally.counts == [1, 0, 1, 0, 2, 0]
    assert (tally.parsed, tally.unparseable, tally.total) == (4, 2, 6)
    assert tally.unparseable_rate == pytest.approx(2 / 6)
    assert tally.mean_score == pytest.approx((4 + 2 + 4 + 0) / 4)
