"""Pairwise win rates of model X against model Y on an instruction set (ALMoST section 3), judged by any number of
scorers (``almost.scorers``): a reward model, an LLM with the project's additive rubric, and in the sandbox the
oracle (``almost.sandbox.scorer.OracleScorer``), each chosen in config by ``class_path``.

    python train.py test --config configs/eval/winrate.yaml \\
        --model.init_args.source.path=runs/sandbox/ppo/hf --model.init_args.model_y=runs/sandbox/sft_rmsp/hf
"""

from __future__ import annotations

from dataclasses import replace

import torch

from almost.chat import ChatTemplate, encode_prompt
from almost.evaluation import parse_score, skip_counts, win_tie_loss
from almost.generation import Generation, SamplingConfig, generate
from almost.models import ModelSource, build_causal_lm, load_tokenizer
from almost.prompting import PromptedConfig, Prompter, text_prompt_ids
from almost.records import Turn
from almost.scorers import JudgeScorer, Scorer
from lit_models.evaluation.base import EvaluationModule, Row, describe


class WinRateEvaluation(EvaluationModule):
    """Win / tie / loss of X (``source``) against Y (``model_y``), one question at a time, from X's side;
    batches from ``data_modules.evaluation.InstructionDataModule``.

    Per batch of questions:
        1. generate: X and Y each answer every question as the assistant (chat template, their own tokenizers;
           Y after few-shot demonstrations when ``y_prompt`` is set),
           sampling with ``temperature`` / ``top_p`` (0: greedy) up to ``max_new_tokens``, stopping at EOS or
           at the next ``"\\nUser:"`` tag. Batch ``b`` samples with ``seed`` + the index of its first question,
           so the answers do not depend on the number of processes.
        2. every scorer scores every answer; x wins a question when its score is higher. A scorer that cannot
           judge an answer (an LLM judge whose output holds no readable ``Score: n``) never guesses: the question
           is left out of that scorer's win / tie / loss. An LLM judge (``JudgeScorer``) sees each answer on
           its own, so no presentation order can favour X or Y; its outputs are kept in the rows.

    Metrics, for each scorer ``<j>`` (its name in ``scorers``): ``<j>/win``, ``<j>/tie``, ``<j>/loss``, ``<j>/n``
    (questions judged) and, when ``<j>/n > 0``, ``<j>/win_rate``, ``<j>/tie_rate``, ``<j>/loss_rate``,
    ``<j>/mean_x``, ``<j>/mean_y``; for LLM judges also ``<j>/unparseable`` (outputs without a score) and
    ``<j>/unparseable_rate`` (of all its outputs); ``n_questions``. The answers, scores and judge outputs are
    written to ``answers.jsonl``.

    Args:
        source: model X. model_y: directory of model Y (HF format).
        scorers: the judges by name, e.g. ``{reward_model: {class_path: almost.scorers.RewardModelScorer, ...}}``.
        y_prompt: when given, Y is a vanilla LM prompted few-shot (``<style>-<k>shot``, e.g. ``hhh-5shot``: the
            prompted baseline of ALMoST's tables) with the demonstrations of ``prompter``, instead of answering in the
            bare chat template; Y then stops at the prompter's stop strings.
        share_prefix: compute the prompts' common beginning (Y's demonstrations) once per batch
            (``almost.generation.SamplingConfig.share_prefix``).
    """

    task = "winrate"
    rows_file = "answers.jsonl"

    def __init__(self, source: ModelSource, out_dir: str, model_y: str, scorers: dict[str, Scorer],
                 max_new_tokens: int = 128, temperature: float = 1.0, top_p: float = 0.9, seed: int = 0,
                 template: ChatTemplate | None = None, y_prompt: str | None = None,
                 prompter: Prompter | None = None, share_prefix: bool = False) -> None:
        if not scorers:
            raise ValueError("WinRateEvaluation needs at least one scorer")
        if (y_prompt is None) != (prompter is None):
            raise ValueError("WinRateEvaluation: y_prompt and prompter go together (a prompted Y needs both)")
        y_config = PromptedConfig.parse(f"Y-{y_prompt}") if y_prompt else None
        super().__init__(source, out_dir, template)
        self.y_config, self.prompter = y_config, prompter
        self.scorers = dict(scorers)
        self.hparams["scorers"] = {name: scorer.describe() for name, scorer in self.scorers.items()}  # plain data
        self.hparams["prompter"] = type(prompter).__name__ if prompter is not None else None
        self.tokenizers = {"x": self.tokenizer, "y": load_tokenizer(self.sibling(model_y))}
        self.stop = (f"\n{self.template.user_tag}",)  # a vanilla LM goes on with the next user turn
        self.policy_x: torch.nn.Module | None = None
        self.policy_y: torch.nn.Module | None = None

    def sibling(self, path: str) -> ModelSource:
        """A model directory read like ``source`` (same dtype and remote-code setting)."""
        return ModelSource(path=path, dtype=self.source.dtype, trust_remote_code=self.source.trust_remote_code)

    def models(self) -> dict[str, str]:
        y = self.hparams.model_y + (f" prompted {self.hparams.y_prompt}" if self.y_config else "")
        return {"x": describe(self.source), "y": y,
                **{name: scorer.describe().get("path") or scorer.describe().get("world") or type(scorer).__name__
                   for name, scorer in self.scorers.items()}}

    def build_networks(self) -> None:
        self.policy_x = build_causal_lm(self.source, self.tokenizers["x"])
        self.policy_y = build_causal_lm(self.sibling(self.hparams.model_y), self.tokenizers["y"])
        for scorer in self.scorers.values():
            scorer.load()

    def on_test_start(self) -> None:
        for scorer in self.scorers.values():
            scorer.to(self.device)

    # --- 1. answers -------------------------------------------------------------------------------
    def respond(self, model: torch.nn.Module, tokenizer, prompts: list[str], sampling: SamplingConfig,
                seed: int) -> list[Generation]:
        """One reply per user message, generated as the assistant's turn."""
        ids = [encode_prompt(tokenizer, self.template, [Turn("user", p)]) for p in prompts]
        return generate(model, tokenizer, ids, sampling, batch_size=len(ids), seed=seed)

    def respond_prompted(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[Generation]:
        """Y's replies as a vanilla LM's: each question after ``y_prompt``'s few-shot demonstrations."""
        style, shots = self.y_config.style, self.y_config.shots
        ids = [text_prompt_ids(self.tokenizers["y"], self.prompter.assistant_prompt(style, shots, [Turn("user", p)]))
               for p in prompts]
        sampling = replace(sampling, stop_strings=self.prompter.stop_strings("assistant"))
        return generate(self.policy_y, self.tokenizers["y"], ids, sampling, batch_size=len(ids), seed=seed)

    # --- 2. scores --------------------------------------------------------------------------------
    def judge(self, name: str, questions: list[str], answers: list[str], side: str, rows: list[Row]) -> None:
        """``rows[i][f"{name}_{side}"]``: the scorer's score of ``answers[i]``; for an LLM judge also its outputs."""
        scorer = self.scorers[name]
        if isinstance(scorer, JudgeScorer):
            for row, outputs in zip(rows, scorer.judgements(questions, answers)):
                row.update({f"{name}_output_{side}": outputs[0] if len(outputs) == 1 else outputs,
                            f"{name}_{side}": scorer.scores_of(outputs)})
            return
        for row, value in zip(rows, scorer.score(questions, answers)):
            row[f"{name}_{side}"] = value

    def evaluate_batch(self, batch: list) -> list[Row]:
        hp = self.hparams
        questions = [item.record.text for item in batch]
        # 1. both models answer every question
        sampling = SamplingConfig(hp.max_new_tokens, hp.temperature, hp.top_p, self.stop, hp.share_prefix)
        seed = hp.seed + batch[0].index
        replies = {"x": self.respond(self.policy_x, self.tokenizers["x"], questions, sampling, seed),
                   "y": (self.respond_prompted(questions, sampling, seed) if self.y_config else
                         self.respond(self.policy_y, self.tokenizers["y"], questions, sampling, seed))}
        rows = [{"index": item.index, "id": item.record.id, "question": q} for item, q in zip(batch, questions)]
        for side, generations in replies.items():
            for row, g in zip(rows, generations):
                row.update({f"answer_{side}": g.text, f"finished_{side}": g.finished})
        # 2. every scorer scores every answer
        for side, generations in replies.items():
            for name in self.scorers:
                self.judge(name, questions, [g.text for g in generations], side, rows)
        return rows

    # --- 3. win / tie / loss --------------------------------------------------------------------------
    def summarize(self, rows: list[Row]) -> dict[str, float]:
        metrics: dict[str, float] = {"n_questions": len(rows),
                                     **skip_counts(getattr(self.trainer.datamodule, "skipped", []))}
        for name, scorer in self.scorers.items():
            judged = [r for r in rows if r[f"{name}_x"] is not None and r[f"{name}_y"] is not None]
            metrics.update(judge_metrics(name, [r[f"{name}_x"] for r in judged], [r[f"{name}_y"] for r in judged]))
            if isinstance(scorer, JudgeScorer):
                outputs = [o for r in rows for side in "xy" for o in as_list(r[f"{name}_output_{side}"])]
                unparseable = sum(parse_score(o) is None for o in outputs)
                metrics.update({f"{name}/unparseable": unparseable,
                                f"{name}/unparseable_rate": unparseable / max(1, len(outputs))})
        return metrics

    def markdown(self, metrics: dict[str, float]) -> str:
        lines = ["| judge | X wins | ties | Y wins | X win rate | mean X | mean Y |", "|---|---|---|---|---|---|---|"]
        for name in self.scorers:
            m = {k.removeprefix(f"{name}/"): v for k, v in metrics.items() if k.startswith(f"{name}/")}
            rates = [f"{m[k]:.3f}" if k in m else "n/a" for k in ("win_rate", "mean_x", "mean_y")]
            lines.append(f"| {name} | {m['win']} | {m['tie']} | {m['loss']} | {' | '.join(rates)} |")
        for name in self.scorers:
            if f"{name}/unparseable" in metrics:
                lines += ["", f"{name}: judge outputs without a readable score: {metrics[f'{name}/unparseable']} "
                              f"({metrics[f'{name}/unparseable_rate']:.1%}), left out of its row."]
        return "\n".join(lines)


def as_list(outputs: str | list[str]) -> list[str]:
    return [outputs] if isinstance(outputs, str) else list(outputs)


def judge_metrics(name: str, scores_x: list[float], scores_y: list[float]) -> dict[str, float]:
    """``<name>/...``: win, tie, loss and n; when any question was judged also the rates and mean scores."""
    if not scores_x:
        return {f"{name}/win": 0, f"{name}/tie": 0, f"{name}/loss": 0, f"{name}/n": 0}
    result = win_tie_loss(scores_x, scores_y)
    return {f"{name}/win": result.win, f"{name}/tie": result.tie, f"{name}/loss": result.loss, f"{name}/n": result.n,
            f"{name}/win_rate": result.win_rate, f"{name}/tie_rate": result.tie_rate,
            f"{name}/loss_rate": result.loss_rate, f"{name}/mean_x": sum(scores_x) / result.n,
            f"{name}/mean_y": sum(scores_y) / result.n}
