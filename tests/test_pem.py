"""Arithmetic on parameter-efficient modules: closed forms of the ops, peft round trips, refusals, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from almost.pem import ops
from almost.pem.__main__ import main, parse_sweep, parse_term, pick_lambda
from almost.pem.io import AdapterError, Term, compose, load_adapter, save_adapter
from almost.scorers import Scorer, as_history
from tests.conftest import write_lines

PREFIX = "base_model.model."  # peft's prefix in front of the base model's module names
TARGETS = ["q_proj", "v_proj"]


def tiny_config(vocab_size: int = 64, **special):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, **special)


def fresh_base(config=None, seed: int = 0):
    """The same float64 tiny Llama for a given seed."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config or tiny_config()).double().eval()


def make_adapter(directory: Path, kind: str = "lora", seed: int = 1, r: int = 4, alpha: int = 8,
                 targets=TARGETS, base=None, **options) -> Path:
    """A peft adapter with random, nonzero weights (B too; (IA)3 vectors away from 1), saved by peft in float64."""
    from peft import IA3Config, LoraConfig, get_peft_model

    if kind == "lora":
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **options)
    else:
        config = IA3Config(target_modules=list(targets), feedforward_modules=options.pop("feedforward", []), **options)
    model = get_peft_model(base if base is not None else fresh_base(), config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * 0.3)
            elif "ia3_l" in name:
                param.copy_(1 + 0.5 * torch.randn_like(param))
    model.save_pretrained(str(directory))
    edit_config(directory, base_model_name_or_path="tiny-llama")
    return directory


