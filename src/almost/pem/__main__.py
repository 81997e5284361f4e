"""Compose parameter-efficient modules by arithmetic, or sweep one module's weight (Zhang et al. 2023).

Usage. Compose peft adapters trained on the same base into one adapter that ``PeftModel.from_pretrained`` loads::

    python -m almost.pem --add a=runs/lora_a:0.5 --add b=runs/lora_b:0.5 --negate toxic=runs/lora_toxic:1.0 \\
        --mode paper --out runs/pem/ab_minus_toxic

Each ``--add NAME=DIR:WEIGHT`` adds an adapter with weight ``c``; each ``--negate NAME=DIR:LAMBDA`` subtracts one
with strength ``lambda`` (an omitted weight is 1). ``--mode paper`` (default) is the paper's element-wise
arithmetic on ``{A, B}`` (equal ranks; its update has cross terms between adapters); ``--mode exact`` concatenates
ranks so the update is exactly ``sum_i w_i s_i B_i A_i`` (LoRA only). See ``almost.pem.ops`` for the formulas.

Sweep the weight of one adapter, the one given without a weight, and pick it by the paper's rule: the largest
``lambda`` whose perplexity on ``--ppl-text`` (one document per line) rises by at most ``--max-ppl-increase``
over ``lambda = 0``::

    python -m almost.pem --base runs/sft/hf --add alpaca=runs/lora_alpaca:1.0 --negate toxic=runs/lora_toxic \\
        --sweep 0:1:0.1 --ppl-text heldout.txt [--scorer-config scorer.yaml --prompts prompts.jsonl] \\
        --out runs/pem/detox_sweep

``--scorer-config`` holds the ``class_path`` / ``init_args`` of an ``almost.scorers.Scorer``; it scores the
answers the composed model generates to ``--prompts`` (``{"prompt": ...}`` records). The sweep writes
``sweep.json``, ``sweep.md`` and every point's adapter (``adapters/lambda_<value>``) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from almost.pem.io import AdapterError, Term, compose_to_dir, load_adapter

SWEEP_JSON, SWEEP_MD = "sweep.json", "sweep.md"


def parse_term(text: str) -> tuple[str | None, str, float | None]:
    """``NAME=DIR:WEIGHT`` -> ``(name, dir, weight)``; ``NAME=`` and ``:WEIGHT`` may be left out (None)."""
    name, _, rest = text.partition("=") if "=" in text else (None, "", text)
    path, _, weight = rest.rpartition(":")
    try:
        return name or None, path, float(weight)
    except ValueError:
        return name or None, rest, None


def parse_sweep(text: str) -> list[float]:
    """``START:STOP:STEP`` -> the values from START to STOP inclusive, e.g. ``0:1:0.5`` -> ``[0.0, 0.5, 1.0]``."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise AdapterError(f"--sweep takes START:STOP:STEP, e.g. 0:1:0.1, got {text!r}") from None
    if step <= 0 or stop < start:
        raise AdapterError(f"--sweep needs STEP > 0 and STOP >= START, got {text!r}")
    n_steps = math.floor((stop - start) / step + 1e-9)
    return [round(start + i * step, 10) for i in range(n_steps + 1)]


def pick_lambda(lambdas: Sequence[float], perplexities: Sequence[float], max_increase: float) -> float:
    """The largest ``lambda`` with ``ppl(lambda) - ppl(0) <= max_increase`` (``lambdas`` must include 0)."""
    reference = perplexities[list(lambdas).index(0.0)]
    return max(lam for lam, ppl in zip(lambdas, perplexities) if ppl - reference <= max_increase)


@torch.no_grad()
def corpus_perplexity(model, tokenizer, texts: Sequence[str], window: int, stride: int) -> float:
    """Token-level perplexity of ``model`` over documents ``<s> text </s>``, scored by sliding windows
    (as ``lit_models.evaluation.perplexity``): exp(total next-token NLL / scored tokens)."""
    from almost.chat import SpecialIds
    from almost.evaluation import perplexity, sliding_window_nll
    from almost.logprobs import token_logprobs

    device, special = next(model.parameters()).device, SpecialIds.of(tokenizer)

    def logprob_fn(ids: torch.Tensor) -> torch.Tensor:  # (1, T) -> (1, T - 1)
        ids = ids.to(device)
        logits = model(input_ids=ids, use_cache=False).logits  # (1, T, V)
        return token_logprobs(logits[:, :-1], ids[:, 1:]).cpu()

    total, n_tokens = 0.0, 0
    for text in texts:
        ids = [special.bos, *tokenizer(text, add_special_tokens=False)["input_ids"], special.eos]
        nll, n = sliding_window_nll(ids, window, stride, logprob_fn)
        total, n_tokens = total + nll, n_tokens + n
    return perplexity(total, n_tokens)


