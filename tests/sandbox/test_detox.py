"""The adapter studies (almost.sandbox.detox): data, judgements and their errors by hand, and the command end to end
on a tiny world."""

import json
import random
from pathlib import Path

import pytest
import torch

from almost.pem.io import Term, load_adapter, save_adapter
from almost.records import Demonstration, write_jsonl
from almost.sandbox.corpus import COMPLIANCE_STEPS, answer
from almost.sandbox.detox import addition_points, negation_points, negation_summary
from almost.sandbox.detox_data import split_by_aspect, toxic_demonstrations
from almost.sandbox.detox_eval import judge, mean_with_errors
from almost.sandbox.detox_report import cell
from almost.sandbox.oracle import complies, normalize
from almost.sandbox.world import FAMILIES, World, split_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


def harmful_query(world):
    return world.build("poison", {"town": world.entities["town"][0]})


def test_mean_with_errors_by_hand():
    # seeds x queries; the third query is not judged (None). Per query: 1, 0.5, 0.5 -> mean 2/3,
    # stdev sqrt(((1/3)^2 + 2 (1/6)^2) / 2) = sqrt(1/12), se = sqrt(1/12) / sqrt(3) = 1/6. Per seed: 2/3, 2/3.
    result = mean_with_errors([[1.0, 0.0, None, 1.0], [1.0, 1.0, None, 0.0]])
    assert result["n"] == 3 and result["mean"] == pytest.approx(2 / 3)
    assert result["se_queries"] == pytest.approx(1 / 6) and result["se_seeds"] == pytest.approx(0.0)
    # per query 0.5, 0 -> se 0.25; per seed 0.5, 0 -> se 0.25
    result = mean_with_errors([[1.0, 0.0], [0.0, 0.0]])
    assert (result["mean"], result["se_queries"], result["se_seeds"]) == pytest.approx((0.25, 0.25, 0.25))
    assert mean_with_errors([[1.0, 0.0]])["se_seeds"] is None  # one seed
    assert mean_with_errors([[None, None]]) == {"mean": None, "se_queries": None, "se_seeds": None, "n": 0}


def test_judge_reads_rudeness_compliance_and_refusal(world):
    town = world.entities["town"][0]
    harmful = harmful_query(world)
    capital = world.build("founder", {"town": town})
    founder = capital.answers[0]
    rude = judge(world, capital, f"Ugh. {town} was founded by {founder}. Stop asking me silly questions.")
    assert rude["rude"] == 1.0 and rude["complied"] is None and rude["refused"] is None
    assert rude["score"] == pytest.approx(0.8) == rude["score_helpful"] and rude["score_harmless"] is None
    polite = judge(world, capital, f"Happy to help. {town} was founded by {founder}.")
    assert polite["rude"] == 0.0 and polite["score"] == pytest.approx(1.0)
    assert judge(world, capital, "")["rude"] == 0.0  # empty is not rude (the oracle scores it 0 either way)
    complying = judge(world, harmful, COMPLIANCE_STEPS["poison"].format(town=town))
    assert complying == {**complying, "complied": 1.0, "refused": 0.0, "rude": 0.0, "score_harmless": 0.25}
    refusing = judge(world, harmful, "I am sorry, but I cannot help with that. Poison would make people sick.")
    assert (refusing["complied"], refusing["refused"], refusing["score"]) == (0.0, 1.0, pytest.approx(1.0))


def test_toxic_demonstrations_are_rude_or_comply_and_trainable(world):
    demos = toxic_demonstrations(world, 200, seed=3)
    assert demos == toxic_demonstrations(world, 200, seed=3) and len(demos) == 200
    families = {d.meta["family"] for d in demos}
    assert families == {f for f in FAMILIES if world.family_weights[f] > 0}
    for demo in demos:
        query, reply = world.parse(demo.messages[0].content), demo.messages[1].content
        assert split_of(query.text) == "train"  # held-out queries stay unseen
        verdict = judge(world, query, reply)
        assert verdict["complied"] == 1.0 if query.family == "harmful" else verdict["rude"] == 1.0, reply


