"""Pure pieces of the synthetic-feedback jobs: shards, prompts, self-play, query mining."""

import json
import random

import pytest

from almost.mining import QueryMiner
from almost.prompting import FewShotPrompter, exchanges_of
from almost.records import Demonstration, Turn, write_jsonl
from almost.selfplay import best_of, self_play, usable_question
from almost.shards import ShardStore


# ---------------------------------------------------------------------------------------------- shards
def test_shards_merge_in_input_order_and_report_done(tmp_path):
    store = ShardStore(tmp_path / "out.shards")
    store.write([{"index": 4, "x": "e"}, {"index": 3, "x": "d"}], rank=1)
    store.write([{"index": 0, "x": "a"}, {"index": 0, "x": "a2"}, {"index": 2, "x": "c"}])
    (tmp_path / "out.shards" / "part-000000009-0.tmp").write_text("half a shard")  # a killed write: ignored
    assert store.done() == {0, 2, 3, 4}
    assert [r["x"] for r in store.merged_rows()] == ["a", "a2", "c", "d", "e"]
    assert store.write([]) is None


def test_an_input_written_twice_is_an_error(tmp_path):
    store = ShardStore(tmp_path)
    store.write([{"index": 1}], rank=0)
    store.write([{"index": 0}, {"index": 1}], rank=1)
    with pytest.raises(ValueError, match="input 1 has rows in two shards"):
        store.merged_rows()


def test_a_row_without_index_names_its_shard_and_line(tmp_path):
    (tmp_path / "part-000000000-0.jsonl").write_text(json.dumps({"index": 0}) + "\n" + json.dumps({"i": 1}) + "\n")
    with pytest.raises(ValueError, match=r"part-000000000-0.jsonl:2"):
        ShardStore(tmp_path).done()


# ---------------------------------------------------------------------------------------------- prompts
def test_few_shot_prompter_renders_demonstrations_history_and_the_open_turn(tmp_path):
    demos = tmp_path / "good.jsonl"
    write_jsonl(demos, [Demonstration.from_pair("Hi?", "Hello."), Demonstration.from_pair("2+2?", "4."),
                        Demonstration([Turn("user", "A?"), Turn("assistant", "B."), Turn("user", "C?"),
                                       Turn("assistant", "D.")])])
    prompter = FewShotPrompter({"good": str(demos), "user": str(demos)})
    history = [Turn("user", "Q1?"), Turn("assistant", "R1."), Turn("user", "Q2?")]
    assert prompter.assistant_prompt("good", 2, history) == (
        "User: Hi?\nAssistant: Hello.\nUser: 2+2?\nAssistant: 4.\nUser: Q1?\nAssistant: R1.\nUser: Q2?\nAssistant:")
    # a demonstration asking the query itself is skipped
    assert prompter.assistant_prompt("good", 1, [Turn("user", "Hi?")]) == (
        "User: 2+2?\nAssistant: 4.\nUser: Hi?\nAssistant:")
    assert prompter.user_prompt(0, history[:2]) == "User: Q1?\nAssistant: R1.\nUser:"
    assert prompter.stop_strings("assistant") == ("\nUser:",)
    with pytest.raises(ValueError, match="4 asked for"):
        prompter.assistant_prompt("good", 4, [Turn("user", "Q?")])
    with pytest.raises(ValueError, match="no demonstrations for prompt style 'bad'"):
        prompter.assistant_prompt("bad", 1, [Turn("user", "Q?")])