def load_scorer(path: str | Path):
    """The ``almost.scorers.Scorer`` described by a YAML file of ``class_path`` and ``init_args``."""
    import yaml
    from jsonargparse import ArgumentParser

    from almost.scorers import Scorer

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--scorer", type=Scorer)
    config = parser.parse_object({"scorer": yaml.safe_load(Path(path).read_text(encoding="utf-8"))})
    return parser.instantiate_classes(config).scorer


@torch.no_grad()
def mean_score(model, tokenizer, scorer, prompts: Sequence[str], args: argparse.Namespace) -> tuple[float | None, int]:
    """Mean score of the model's answers to ``prompts`` and how many answers the scorer could judge."""
    from almost.chat import encode_prompt
    from almost.generation import SamplingConfig, generate
    from almost.scorers import as_history, resolve_template

    template = resolve_template(args.base, None)
    histories = [as_history(p) for p in prompts]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    answers = generate(model, tokenizer, [encode_prompt(tokenizer, template, h) for h in histories], sampling,
                       batch_size=args.batch_size, seed=args.seed)
    scores = [s for s in scorer.score(histories, [a.text for a in answers]) if s is not None]
    return (sum(scores) / len(scores) if scores else None), len(scores)


def apply_adapter(model, base, directory: Path, state: dict):
    """The base model with the adapter saved in ``directory``: loaded by peft the first time, then its weights
    replaced in place (every point of a sweep has the same config)."""
    from peft import PeftModel, set_peft_model_state_dict

    if model is None:
        return PeftModel.from_pretrained(base, str(directory)).eval()
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in result.missing_keys if "lora_" in k or "ia3_" in k]
    if result.unexpected_keys or missing:
        raise AdapterError(f"{directory}: weights do not fit the loaded adapter "
                           f"(unexpected {result.unexpected_keys[:2]}, missing {missing[:2]})")
    return model