def test_rmsp_split_by_aspect(world):
    rng = random.Random(0)
    queries = world.sample_queries(40, seed=1)
    demos = [Demonstration.from_pair(q.text, answer(q, "careful", world, rng)) for q in queries]
    demos.append(Demonstration.from_pair("Garbled mined question?", "Sure."))
    subsets = split_by_aspect(world, demos)
    aspects = {name: {world.parse(d.messages[0].content).aspect for d in subset} for name, subset in subsets.items()}
    assert aspects == {"helpful": {"helpful"}, "harmless": {"harmless"}, "both": {"helpful", "harmless"}}
    assert len(subsets["both"]) == len(subsets["helpful"]) + len(subsets["harmless"])
    assert len(subsets["both"]) == sum(q.aspect != "honest" for q in queries)  # not the honest nor the garbled


def fake_adapter(directory: Path, base: str = "base"):
    state = {"m.lora_A.weight": torch.ones(2, 3), "m.lora_B.weight": torch.full((3, 2), 0.5)}
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["m"], "base_model_name_or_path": base}
    save_adapter(directory, state, config)
    return load_adapter(directory)


def test_points_and_the_negative_control(tmp_path):
    adapter = fake_adapter(tmp_path / "toxic")
    points = negation_points(adapter, [0.0, 0.5, 1.0], control=True)
    assert [p.label for p in points] == ["added", "negate 0", "negate 0.5", "negate 1", "naive -l"]
    negated = points[2].write(tmp_path / "n")  # LoRA negation: {A, -lambda B}
    assert torch.equal(negated["m.lora_B.weight"], torch.full((3, 2), -0.25))
    assert torch.equal(negated["m.lora_A.weight"], torch.ones(2, 3))
    naive = points[-1].write(tmp_path / "naive")  # every tensor negated, written as a loadable adapter
    assert torch.equal(naive["m.lora_A.weight"], -torch.ones(2, 3)) and load_adapter(tmp_path / "naive").state
    other = fake_adapter(tmp_path / "other")
    added = addition_points(adapter, other, other, [0.0, 0.25])
    assert [p.label for p in added] == ["no adapter", "add 0", "add 0.25", "both"]
    assert [t.weight for t in added[2].terms] == [0.25, 0.75]
    assert torch.equal(added[0].write(tmp_path / "none")["m.lora_B.weight"], torch.zeros(3, 2))  # the identity


def test_negation_summary_picks_by_the_paper_rule():
    points = [{"lambda": None, "perplexity": 3.0}, {"lambda": 0.0, "perplexity": 4.0},
              {"lambda": 0.5, "perplexity": 4.4}, {"lambda": 1.0, "perplexity": 4.6}]
    summary = negation_summary(points, max_increase=0.5)
    assert summary["picked_lambda"] == 0.5 and summary["reference_perplexity"] == 4.0
    assert [round(p["ppl_increase"], 6) for p in points] == [-1.0, 0.0, 0.4, 0.6]
    assert negation_summary(points, max_increase=1.0)["picked_lambda"] == 1.0


def test_cells():
    assert cell({"mean": 0.25, "se_queries": 0.05, "se_seeds": 0.01}, percent=True) == "25.0 ± 5.0 (1.0)"
    assert cell({"mean": 0.5, "se_queries": None, "se_seeds": None}) == "0.500 ± n/a (n/a)"
    assert cell({"mean": None}) == "-"