def edit_config(directory: Path, **changes) -> None:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def raw_factors(directory: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{base module name: (A, B)}`` read straight from the safetensors file."""
    from safetensors.torch import load_file

    state = load_file(str(directory / "adapter_model.safetensors"))
    return {k[len(PREFIX):-len(".lora_A.weight")]: (v, state[k.replace("lora_A", "lora_B")])
            for k, v in state.items() if k.endswith(".lora_A.weight")}


def merged_logits(deltas: dict[str, torch.Tensor], input_ids: torch.Tensor, multiply: bool = False) -> torch.Tensor:
    """Logits of the base model with each module weight replaced by ``W + delta`` (or ``W * delta``)."""
    model = fresh_base()
    with torch.no_grad():
        for module, delta in deltas.items():
            weight = model.get_submodule(module).weight
            weight.copy_(weight * delta if multiply else weight + delta)
        return model(input_ids=input_ids).logits


def peft_logits(directory: Path, input_ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    model = PeftModel.from_pretrained(fresh_base(), str(directory)).double().eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


INPUT_IDS = torch.tensor([[1, 5, 9, 13, 2, 40, 63, 7], [3, 3, 8, 21, 60, 11, 0, 4]])


# ---- ops: closed forms ----------------------------------------------------------------------------------------

def lora_state(seed: int, r: int, modules=("m0", "m1"), d_in: int = 6, d_out: int = 5) -> ops.StateDict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for m in modules:
        state[f"{m}.lora_A.weight"] = torch.randn(r, d_in, generator=g, dtype=torch.float64)
        state[f"{m}.lora_B.weight"] = torch.randn(d_out, r, generator=g, dtype=torch.float64)
    return state


def product(state: ops.StateDict, module: str) -> torch.Tensor:
    """``B A`` computed element by element (no matmul), as an independent reference."""
    a, b = state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"]
    return (b.unsqueeze(-1) * a.unsqueeze(0)).sum(1)  # (out, r, 1) * (1, r, in) -> (out, in)


@pytest.mark.parametrize("lam", [1.0, 0.3, 0.0])
def test_lora_negation_delta_is_minus_lambda_ba(lam):
    state, s = lora_state(0, r=3), 2.0
    negated = ops.lora_negate(state, lam)
    for m in ("m0", "m1"):
        a, b = negated[f"{m}.lora_A.weight"], negated[f"{m}.lora_B.weight"]
        assert torch.allclose(ops.lora_delta(a, b, s), -lam * s * product(state, m), atol=1e-6, rtol=0)
        assert torch.equal(a, state[f"{m}.lora_A.weight"])  # only B changes sign


def test_ia3_negation_at_lambda_one_is_two_minus_l():
    l = torch.tensor([[1.5], [0.5], [1.0], [-0.25]], dtype=torch.float64)
    assert torch.allclose(ops.ia3_negate({"x.ia3_l": l})["x.ia3_l"],
                          torch.tensor([[0.5], [1.5], [1.0], [2.25]], dtype=torch.float64), atol=1e-6, rtol=0)
    half = ops.ia3_negate({"x.ia3_l": l}, 0.5)["x.ia3_l"]
    assert torch.allclose(half, torch.tensor([[0.75], [1.25], [1.0], [1.625]], dtype=torch.float64), atol=1e-6)


def test_naive_negate_is_minus_l_and_not_the_negation():
    l = torch.tensor([[1.5], [0.5]], dtype=torch.float64)
    naive = ops.naive_negate({"x.ia3_l": l})["x.ia3_l"]
    assert torch.equal(naive, torch.tensor([[-1.5], [-0.5]], dtype=torch.float64))
    assert not torch.allclose(naive, ops.ia3_negate({"x.ia3_l": l})["x.ia3_l"])


def test_ia3_addition_is_the_papers_weighted_average():
    l1 = torch.tensor([[1.5], [0.5], [2.0]], dtype=torch.float64)
    l2 = torch.tensor([[0.8], [1.2], [1.0]], dtype=torch.float64)
    added = ops.ia3_add([{"k": l1}, {"k": l2}], [0.3, 0.7])["k"]
    assert torch.allclose(added, torch.tensor([[1.01], [0.99], [1.3]], dtype=torch.float64), atol=1e-6, rtol=0)


def test_paper_addition_is_product_of_weighted_sums():
    states, c, s = [lora_state(i, r=3) for i in range(3)], [0.5, 0.2, -0.4], 1.5
    added = ops.linear_combination(states, c)
    for m in ("m0", "m1"):
        sum_a = sum(ci * st[f"{m}.lora_A.weight"] for ci, st in zip(c, states))
        sum_b = sum(ci * st[f"{m}.lora_B.weight"] for ci, st in zip(c, states))
        expected = s * (sum_b.unsqueeze(-1) * sum_a.unsqueeze(0)).sum(1)
        got = ops.lora_delta(added[f"{m}.lora_A.weight"], added[f"{m}.lora_B.weight"], s)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_exact_mode_is_weighted_sum_of_updates_across_ranks():
    states, w, s = [lora_state(0, r=2), lora_state(1, r=5)], [0.7, -1.3], [4.0, 0.5]
    exact = ops.lora_concat(states, w, s)
    for m in ("m0", "m1"):
        a, b = exact[f"{m}.lora_A.weight"], exact[f"{m}.lora_B.weight"]
        assert a.shape == (7, 6) and b.shape == (5, 7)
        expected = w[0] * s[0] * product(states[0], m) + w[1] * s[1] * product(states[1], m)
        assert torch.allclose(ops.lora_delta(a, b, 1.0), expected, atol=1e-6, rtol=0)


def test_cross_terms_separate_the_papers_addition_from_the_exact_sum():
    (x, y), (c1, c2), s = [lora_state(0, r=3), lora_state(1, r=3)], (0.5, 0.5), 2.0
    paper, exact = ops.linear_combination([x, y], [c1, c2]), ops.lora_concat([x, y], [c1, c2], [s, s])
    a1, b1, a2, b2 = x["m0.lora_A.weight"], x["m0.lora_B.weight"], y["m0.lora_A.weight"], y["m0.lora_B.weight"]
    gap = ops.lora_delta(paper["m0.lora_A.weight"], paper["m0.lora_B.weight"], s) - ops.lora_delta(
        exact["m0.lora_A.weight"], exact["m0.lora_B.weight"], 1.0)
    expected = s * (c1 * c2 * (b1 @ a2 + b2 @ a1) + (c1 ** 2 - c1) * b1 @ a1 + (c2 ** 2 - c2) * b2 @ a2)
    assert torch.allclose(gap, expected, atol=1e-6, rtol=0)
    assert gap.abs().max() > 0.1


def test_elementwise_addition_refuses_different_ranks():
    with pytest.raises(ValueError, match="shapes"):
        ops.linear_combination([lora_state(0, r=2), lora_state(1, r=3)], [0.5, 0.5])


# ---- io: peft round trips -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["paper", "exact"])
def test_composed_lora_reloads_in_peft_with_the_expected_logits(tmp_path, mode):
    ra, alpha_a, rb, alpha_b = (4, 8, 4, 8) if mode == "paper" else (4, 8, 2, 16)
    dir_a = make_adapter(tmp_path / "a", seed=1, r=ra, alpha=alpha_a)
    dir_b = make_adapter(tmp_path / "b", seed=2, r=rb, alpha=alpha_b)
    terms = [Term(load_adapter(dir_a, "a"), 0.5), Term(load_adapter(dir_b, "b"), 0.8, negate=True)]
    state, config = compose(terms, mode)
    save_adapter(tmp_path / "out", state, config)

    fa, fb, c, lam = raw_factors(dir_a), raw_factors(dir_b), 0.5, 0.8
    deltas = {}
    for module, (a1, b1) in fa.items():
        a2, b2 = fb[module]
        if mode == "paper":  # {c A1 + A2, c B1 - lam B2}, one scaling
            deltas[module] = (alpha_a / ra) * (c * b1 - lam * b2) @ (c * a1 + a2)
        else:
            deltas[module] = c * (alpha_a / ra) * b1 @ a1 - lam * (alpha_b / rb) * b2 @ a2
    assert len(deltas) == 4 and all(d.abs().max() > 1e-3 for d in deltas.values())
    expected = merged_logits(deltas, INPUT_IDS)
    assert not torch.allclose(expected, merged_logits({}, INPUT_IDS), atol=1e-3)  # the adapter matters
    assert torch.allclose(peft_logits(tmp_path / "out", INPUT_IDS), expected, atol=1e-6, rtol=0)


def test_cli_composition_of_ia3_reloads_with_the_expected_logits(tmp_path):
    targets = ["k_proj", "v_proj", "down_proj"]
    dirs = [make_adapter(tmp_path / n, "ia3", seed=i, targets=targets, feedforward=["down_proj"])
            for i, n in enumerate(["a", "b", "t"])]
    main(["--add", f"a={dirs[0]}:0.5", "--add", f"b={dirs[1]}:0.5", "--negate", f"t={dirs[2]}:1.0",
          "--out", str(tmp_path / "out")])
    from safetensors.torch import load_file

    raw = [load_file(str(d / "adapter_model.safetensors")) for d in dirs]
    deltas = {k[len(PREFIX):-len(".ia3_l")]: 0.5 * raw[0][k] + 0.5 * raw[1][k] + (2 - raw[2][k]) - 1 for k in raw[0]}
    assert len(deltas) == 6
    expected = merged_logits(deltas, INPUT_IDS, multiply=True)
    assert torch.allclose(peft_logits(tmp_path / "out", INPUT_IDS), expected, atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "out" / "pem_recipe.json").read_text())["terms"][2]["negate"] is True


def test_cli_refuses_exact_mode_for_ia3(tmp_path):
    a = make_adapter(tmp_path / "a", "ia3", targets=["k_proj"])
    with pytest.raises(AdapterError, match="--mode exact is defined for LoRA only"):
        main(["--add", f"a={a}:1.0", "--mode", "exact", "--out", str(tmp_path / "out")])


# ---- io: refusals ---------------------------------------------------------------------------------------------

def labels(a: Path, b: Path) -> str:
    return f"adapters 'a' ({a}) and 'b' ({b})"


def test_mismatched_adapters_are_refused_with_one_line(tmp_path):
    a = make_adapter(tmp_path / "a")
    cases = {
        "base": (lambda d: edit_config(make_adapter(d), base_model_name_or_path="other-llama"),
                 "have different base_model_name_or_path: 'tiny-llama' vs 'other-llama'", "paper"),
        "targets": (lambda d: make_adapter(d, targets=["q_proj", "k_proj"]),
                    "have different target_modules: ['q_proj', 'v_proj'] vs ['k_proj', 'q_proj']", "paper"),
        "rank": (lambda d: make_adapter(d, r=8, alpha=16),
                 "have different ranks r: 4 vs 8 (--mode paper adds A and B element-wise; "
                 "--mode exact concatenates ranks)", "paper"),
        "type": (lambda d: make_adapter(d, "ia3", targets=TARGETS), "have different peft type: 'LORA' vs 'IA3'", "exact"),
        "keys": (lambda d: make_adapter(d, layers_to_transform=[0]),
                 "have different key sets: 4 keys only in 'a', 0 only in 'b' "
                 "(e.g. 'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')", "exact"),
    }
    for case, (build, message, mode) in cases.items():
        b = tmp_path / case
        build(b)
        with pytest.raises(AdapterError) as error:
            compose([Term(load_adapter(a, "a"), 0.5), Term(load_adapter(b, "b"), 0.5)], mode)
        assert str(error.value) == f"{labels(a, b)} {message}", case
        assert "\n" not in str(error.value)


def test_exact_mode_accepts_different_ranks_and_paper_mode_different_scalings_not(tmp_path):
    a, b = make_adapter(tmp_path / "a"), make_adapter(tmp_path / "b", r=8, alpha=16)
    state, config = compose([Term(load_adapter(a, "a"), 0.5), Term(load_adapter(b, "b"), 0.5)], "exact")
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (12, 12, False)
    c = make_adapter(tmp_path / "c", alpha=16)
    with pytest.raises(AdapterError, match=r"different LoRA scalings \(lora_alpha / r\): 2.0 vs 4.0"):
        compose([Term(load_adapter(a, "a"), 0.5), Term(load_adapter(c, "c"), 0.5)], "paper")


def test_unsupported_adapters_are_refused_on_loading(tmp_path):
    a = make_adapter(tmp_path / "a")
    edit_config(a, use_dora=True)
    with pytest.raises(AdapterError) as error:
        load_adapter(a, "a")
    assert str(error.value) == f"adapter 'a' ({a}): use_dora=True is not supported"
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_adapter(tmp_path / "missing", "m")


# ---- the command ----------------------------------------------------------------------------------------------

def test_parsing_of_terms_and_sweeps():
    assert parse_term("toxic=/runs/lora:t:0.5") == ("toxic", "/runs/lora:t", 0.5)
    assert parse_term("toxic=/runs/lora") == ("toxic", "/runs/lora", None)
    assert parse_term("/runs/lora:2") == (None, "/runs/lora", 2.0)
    assert parse_sweep("0:1:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_sweep("0.5:1:0.25") == [0.5, 0.75, 1.0]


def test_pick_lambda_is_the_largest_within_the_increase():
    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert pick_lambda(lambdas, [10.0, 10.2, 10.6, 10.4, 11.0], 0.5) == 0.75  # not only the contiguous prefix
    assert pick_lambda(lambdas, [10.0, 10.2, 10.6, 10.4, 11.0], 0.1) == 0.0
    assert pick_lambda(lambdas, [10.0, 10.2, 10.6, 10.4, 11.0], 1.0) == 1.0


@pytest.fixture
def sweep_setup(tmp_path, tokenizer):
    """A saved tiny Llama with the tokenizer, a LoRA adapter on it, and a text file."""
    config = tiny_config(len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    fresh_base(config).save_pretrained(str(tmp_path / "base"))
    tokenizer.save_pretrained(str(tmp_path / "base"))
    adapter = make_adapter(tmp_path / "toxic", seed=3, base=fresh_base(config))
    text = write_lines(tmp_path / "text.txt", ["the cat sat on the mat", "", "what is two plus two", "a b c d"])
    return tmp_path, config, adapter, text


def reference_perplexity(config, tokenizer, texts, deltas) -> float:
    """exp(mean next-token NLL) of ``<s> text </s>``, with ``deltas`` added to the base weights, in float64."""
    model = fresh_base(config)
    total, count = 0.0, 0
    with torch.no_grad():
        for module, delta in deltas.items():
            model.get_submodule(module).weight.add_(delta)
        for text in texts:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"],
                                 tokenizer.eos_token_id]])
            logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            total -= logprobs.gather(-1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    return math.exp(total / count)


def test_cli_sweep_measures_perplexity_and_picks_lambda(sweep_setup, tokenizer):
    root, config, adapter, text = sweep_setup
    report = main(["--base", str(root / "base"), "--negate", f"toxic={adapter}", "--sweep", "0.25:1:0.25",
                   "--ppl-text", str(text), "--dtype", "float64", "--device", "cpu", "--out", str(root / "sweep")])
    saved = json.loads((root / "sweep" / "sweep.json").read_text())
    assert saved == json.loads(json.dumps(report))
    points = saved["points"]
    assert [p["lambda"] for p in points] == [0.0, 0.25, 0.5, 0.75, 1.0]  # lambda 0 added as the reference
    texts = ["the cat sat on the mat", "what is two plus two", "a b c d"]
    s = 8 / 4
    for p in (points[0], points[-1]):  # lambda 0 is the base; lambda 1 subtracts s B A
        deltas = {m: -p["lambda"] * s * b @ a for m, (a, b) in raw_factors(adapter).items()}
        assert p["perplexity"] == pytest.approx(reference_perplexity(config, tokenizer, texts, deltas), rel=1e-9)
    assert abs(points[-1]["perplexity"] - points[0]["perplexity"]) > 1e-3
    within = [p["lambda"] for p in points if p["perplexity"] - points[0]["perplexity"] <= 0.5]
    assert saved["picked_lambda"] == max(within)
    table = (root / "sweep" / "sweep.md").read_text()
    assert f"Picked lambda = {saved['picked_lambda']:g}" in table
    assert sum(line.endswith("| yes |") for line in table.splitlines()) == 1
    assert f"| {saved['picked_lambda']:g} |" in [line for line in table.splitlines() if line.endswith("| yes |")][0]
    assert (root / "sweep" / "adapters" / "lambda_0.5" / "adapter_model.safetensors").is_file()


class PromptLengthScorer(Scorer):
    """Scores an answer by the length of its prompt; None for prompts starting with 'skip'."""

    def score(self, prompts, responses):
        self._check(prompts, responses)
        content = [as_history(p)[-1].content for p in prompts]
        return [None if c.startswith("skip") else float(len(c)) for c in content]


def test_cli_sweep_scores_generated_answers(sweep_setup):
    root, _, adapter, text = sweep_setup
    (root / "scorer.yaml").write_text("class_path: tests.test_pem.PromptLengthScorer\n")
    prompts = write_lines(root / "prompts.jsonl", [{"prompt": "hello"}, {"prompt": "skip me"}, {"prompt": "abc"}])
    main(["--base", str(root / "base"), "--add", f"toxic={adapter}", "--sweep", "0:1:1", "--ppl-text", str(text),
          "--scorer-config", str(root / "scorer.yaml"), "--prompts", str(prompts), "--max-new-tokens", "3",
          "--device", "cpu", "--out", str(root / "sweep")])
    points = json.loads((root / "sweep" / "sweep.json").read_text())["points"]
    assert [(p["score"], p["n_scored"]) for p in points] == [(4.0, 2), (4.0, 2)]
    assert "| 4.0000 | 2 |" in (root / "sweep" / "sweep.md").read_text()


def test_cli_sweep_needs_exactly_one_unweighted_adapter(sweep_setup):
    root, _, adapter, text = sweep_setup
    with pytest.raises(SystemExit):
        main(["--base", str(root / "base"), "--negate", f"toxic={adapter}:1.0", "--sweep", "0:1:0.5",
              "--ppl-text", str(text), "--out", str(root / "sweep")])