def write_report(out: Path, report: dict) -> None:
    """``sweep.json`` (everything) and ``sweep.md`` (one table row per lambda, the picked one marked)."""
    (out / SWEEP_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Sweep of {report['swept']['name']!r} ({'negated' if report['swept']['negate'] else 'added'}, "
             f"mode {report['mode']})", "",
             f"Picked lambda = {report['picked_lambda']:g}: the largest whose perplexity rises by at most "
             f"{report['max_ppl_increase']:g} over lambda 0 ({report['reference_perplexity']:.4f}).", "",
             "| lambda | perplexity | increase | score | scored | picked |", "|---|---|---|---|---|---|"]
    for p in report["points"]:
        score = "-" if p["score"] is None else f"{p['score']:.4f}"
        lines.append(f"| {p['lambda']:g} | {p['perplexity']:.4f} | {p['ppl_increase']:+.4f} | {score} | "
                     f"{p['n_scored']} | {'yes' if p['lambda'] == report['picked_lambda'] else ''} |")
    (out / SWEEP_MD).write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_sweep(args: argparse.Namespace, terms: list[Term], swept: int) -> dict:
    """Compose, save and evaluate every point of the sweep; write and return the report."""
    from tqdm import tqdm

    from almost.models import ModelSource, build_causal_lm, load_tokenizer
    from almost.records import Prompt, load_jsonl

    source = ModelSource(path=args.base, tokenizer=args.tokenizer, dtype=args.dtype)
    tokenizer = load_tokenizer(source)
    base = build_causal_lm(source, tokenizer).to(args.device).eval()
    texts = [line.strip() for line in Path(args.ppl_text).read_text(encoding="utf-8").splitlines() if line.strip()]
    scorer = load_scorer(args.scorer_config).load().to(args.device) if args.scorer_config else None
    prompts = [p.prompt for p in load_jsonl(args.prompts, Prompt)] if scorer else []
    lambdas = sorted({0.0, *parse_sweep(args.sweep)})  # lambda 0 is the perplexity reference
    out, model, points = Path(args.out), None, []
    bar = tqdm(lambdas, desc=f"sweep {terms[swept].adapter.name}", unit="point")
    for lam in bar:
        point_terms = [replace(t, weight=lam) if i == swept else t for i, t in enumerate(terms)]
        directory = out / "adapters" / f"lambda_{lam:g}"
        state, _ = compose_to_dir(point_terms, args.mode, directory)
        model = apply_adapter(model, base, directory, state)
        ppl = corpus_perplexity(model, tokenizer, texts, args.ppl_window, args.ppl_stride)
        score, n_scored = mean_score(model, tokenizer, scorer, prompts, args) if scorer else (None, 0)
        points.append({"lambda": lam, "perplexity": ppl, "score": score, "n_scored": n_scored,
                       "adapter": str(directory)})
        bar.set_postfix(ppl=f"{ppl:.3f}")
    reference = points[0]["perplexity"]
    for p in points:
        p["ppl_increase"] = p["perplexity"] - reference
    report = {"mode": args.mode, "swept": terms[swept].describe(), "terms": [t.describe() for t in terms],
              "max_ppl_increase": args.max_ppl_increase, "reference_perplexity": reference,
              "picked_lambda": pick_lambda(lambdas, [p["perplexity"] for p in points], args.max_ppl_increase),
              "ppl_text": args.ppl_text, "scorer": scorer.describe() if scorer else None, "points": points}
    write_report(out, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m almost.pem", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--add", action="append", default=[], metavar="NAME=DIR:WEIGHT", help="adapter to add")
    parser.add_argument("--negate", action="append", default=[], metavar="NAME=DIR:LAMBDA", help="adapter to negate")
    parser.add_argument("--mode", choices=("paper", "exact"), default="paper")
    parser.add_argument("--out", required=True, help="composed adapter directory, or the sweep's output folder")
    parser.add_argument("--base", help="base model directory (needed by --sweep)")
    parser.add_argument("--tokenizer", help="tokenizer directory; default --base")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", metavar="START:STOP:STEP", help="sweep the weight of the adapter given without one")
    parser.add_argument("--ppl-text", help="text file, one document per line (needed by --sweep)")
    parser.add_argument("--ppl-window", type=int, default=256, help="tokens per forward pass when scoring")
    parser.add_argument("--ppl-stride", type=int, default=128, help="new tokens scored per window after the first")
    parser.add_argument("--max-ppl-increase", type=float, default=0.5)
    parser.add_argument("--scorer-config", help="YAML: class_path / init_args of an almost.scorers.Scorer")
    parser.add_argument("--prompts", help="JSONL of {'prompt': ...} records answered for --scorer-config")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the command; returns the composition's recipe, or the sweep's report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    specs = [(text, False) for text in args.add] + [(text, True) for text in args.negate]
    parsed = [(parse_term(text), negate) for text, negate in specs]
    unweighted = [i for i, ((_, _, weight), _) in enumerate(parsed) if weight is None]
    if args.sweep and len(unweighted) != 1:
        parser.error(f"--sweep needs exactly one adapter given without a weight (the swept one), got {len(unweighted)}")
    if args.sweep and not (args.base and args.ppl_text):
        parser.error("--sweep needs --base and --ppl-text")
    if bool(args.scorer_config) != bool(args.prompts):
        parser.error("--scorer-config and --prompts go together")
    terms = [Term(load_adapter(path, name), 1.0 if weight is None else weight, negate)
             for (name, path, weight), negate in parsed]
    if args.sweep:
        report = run_sweep(args, terms, unweighted[0])
        print(f"picked lambda {report['picked_lambda']:g}; table in {Path(args.out) / SWEEP_MD}")
        return report
    compose_to_dir(terms, args.mode, args.out)
    print(f"composed adapter written to {args.out}")
    return {"mode": args.mode, "terms": [t.describe() for t in terms]}


if __name__ == "__main__":
    try:
        main()
    except AdapterError as e:
        raise SystemExit(f"error: {e}") from None