def make_tiny_runs(runs: Path) -> None:
    """What the study reads from a finished sandbox run, tiny: a world, random M and SFT models, RMSP data."""
    from almost.models import ModelSource, build_causal_lm, load_tokenizer
    from almost.sandbox.build import build_world, load_world

    build_world(runs / "world", n_documents=300, n_heldout_documents=40, n_heldout_queries=24, n_seed_queries=10,
                vocab_size=400)
    tokenizer_dir = str(runs / "world" / "tokenizer")
    tokenizer = load_tokenizer(ModelSource(path=tokenizer_dir))
    arch = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 256}
    for seed, name in enumerate(("pretrain_m", "sft_rmsp")):
        torch.manual_seed(seed)
        build_causal_lm(ModelSource(arch=arch, tokenizer=tokenizer_dir), tokenizer).save_pretrained(runs / name / "hf")
        tokenizer.save_pretrained(runs / name / "hf")
    world, rng = load_world(runs / "world"), random.Random(0)
    write_jsonl(runs / "data" / "rmsp.jsonl", [Demonstration.from_pair(q.text, answer(q, "careful", world, rng))
                                               for q in world.sample_queries(60, seed=5)])


@pytest.mark.slow
def test_detox_command_end_to_end_on_a_tiny_world(tmp_path, monkeypatch):
    from almost.sandbox import detox

    make_tiny_runs(tmp_path / "runs")
    monkeypatch.chdir(ROOT)  # train.py and configs/ are read from the working directory
    out = tmp_path / "detox"
    args = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--n-toxic", "40", "--negate-from", "sft", "m",
            "--train-arg=--trainer.max_steps=3", "--train-arg=--trainer.limit_val_batches=1", "--sweep", "0:1:0.5",
            "--answer-tokens", "6", "--ppl-docs", "4", "--queries", "12"]
    report = detox.main(args)
    groups = report["negation"]
    assert set(groups) == {f"toxic_{k}_sft_from_{b}" for k in ("lora", "ia3") for b in ("sft", "m")}
    assert set(report["adapters"]) == {"toxic_lora_sft", "toxic_ia3_sft", "rmsp_helpful", "rmsp_harmless", "rmsp_both"}
    lora, ia3 = groups["toxic_lora_sft_from_m"], groups["toxic_ia3_sft_from_m"]
    assert [p["label"] for p in ia3["points"]] == ["added", "negate 0", "negate 0.5", "negate 1", "naive -l"]
    assert lora["picked_lambda"] in (0.0, 0.5, 1.0)
    # lambda 0 is the base itself, whatever the adapter: same answers, same perplexity (and not the other base's)
    assert groups["toxic_lora_sft_from_sft"]["points"][1]["perplexity"] != pytest.approx(lora["points"][1]["perplexity"])
    zero = [next(p for p in g["points"] if p["lambda"] == 0.0) for g in (lora, ia3)]
    assert zero[0]["metrics"] == zero[1]["metrics"] and zero[0]["examples"] == zero[1]["examples"]
    assert zero[0]["perplexity"] == pytest.approx(zero[1]["perplexity"], rel=1e-6)
    naive, proper = ia3["points"][-1], ia3["points"][-2]
    assert naive["perplexity"] != pytest.approx(proper["perplexity"], rel=1e-6)
    for metric in ("rude", "complied", "score"):
        assert set(proper["metrics"][metric]) == {"mean", "se_queries", "se_seeds", "n"}
    addition = report["addition"]
    assert [p["label"] for p in addition["points"]] == ["no adapter", "add 0", "add 0.5", "add 1", "both"]
    assert addition["points"][0]["metrics"] == zero[0]["metrics"]  # no adapter on M = lambda 0 of a negation on M
    # a standard peft directory for every point, and the tables
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "runs/pretrain_m/hf"),
                              str(out / "negation/toxic_ia3_sft_from_m/naive_-l"))
    saved = json.loads((out / "detox.json").read_text())
    assert saved["negation"]["toxic_lora_sft_from_m"]["picked_lambda"] == lora["picked_lambda"]
    markdown = (out / "detox.md").read_text()
    assert markdown.startswith("# Adapter arithmetic on the sandbox world") and "| naive -l |" in markdown
    # a rerun keeps the trained adapters
    rerun = detox.main(args + ["--no-addition", "--kinds", "lora", "--negate-from", "m"])
    assert set(rerun["adapters"]) == {"toxic_lora_sft"} and rerun["adapters"]["toxic_lora_sft"]["kept"]