def test_exchanges_of_checks_turn_order():
    assert exchanges_of([Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")]) == ([("a", "b")], "c")
    with pytest.raises(ValueError, match="turn 1 is a user turn"):
        exchanges_of([Turn("user", "a"), Turn("user", "b")])


# ---------------------------------------------------------------------------------------------- self-play
def test_best_of_prefers_the_first_maximum_and_skips_nan():
    assert best_of([0.1, 0.5, 0.5]) == 1
    assert best_of([float("nan"), -2.0, -3.0]) == 1


@pytest.mark.parametrize("text, problem", [("", "empty_question"), ("  ", "empty_question"),
                                           ("What next? User: hi", "role_tag_in_question"),
                                           ("And the", "unfinished_question"), ("Where is it?", None)])
def test_usable_question(text, problem):
    assert usable_question(text) == problem


def scripted_models(follow_ups):
    """An assistant whose sample j of a turn is "<turn>:<j>" (longer j scores higher), and a scripted user."""
    calls = {"answer": [], "ask": [], "score": 0}

    def answer(histories, n):
        calls["answer"].append((len(histories), n))
        return [[f"{len(h) // 2}:{'x' * j}" for j in range(n)] for h in histories]

    def ask(histories):
        calls["ask"].append(len(histories))
        return [follow_ups[h[0].content] for h in histories]

    def score(histories, answers):
        calls["score"] += len(answers)
        return [float(len(a)) for a in answers]

    return answer, ask, score, calls


def test_rmsp_keeps_the_best_sample_and_stops_on_an_unusable_follow_up():
    answer, ask, score, calls = scripted_models({"q1": "Why?", "q2": "and so"})
    c1, c2 = self_play(["q1", "q2"], answer, ask, score, n_samples=3, turns=2)
    assert [(t.role, t.content) for t in c1.messages] == [
        ("user", "q1"), ("assistant", "0:xx"), ("user", "Why?"), ("assistant", "1:xx")]
    assert c1.kept_scores == [4.0, 4.0] and c1.sample_scores[0] == [2.0, 3.0, 4.0] and c1.ended_by == "turns"
    assert c1.samples[1] == ["1:", "1:x", "1:xx"]
    assert [t.content for t in c2.messages] == ["q2", "0:xx"] and c2.ended_by == "unfinished_question"
    assert calls["answer"] == [(2, 3), (1, 3)] and calls["ask"] == [2] and calls["score"] == 9


def test_plain_self_play_takes_the_single_sample_without_scores():
    answer, ask, _, calls = scripted_models({"q": "More?"})
    (c,) = self_play(["q"], answer, ask, None, n_samples=1, turns=3)
    assert [t.content for t in c.messages] == ["q", "0:", "More?", "1:", "More?", "2:"]
    assert c.kept_scores == [None, None, None] and calls["ask"] == [1, 1]
    with pytest.raises(ValueError, match="needs a scorer"):
        self_play(["q"], answer, ask, None, n_samples=2)


# ---------------------------------------------------------------------------------------------- mining
def test_query_miner_checks_length_duplicates_exclusions_and_target():
    miner = QueryMiner(seeds=["what is the capital of kelmoria"], target=2, min_words=3, max_words=6,
                       threshold=0.5, excluded=["how many goats does fenla have"])
    assert miner.check("hi there") == "too_short"
    assert miner.check("one two three four five six seven") == "too_long"
    assert miner.check("User: what is the time") == "role_tag"
    assert miner.check("how many goats does fenla have") == "excluded"
    # ROUGE-L F against the seed: LCS 5 of 6 and 6 tokens -> 0.83 >= 0.5
    assert miner.check("what is the capital of zelmaia") == "near_duplicate"
    assert miner.offer("reverse the list cup hat") and miner.offer("who founded batorby town")
    assert miner.done and not miner.offer("name a colour of roofs")
    assert miner.rejected == {"target_reached": 1}
    assert sorted(miner.examples(random.Random(0))) == sorted(
        ["what is the capital of kelmoria", "reverse the list cup hat", "who founded batorby town"])


def test_query_miner_restore_feeds_the_duplicate_filter():
    miner = QueryMiner(seeds=["a b c d"], target=5, threshold=1.0)
    miner.restore(["e f g h"])
    assert miner.mined == ["e f g h"] and miner.check("e f g h") == "near_duplicate"
    assert miner.check("e f g i") is None  # threshold 1.0: only exact repeats are duplicates
