"""The self-rewarding / DPO / RAFT stages (almost.sandbox.self_rewarding) end to end, through their real commands,
on a tiny world and tiny random models standing in for `make demo`'s outputs; the judge is scripted (a random
model writes no readable score), everything else is the real thing."""

import json
import os
from pathlib import Path

import pytest

from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer
from almost.records import Comparison, Demonstration, Prompt, Responses, write_jsonl
from almost.sandbox import self_rewarding
from almost.sandbox.build import build_world, load_world
from almost.scorers import JudgeScorer
from tests.conftest import TINY_ARCH

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["--model.init_args.sampling.max_new_tokens=8"]
SMALL_FIT = ["--trainer.max_epochs=1", "--data.init_args.val_fraction=0.25"]
JUDGE = ["--model.init_args.judge=tests.sandbox.test_self_rewarding_pipeline.LengthJudge",
         "--model.init_args.judge.init_args.max_new_tokens=4"]
TINY = {
    "self_rewarding/seed": ["--seed-answers=6", "--skip-queries=4", "--prompts=8"],
    "self_rewarding/m1": SMALL_FIT, "self_rewarding/m2": SMALL_FIT, "self_rewarding/m3": SMALL_FIT,
    "self_rewarding/judge_*": [*SHORT, *JUDGE],
    "dpo": SMALL_FIT, "sft_raft": SMALL_FIT, "raft": [*SHORT, "--data.init_args.limit=8"],
    "self_rewarding/report": ["--answer-tokens=8", "--judge-queries=2", "--judge-tokens=4"],
}
REPORT_KEYS = {"policies", "judges", "iterations", "seed", "raft", "dpo", "wall_seconds"}


class LengthJudge(JudgeScorer):
    """Scripted judgements: every judgement of an answer reads ``Score: <its length mod 6>``."""

    def judgements(self, prompts, responses):
        return [[f"Looks fine.\nScore: {len(r) % 6}"] * self.samples for r in responses]


def fake_demo_outputs(runs: Path) -> None:
    """What `make demo` leaves that these stages read, tiny: a world, random M-sized stand-ins, a few records."""
    build_world(runs / "world", n_documents=300, n_heldout_documents=30, n_heldout_queries=8, n_seed_queries=10,
                vocab_size=400)
    world = load_world(runs / "world")
    source = ModelSource(arch=TINY_ARCH, tokenizer=str(runs / "world" / "tokenizer"))
    tokenizer = load_tokenizer(source)
    for stage in ("pretrain_m", "sft_rmsp", "ppo", "rm"):
        model = RewardModel.build(source, tokenizer) if stage == "rm" else build_causal_lm(source, tokenizer)
        model.save_pretrained(runs / stage / "hf")
        tokenizer.save_pretrained(runs / stage / "hf")
    queries = world.sample_queries(24, seed=0, split="train")
    heldout = world.sample_queries(8, seed=1, split="heldout")

    def answers(query) -> dict[str, str]:
        right = query.answers[0] if query.answers else "no"
        return {"A": f"The answer is {right}.", "B": "I do not know.", "C": "ok"}

    write_jsonl(runs / "data" / "queries.jsonl", [Prompt(q.text) for q in queries])
    write_jsonl(runs / "data" / "ppo_prompts.jsonl", [Prompt(q.text) for q in queries])
    write_jsonl(runs / "data" / "responses.jsonl", [Responses(q.text, answers(q)) for q in queries[:4]])
    write_jsonl(runs / "baselines" / "responses.jsonl", [Responses(q.text, answers(q)) for q in heldout])
    write_jsonl(runs / "data" / "rmsp.jsonl", [Demonstration.from_pair(q.text, answers(q)["A"]) for q in queries[:8]])
    write_jsonl(runs / "data" / "comparisons.jsonl",
                [Comparison(q.text, answers(q)["A"], answers(q)["C"]) for q in queries[:8]])


@pytest.mark.slow
def test_tiny_self_rewarding_stages_run_and_report(tmp_path, monkeypatch):
    for name in ("train.py", "configs"):  # the stages run `train.py --config configs/...` from the working dir
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    runs = Path("runs/sandbox")
    assert not all(p.exists() for p in self_rewarding.NEEDS)  # nothing there yet: `make demo` first
    fake_demo_outputs(runs)
    assert all(p.exists() for p in self_rewarding.NEEDS)
    wall = self_rewarding.run(extra=TINY)
    names = [s.name for s in self_rewarding.stages()]
    assert list(wall) == names
    for stage in self_rewarding.stages():
        assert all(p.exists() for p in stage.outputs), stage.name
    report = json.loads((runs / "self_rewarding/report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert set(report["policies"]) == {"sft_rmsp", "ppo", "dpo", "raft", "m1", "m2", "m3"}
    assert {"oracle", "oracle_se", "oracle_per_seed"} <= set(report["policies"]["m3"])
    assert report["policies"]["m2"]["start"] == "self_rewarding/m1" and "kl_to_start" in report["policies"]["raft"]
    assert set(report["judges"]) == {"m1", "m2", "m3"}
    assert {"pairwise_accuracy", "five_best_share", "exact_match", "spearman", "kendall_tau"} <= set(report["judges"]["m1"])
    for t in ("1", "2"):
        stats = report["iterations"][t]
        assert stats["pairs"] > 0 and stats["unparseable_judgements"] == 0 and stats["prompts"] == 8
    assert report["seed"]["judge_examples"] == 6 and report["seed"]["demonstrations"] == 8
    assert (runs / "self_rewarding/report.md").read_text().startswith("# Self-rewarding, DPO and RAFT")
    # M2 and M3 start from M1 and M2: the DPO stages read the models the loop wrote
    assert json.loads((runs / "self_rewarding/m2/hf/config.json").read_text())["model_type"] == "llama"
    # a rerun has nothing to do
    assert all(stage.up_to_date() for stage in self_rewarding.stages())


def test_the_stages_chain_the_loop_and_read_make_demos_outputs():
    stages = {s.name: s for s in self_rewarding.stages()}
    hf = lambda stage: Path("runs/sandbox") / stage / "hf" / "config.json"  # noqa: E731
    assert hf("self_rewarding/m1") in stages["self_rewarding/judge_1"].inputs
    assert hf("self_rewarding/m2") in stages["self_rewarding/judge_2"].inputs
    assert Path("runs/sandbox/self_rewarding/data/pairs_2.jsonl") in stages["self_rewarding/m3"].inputs
    assert Path("configs/sandbox/dpo.yaml") in stages["self_rewarding/m3"].inputs  # its base chain
    assert hf("pretrain_m") in stages["self_rewarding/m1"].inputs and hf("rm") in stages["raft"].inputs
    assert stages["self_rewarding/m2"].checkpoint == Path("runs/sandbox/self_rewarding/m2/checkpoints/last.ckpt")
