"""What the TRL side-by-side benchmarks share: the peer's models in our format, the peer's dumped data as
DataModules, a step timer, the machine's matmul rate and the FLOP floors.

The peer scripts live in ``../shared/peer`` (not part of this project; see its README.md): ``setup.sh`` builds
two TRL virtual environments and the tiny random Llamas in ``/tmp/peer-models/<size>/{policy,ref,reward}``;
``--dump-prompts`` / ``--dump-data`` write the exact token ids TRL trains on, as does ``trl_dpo_bench.py --dump-data``
(here, run in the peer's TRL 1.16 environment) for DPO. Our benchmarks read those files.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from almost.batching import pad_sequences
from almost.chat import IGNORE_INDEX

PEER_MODELS = "/tmp/peer-models"


def reward_model_dir(size: str, models_root: str = PEER_MODELS, cache: str = "/tmp/almost-peer") -> str:
    """The peer's ``LlamaForSequenceClassification`` reward model saved as our ``RewardModel`` (backbone + head
    with the same score weights and a zero bias), converted once into ``cache``; checked to give the same scores."""
    from transformers import AutoModelForSequenceClassification

    from almost.models import HEAD_FILE, ModelSource, RewardModel, load_tokenizer

    source, target = Path(models_root, size, "reward"), Path(cache, size, "reward")
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is missing: run `bash ../shared/peer/setup.sh` first")
    if (target / HEAD_FILE).is_file():
        return str(target)
    tokenizer = load_tokenizer(ModelSource(path=str(source)))
    ours = RewardModel.build(ModelSource(path=str(source)), tokenizer)
    theirs = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1, dtype=torch.float32)
    with torch.no_grad():
        ours.head.weight.copy_(theirs.score.weight)
        ours.head.bias.zero_()
        ids = torch.randint(4, tokenizer.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        mask[1, 15:] = 0
        ids[1, 15:] = tokenizer.pad_token_id  # right padding: TRL reads the score at the last non-pad token
        torch.testing.assert_close(ours.score(ids, mask), theirs(input_ids=ids, attention_mask=mask).logits[:, 0])
    ours.save_pretrained(target)
    tokenizer.save_pretrained(str(target))
    return str(target)


def add_step_arguments(parser, steps: int, warmup: int, lr: float, batch_help: str) -> None:
    """The options both step benchmarks share, with the peer scripts' names and defaults."""
    parser.add_argument("--size", default="1m", choices=["1m", "5m"])
    parser.add_argument("--steps", type=int, default=steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps before the timed ones")
    parser.add_argument("--batch", type=int, default=16, help=batch_help)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-root", default=PEER_MODELS)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class PromptIdsDataModule(L.LightningDataModule):
    """The PPO prompts TRL trains on (``--dump-prompts``: ``{"input_ids": [...]}`` per line), left-padded batches
    shuffled with a seeded sampler, the last incomplete batch dropped (TRL's dataloader does the same)."""

    def __init__(self, path: str, pad_token_id: int, batch_size: int = 16, seed: int = 42) -> None:
        super().__init__()
        self.prompts = [row["input_ids"] for row in read_jsonl(path)]
        self.pad_token_id, self.batch_size, self.seed = pad_token_id, batch_size, seed

    def collate(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_sequences(prompts, self.pad_token_id, side="left")
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.prompts, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          collate_fn=self.collate, generator=torch.Generator().manual_seed(self.seed))


class PairIdsDataModule(L.LightningDataModule):
    """The preference pairs TRL trains on (``--dump-data``: ``chosen_ids`` / ``rejected_ids``), as the batches
    ``ComparisonDataModule`` makes: rows ``[0, B)`` chosen, ``[B, 2B)`` rejected, right-padded to the longest."""

    def __init__(self, path: str, pad_token_id: int, batch_size: int = 16, seed: int = 42) -> None:
        super().__init__()
        self.pairs = [(row["chosen_ids"], row["rejected_ids"]) for row in read_jsonl(path)]
        self.pad_token_id, self.batch_size, self.seed = pad_token_id, batch_size, seed

    def collate(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_sequences([c for c, _ in pairs] + [r for _, r in pairs], self.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.pairs, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          collate_fn=self.collate, generator=torch.Generator().manual_seed(self.seed))


class PreferenceIdsDataModule(L.LightningDataModule):
    """The DPO pairs TRL trains on (``trl_dpo_bench.py --dump-data``: ``prompt_ids``, ``chosen_ids``,
    ``rejected_ids``), as the batches ``PreferenceDataModule`` makes: ``chosen_*`` / ``rejected_*`` input ids,
    attention mask and labels ``(B, T)`` with one ``T`` for both (right-padded to the longest of the ``2B``
    sequences, as TRL pads), labels ``IGNORE_INDEX`` on the prompt and the padding; shuffled with a seeded sampler."""

    def __init__(self, path: str, pad_token_id: int, batch_size: int = 16, seed: int = 42) -> None:
        super().__init__()
        self.pairs = [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in read_jsonl(path)]
        self.pad_token_id, self.batch_size, self.seed = pad_token_id, batch_size, seed

    def collate(self, pairs: list[tuple[list[int], list[int], list[int]]]) -> dict[str, torch.Tensor]:
        sequences = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
        labels = [[IGNORE_INDEX] * len(p) + c for p, c, _ in pairs] + [[IGNORE_INDEX] * len(p) + r for p, _, r in pairs]
        input_ids, attention_mask = pad_sequences(sequences, self.pad_token_id)  # (2B, T)
        padded_labels, _ = pad_sequences(labels, IGNORE_INDEX)  # (2B, T)
        batch = {"record_index": torch.arange(len(pairs))}  # (B,): unused with a live reference
        for name, rows in (("input_ids", input_ids), ("attention_mask", attention_mask), ("labels", padded_labels)):
            batch[f"chosen_{name}"], batch[f"rejected_{name}"] = rows.chunk(2)  # (B, T) each
        return batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.pairs, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          collate_fn=self.collate, generator=torch.Generator().manual_seed(self.seed))


class StepTimer(L.Callback):
    """Wall time between consecutive training-batch ends (the first from the start of training), what the peer
    scripts measure between TRL's ``on_step_end`` calls; and, per step, the logged metrics named in ``record``."""

    def __init__(self, record: tuple[str, ...] = ()) -> None:
        self.record = record
        self.marks: list[float] = []
        self.metrics: list[dict[str, float]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.marks.append(time.perf_counter())
        self.metrics.append({name: trainer.callback_metrics[name].item() for name in self.record})

    @property
    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def median(self, warmup: int) -> float:
        return statistics.median(self.step_seconds[warmup:])

    def metric_lines(self) -> list[str]:
        """``# <name>=v1,v2,...`` per recorded metric (full precision: compared before and after a change)."""
        return [f"# {name}=" + ",".join(f"{m[name]:.8g}" for m in self.metrics) for name in self.record]


def quiet_trainer(steps: int, callbacks: list[L.Callback], **trainer_kwargs) -> L.Trainer:
    """One CPU process, fp32, nothing written: no logger, checkpoints, progress bar or summary."""
    return L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_epochs=1, limit_train_batches=steps,
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks, **trainer_kwargs)


def matmul_gflops(threads: int = 2, size: int = 1024, seconds: float = 2.0) -> float:
    """Best fp32 matmul rate (GFLOP/s) of ``size x size`` products on ``threads`` threads, over ``seconds``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def ppo_floor_flops(policy_params: int, reward_params: int, batch: int, prompt_len: int, response_len: int,
                    ppo_epochs: int) -> float:
    """FLOPs one PPO step cannot go below: forward-only passes (2 x params x tokens) of the rollout (policy),
    the reference, the reward model and the value model over ``[prompt | response]``, and ``ppo_epochs``
    trained passes (6 x params x tokens) of policy and value model. The policy's rollout log-probs come with
    generation; attention's own FLOPs are left out."""
    tokens = batch * (prompt_len + response_len)
    forward = 2 * tokens * (2 * policy_params + 2 * reward_params)
    trained = 6 * tokens * ppo_epochs * (policy_params + reward_params)
    return float(forward + trained)


def rm_floor_flops(reward_params: int, tokens: int) -> float:
    """FLOPs of one reward-model step over ``tokens`` real tokens: 6 x params x tokens."""
    return 6.0 * reward_params * tokens


def dpo_floor_flops(policy_params: int, tokens: int) -> float:
    """FLOPs of one DPO step over ``tokens`` real tokens (chosen and rejected sequences together): the policy's
    trained pass (6 x params x tokens) and the reference's forward-only pass (2 x params x tokens)."""
    return 8.0 * policy_params * tokens
