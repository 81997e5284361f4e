"""make real-demo's pieces that run without the real models: the held-out split by query, the stage graph of
almost.real.pipeline, and the report on a hand-made runs folder."""

import json
import math
from pathlib import Path

import pytest

from almost.models import ModelSource, RewardModel, load_tokenizer
from almost.real import pipeline, report
from almost.real.split import main as split_main, split_by_query
from almost.records import Comparison, Demonstration, Prompt, Responses, Turn, load_jsonl, write_jsonl
from almost.scorers import RewardModelScorer
from tests.conftest import TINY_ARCH


def pairs(queries: list[str], per_query: int = 3) -> list[Comparison]:
    return [Comparison(q, f"good {i} " * (i + 1), f"bad {i}", {"chosen_config": "A", "rejected_config": "B"})
            for q in queries for i in range(per_query)]


def test_split_holds_out_whole_queries_whatever_the_order():
    records = pairs([f"question {k}?" for k in range(10)])
    train, heldout = split_by_query(records, 0.25, seed=0)
    assert len({c.prompt for c in heldout}) == 3 and len(train) + len(heldout) == 30  # ceil(0.25 * 10)
    assert not {c.prompt for c in heldout} & {c.prompt for c in train}
    assert [c for c in records if c in heldout] == heldout  # file order kept
    again = split_by_query(records[::-1], 0.25, seed=0)[1]
    assert {c.prompt for c in again} == {c.prompt for c in heldout}
    assert {c.prompt for c in split_by_query(records, 0.25, seed=1)[1]} != {c.prompt for c in heldout}
    assert len({c.prompt for c in split_by_query(pairs(["a", "b"]), 0.9)[0]}) == 1  # one query always trains
    with pytest.raises(ValueError, match="at least 2 queries"):
        split_by_query(pairs(["only one"]), 0.5)
    with pytest.raises(ValueError, match="fraction"):
        split_by_query(records, 1.0)


def test_split_command_writes_both_files(tmp_path, capsys):
    write_jsonl(tmp_path / "comparisons.jsonl", pairs(["a?", "b?", "c?", "d?"]))
    split_main([str(tmp_path / "comparisons.jsonl"), "--fraction", "0.5"])
    train = load_jsonl(tmp_path / "comparisons_train.jsonl", Comparison)
    heldout = load_jsonl(tmp_path / "comparisons_heldout.jsonl", Comparison)
    assert (len(train), len(heldout)) == (6, 6) and "6 pairs to train on, 6 held out (2 queries)" in capsys.readouterr().out


def test_every_stage_reads_what_an_earlier_stage_or_the_repository_provides():
    made: set[Path] = set()
    for stage in pipeline.stages():
        for path in stage.inputs:
            assert path in made or path == pipeline.VICUNA or path.exists(), (stage.name, path)
        for config in [a for a in stage.command if a.endswith(".yaml")]:
            assert Path(config).is_file(), (stage.name, config)
        made.update(stage.outputs)
        made.update(p.parent for p in stage.outputs if p.name == "config.json")  # a model directory
        assert stage.logs == pipeline.LOGS
    names = [s.name for s in pipeline.stages()]
    assert names[0] == "models" and names[-1] == "report" and len(set(names)) == len(names)


