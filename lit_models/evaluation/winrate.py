"""Pairwise win rates of model X against model Y on an instruction set (ALMoST section 3), judged by a reward
model, by an LLM with the project's additive rubric (``almost.evaluation.judge``) and, in the sandbox, by the oracle.

    python train.py test --config configs/eval/winrate.yaml \\
        --model.init_args.source.path=runs/sandbox/ppo/hf --model.init_args.model_y=runs/sandbox/sft_rmsp/hf
"""

from __future__ import annotations

import torch

from almost.chat import ChatTemplate, encode_exchange, encode_prompt
from almost.evaluation import parse_score, render_judge_prompt, win_tie_loss
from almost.generation import Generation, SamplingConfig, generate
from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer
from almost.records import Turn
from almost.sandbox.build import load_world
from almost.sandbox.oracle import score as oracle_score
from almost.sandbox.world import World
from lit_models.evaluation.base import EvaluationModule, Row, describe
from lit_models.evaluation.scoring import load_reward_model, reward_scores

JUDGES = ("reward_model", "judge", "oracle")


class WinRateEvaluation(EvaluationModule):
    """Win / tie / loss of X (``source``) against Y (``model_y``), one question at a time, from X's side;
    batches from ``data_modules.evaluation.InstructionDataModule``.

    Per batch of questions:
        1. generate: X and Y each answer every question as the assistant (chat template, their own tokenizers),
           sampling with ``temperature`` / ``top_p`` (0: greedy) up to ``max_new_tokens``, stopping at EOS or
           at the next ``"\\nUser:"`` tag. Batch ``b`` samples with ``seed`` + the index of its first question,
           so the answers do not depend on the number of processes.
        2. judge each answer by whichever judges are configured; x wins a question when its score is higher:
           ``reward_model``: reward of the (question, answer) exchange.
           ``judge``: an LLM grades each answer alone with ``almost.evaluation.JUDGE_RUBRIC`` (greedy, at most
           ``judge_max_new_tokens``), the score read from its last ``Score: n`` line. Each answer is shown on
           its own, so no presentation order can favour X or Y. An output without a readable score is never
           guessed: the question is left out of the judge's win / tie / loss and counted as unparseable.
           ``oracle``: the sandbox oracle's total (``world``; every question must be one of that world's).

    Metrics, for each configured judge ``<j>``: ``<j>/win``, ``<j>/tie``, ``<j>/loss``, ``<j>/n`` (questions
    judged) and, when ``<j>/n > 0``, ``<j>/win_rate``, ``<j>/tie_rate``, ``<j>/loss_rate``, ``<j>/mean_x``,
    ``<j>/mean_y``; for the rubric judge also ``judge/unparseable`` (outputs without a score) and
    ``judge/unparseable_rate`` (of all its outputs); ``n_questions``. The answers, scores and judge outputs are
    written to ``answers.jsonl``.

    Args:
        source: model X. model_y: directory of model Y (HF format).
        reward_model: directory of a saved reward model, or None.
        judge: directory of the causal LM used as the rubric judge, or None.
        world: directory of a sandbox world (``python -m almost.sandbox.build``) for the oracle, or None.
        max_length: longest exchange the reward model scores (the question is cut from the left first).
    """

    task = "winrate"
    rows_file = "answers.jsonl"

    def __init__(self, source: ModelSource, out_dir: str, model_y: str, reward_model: str | None = None,
                 judge: str | None = None, world: str | None = None, max_new_tokens: int = 128,
                 temperature: float = 1.0, top_p: float = 0.9, judge_max_new_tokens: int = 256, max_length: int = 1024,
                 seed: int = 0, template: ChatTemplate = ChatTemplate()) -> None:
        if not (reward_model or judge or world):
            raise ValueError("WinRateEvaluation needs a judge: at least one of reward_model, judge or world")
        super().__init__(source, out_dir, template)
        self.tokenizers = {"x": self.tokenizer, "y": load_tokenizer(self.sibling(model_y))}
        if reward_model:
            self.tokenizers["reward_model"] = load_tokenizer(self.sibling(reward_model))
        if judge:
            self.tokenizers["judge"] = load_tokenizer(self.sibling(judge))
        self.world: World | None = load_world(world) if world else None
        self.stop = (f"\n{self.template.user_tag}",)  # a vanilla LM goes on with the next user turn
        self.policy_x: torch.nn.Module | None = None
        self.policy_y: torch.nn.Module | None = None
        self.reward_net: RewardModel | None = None
        self.judge_net: torch.nn.Module | None = None

    def sibling(self, path: str) -> ModelSource:
        """A model directory read like ``source`` (same dtype and remote-code setting)."""
        return ModelSource(path=path, dtype=self.source.dtype, trust_remote_code=self.source.trust_remote_code)

    @property
    def judges(self) -> list[str]:
        hp = self.hparams
        return [name for name, given in zip(JUDGES, (hp.reward_model, hp.judge, hp.world)) if given]

    def models(self) -> dict[str, str]:
        hp = self.hparams
        roles = {"x": describe(self.source), "y": hp.model_y, "reward_model": hp.reward_model, "judge": hp.judge,
                 "world": hp.world}
        return {role: path for role, path in roles.items() if path}

    def build_networks(self) -> None:
        hp = self.hparams
        self.policy_x = build_causal_lm(self.source, self.tokenizers["x"])
        self.policy_y = build_causal_lm(self.sibling(hp.model_y), self.tokenizers["y"])
        if hp.reward_model:
            self.reward_net = load_reward_model(self.sibling(hp.reward_model), self.tokenizers["reward_model"])
        if hp.judge:
            self.judge_net = build_causal_lm(self.sibling(hp.judge), self.tokenizers["judge"])

    # --- 1. answers -------------------------------------------------------------------------------
    def respond(self, model: torch.nn.Module, tokenizer, prompts: list[str], sampling: SamplingConfig,
                seed: int) -> list[Generation]:
        """One reply per user message, generated as the assistant's turn."""
        ids = [encode_prompt(tokenizer, self.template, [Turn("user", p)]) for p in prompts]
        return generate(model, tokenizer, ids, sampling, batch_size=len(ids), seed=seed)

    # --- 2. judges ----------------------------------------------------------------------------------
    def rewards(self, questions: list[str], answers: list[str]) -> list[float]:
        tok = self.tokenizers["reward_model"]
        sequences = [encode_exchange(tok, self.template, [Turn("user", q)], a, self.hparams.max_length)
                     for q, a in zip(questions, answers)]
        return reward_scores(self.reward_net, sequences, tok.pad_token_id).tolist()

    def judge_outputs(self, questions: list[str], answers: list[str]) -> list[str]:
        sampling = SamplingConfig(self.hparams.judge_max_new_tokens, temperature=0.0, stop_strings=self.stop)
        prompts = [render_judge_prompt(q, a) for q, a in zip(questions, answers)]
        return [g.text for g in self.respond(self.judge_net, self.tokenizers["judge"], prompts, sampling, seed=0)]

    def evaluate_batch(self, batch: list) -> list[Row]:
        hp = self.hparams
        questions = [item.record.text for item in batch]
        # 1. both models answer every question
        sampling = SamplingConfig(hp.max_new_tokens, hp.temperature, hp.top_p, self.stop)
        seed = hp.seed + batch[0].index
        replies = {"x": self.respond(self.policy_x, self.tokenizers["x"], questions, sampling, seed),
                   "y": self.respond(self.policy_y, self.tokenizers["y"], questions, sampling, seed)}
        rows = [{"index": item.index, "id": item.record.id, "question": q} for item, q in zip(batch, questions)]
        for side, generations in replies.items():
            for row, g in zip(rows, generations):
                row.update({f"answer_{side}": g.text, f"finished_{side}": g.finished})
        # 2. every configured judge scores every answer
        for side, generations in replies.items():
            answers = [g.text for g in generations]
            if hp.reward_model:
                for row, reward in zip(rows, self.rewards(questions, answers)):
                    row[f"reward_model_{side}"] = reward
            if hp.judge:
                for row, output in zip(rows, self.judge_outputs(questions, answers)):
                    row.update({f"judge_output_{side}": output, f"judge_{side}": parse_score(output)})
            if self.world is not None:
                for row, q, a in zip(rows, questions, answers):
                    row[f"oracle_{side}"] = oracle_score(q, a, self.world).total
        return rows

    # --- 3. win / tie / loss --------------------------------------------------------------------------
    def summarize(self, rows: list[Row]) -> dict[str, float]:
        metrics: dict[str, float] = {"n_questions": len(rows)}
        for name in self.judges:
            judged = [r for r in rows if r[f"{name}_x"] is not None and r[f"{name}_y"] is not None]
            metrics.update(judge_metrics(name, [r[f"{name}_x"] for r in judged], [r[f"{name}_y"] for r in judged]))
        if "judge" in self.judges:
            unparseable = sum((r["judge_x"] is None) + (r["judge_y"] is None) for r in rows)
            metrics.update({"judge/unparseable": unparseable, "judge/unparseable_rate": unparseable / (2 * len(rows))})
        return metrics

    def markdown(self, metrics: dict[str, float]) -> str:
        lines = ["| judge | X wins | ties | Y wins | X win rate | mean X | mean Y |", "|---|---|---|---|---|---|---|"]
        for name in self.judges:
            m = {k.removeprefix(f"{name}/"): v for k, v in metrics.items() if k.startswith(f"{name}/")}
            rates = [f"{m[k]:.3f}" if k in m else "n/a" for k in ("win_rate", "mean_x", "mean_y")]
            lines.append(f"| {name} | {m['win']} | {m['tie']} | {m['loss']} | {' | '.join(rates)} |")
        if "judge" in self.judges:
            lines += ["", f"Judge outputs without a readable score: {metrics['judge/unparseable']} "
                          f"({metrics['judge/unparseable_rate']:.1%}), left out of the judge's row."]
        return "\n".join(lines)


def judge_metrics(name: str, scores_x: list[float], scores_y: list[float]) -> dict[str, float]:
    """``<name>/...``: win, tie, loss and n; when any question was judged also the rates and mean scores."""
    if not scores_x:
        return {f"{name}/win": 0, f"{name}/tie": 0, f"{name}/loss": 0, f"{name}/n": 0}
    result = win_tie_loss(scores_x, scores_y)
    return {f"{name}/win": result.win, f"{name}/tie": result.tie, f"{name}/loss": result.loss, f"{name}/n": result.n,
            f"{name}/win_rate": result.win_rate, f"{name}/tie_rate": result.tie_rate,
            f"{name}/loss_rate": result.loss_rate, f"{name}/mean_x": sum(scores_x) / result.n,
            f"{name}/mean_y": sum(scores_y) / result.n}