def test_list_names_every_stage(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(Path(__file__).parent.parent)
    pipeline.main(["--list"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == [s.name for s in pipeline.stages()]


@pytest.fixture
def runs(tmp_path, tokenizer_dir) -> Path:
    """A runs/gemma folder as the pipeline leaves it, written by hand, with a tiny random reward model."""
    runs, data = tmp_path / "gemma", tmp_path / "gemma" / "data"
    source = ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir)
    tokenizer = load_tokenizer(source)
    rm_dir = runs / "rm" / "hf" / "merged"
    RewardModel.build(source, tokenizer).save_pretrained(rm_dir)
    tokenizer.save_pretrained(str(rm_dir))
    write_jsonl(data / "queries.jsonl", [Prompt(f"q{k}?") for k in range(7)])
    write_jsonl(data / "responses.jsonl", [Responses("q0?", {"A": "A full answer.", "B": "", "C": "short"})])
    write_jsonl(data / "comparisons.jsonl", pairs(["q0?", "q1?"]))
    write_jsonl(data / "comparisons_train.jsonl", pairs(["q0?"]))
    write_jsonl(data / "comparisons_heldout.jsonl", pairs(["q1?", "q2?"]))
    (data / "comparisons.stats.json").write_text(json.dumps(
        {"rubric": "A > B", "formed": 9, "removed_bad_response": 3, "removed_identical": 0, "removed_length_rule": 2,
         "removed_rm": 0, "kept": 4, "dropped/too_short": 2}))
    write_jsonl(data / "rmsp.jsonl", [Demonstration((Turn("user", "q0?"), Turn("assistant", "an answer")))])
    (data / "rmsp.stats.json").write_text(json.dumps({"n_samples": 4, "rm_score_kept": {"mean": 1.25},
                                                      "rm_score_all_samples": {"mean": -0.5}}))
    for name in ("sft", "ppo"):
        out = runs / "eval" / f"winrate_{name}"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"metrics": {"reward_model/win": 2, "reward_model/tie": 0,
                                                                  "reward_model/loss": 1,
                                                                  "reward_model/win_rate": 2 / 3}}))
        (out / "answers.jsonl").write_text("".join(
            json.dumps({"question": f"v{k}", "answer_x": f"{name} {k}", "answer_y": f"van {k}"}) + "\n"
            for k in range(12)))
    for name, value in (("vanilla", 20.0), ("sft", 21.5), ("ppo", 22.0)):
        (runs / "eval" / f"perplexity_{name}").mkdir(parents=True)
        (runs / "eval" / f"perplexity_{name}" / "results.json").write_text(json.dumps({"metrics": {"perplexity": value}}))
    (runs / "wall_seconds.json").write_text(json.dumps({"mine": 100.0, "rm": 50.6}))
    return runs


def test_report_scores_the_held_out_pairs_and_gathers_every_section(runs):
    r = report.build_report(runs)
    heldout = load_jsonl(runs / "data" / "comparisons_heldout.jsonl", Comparison)
    scorer = RewardModelScorer(str(runs / "rm" / "hf" / "merged"))
    chosen = scorer.score([c.prompt for c in heldout], [c.chosen for c in heldout])
    rejected = scorer.score([c.prompt for c in heldout], [c.rejected for c in heldout])
    accuracy = sum((c > r) + 0.5 * (c == r) for c, r in zip(chosen, rejected)) / len(heldout)
    assert r["reward_model"]["accuracy"] == pytest.approx(accuracy)
    assert r["reward_model"]["accuracy_se"] == pytest.approx(math.sqrt(accuracy * (1 - accuracy) / 6))
    assert r["reward_model"]["longer_wins_accuracy"] == 1.0  # every chosen response is the longer one here
    assert (r["reward_model"]["heldout_pairs"], r["reward_model"]["heldout_queries"], r["reward_model"]["train_pairs"]) \
        == (6, 2, 3)
    assert {k: e["config"] for k, e in r["comparisons"]["dropped_examples"].items()} == {"too_short": "B"}
    assert r["perplexity"] == {"vanilla": 20.0, "sft": 21.5, "ppo": 22.0}
    assert len(r["answers"]) == report.ANSWERS and r["answers"][3] == {
        "question": "v3", "vanilla_prompted": "van 3", "sft": "sft 3", "ppo": "ppo 3"}
    md = report.markdown(r)
    for needle in ("| **total** | **151** |", "| **kept** | **4** |", "| sft | reward_model | 2 | 0 | 1 | 0.667 |",
                   "| ppo | 22.00 |", "- PPO: ppo 9",
                   "best of N = 4 by", "kept answers: mean 1.250; of all sampled answers: mean -0.500"):
        assert needle in md, needle


def test_report_command_writes_both_files(runs):
    report.main(["--runs", str(runs)])
    assert json.loads((runs / "report.json").read_text())["queries"]["mined"] == 7
    assert (runs / "report.md").read_text().startswith("# ALMoST in miniature on Gemma 3 270M")
