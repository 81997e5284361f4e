"""RLSF, the last stage of ALMoST (Kim et al. 2023, arXiv:2305.13735, section 2.3): PPO against a reward,
maximising ``E[r(x, y) - beta * log(pi(y|x) / rho(y|x))]`` with ``rho`` the frozen SFT policy.

The math lives in ``almost.ppo`` (losses, GAE, KL controllers) and ``almost.rollout`` (the rollout container and
its token positions); this module orchestrates one rollout per training batch, in the steps of the paper's
PPO: 1. sample, 2. score, 3. log-probs, values, KL-penalised rewards and advantages, 4. PPO epochs x
minibatches, 5. statistics and the KL controller, 6. log.

The reward is any ``almost.scorers.Scorer``. A reward model that shares the policy's tokenizer and chat template
scores the rollout's token ids directly (and is sharded with the other networks under FSDP2); any other scorer
(the sandbox oracle, an LLM judge, a reward model with its own tokenizer) gets the decoded answers.

Steps. Lightning counts every ``step()`` of each of the two optimizers (policy, critic) in ``global_step``,
so one rollout advances it by ``2 * ppo_epochs * ceil(ceil(B / minibatch_size) / gradient_accumulation_steps)``.
Bound PPO runs in rollouts with ``max_epochs`` and ``limit_train_batches`` (one batch = one rollout), not
``max_steps``; ``rollouts_done`` counts rollouts and is saved in checkpoints.

Resuming. Checkpoints hold the networks, both optimizers, the KL controller, the reward moments and
``rollouts_done``; sampling and minibatch shuffling are seeded from ``(seed, rank, rollouts_done)`` and leave
the global RNG alone. A run resumed from an end-of-epoch checkpoint therefore repeats the uninterrupted
trajectory (tested). Mid-epoch, Lightning restarts a plain ``DataLoader`` at the start of the epoch, so the
prompts differ unless the DataModule's loader is resumable (``state_dict``/``load_state_dict``).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from almost.distributed import is_sharded, shard_model
from almost.logprobs import token_logprobs
from almost.models import ModelSource, RewardModel, build_causal_lm, disable_dropout, load_tokenizer
from almost.ppo import (AdaptiveKLController, FixedKLController, PPOStats, RolloutStats, RunningMoments, as_metrics,
                        entropy_from_logits, explained_variance, gae_advantages, kl_estimate, masked_whiten,
                        per_token_rewards, policy_loss, value_loss)
from almost.rollout import (Rollout, ends_with_eos, response_logits, response_logprobs, response_mask_from_ids,
                            response_values, sequence_kl, shape_scores)
from almost.scorers import RewardModelScorer, Scorer, resolve_template
from lit_models.callbacks import check_finite
from lit_models.export import export_pretrained

VALIDATION_SEED_OFFSET = 2**40  # validation samples from its own seed stream, the same at every evaluation


class PPOModule(L.LightningModule):
    """PPO with a KL penalty (per token, k1) to the SFT policy; separate actor and critic networks.

    Batches come from ``data_modules.PromptDataModule`` (left-padded prompts): each training batch is one
    rollout of ``batch_size`` prompts per process. Manual optimization: AdamW for the policy and for the critic.

    Args:
        source: the SFT policy to start from (named ``source`` like every stage so that ``train.py`` links its
            tokenizer to the DataModule). The reference policy ``rho`` is a frozen copy of it.
        reward: the scorer of each answer (``almost.scorers.Scorer``, chosen by ``class_path``), or the directory
            of a saved reward model (a ``RewardModelScorer`` with its defaults). Every answer must get a score.
        critic: directory of a ``RewardModel`` (or a causal LM: new head) to start the critic from; default the
            reward model's directory (required when the reward is not a reward model). It gives per-token values.
        max_new_tokens, temperature, top_p: sampling (top-k off). Log-probs are those of
            ``softmax(logits / temperature)``; with ``top_p < 1`` the sampler differs slightly from that.
        recompute_logprobs: take the rollout policy's log-probs from a separate forward pass over the finished
            sequences instead of from the sampling pass's own logits (the default, one forward pass fewer). The
            two agree to float rounding in float32; in bf16 the KV-cached sampling pass differs a little more
            from a training forward, so the first minibatch's ratio is then not exactly 1.
        ppo_epochs: passes over each rollout.
        minibatch_size: rollout rows per forward/backward pass of the PPO update.
        forward_batch_size: rollout rows per no-grad forward pass of the rollout stage (reference and value
            model; the reward model scores the whole rollout at once). Default: the whole rollout in one pass.
        gradient_accumulation_steps: minibatches summed into one optimizer step.
        policy_lr, critic_lr: AdamW learning rates (constant). There is no ``vf_coef``: the critic is its own
            network with its own optimizer, where a loss coefficient would only rescale what Adam normalises.
        clip, value_clip: PPO ratio clip and value clip (in reward units).
        gamma, lam: discount and GAE lambda.
        whiten_advantages: whiten advantages over the rollout's real tokens (per process).
        kl_coef: beta, the initial KL coefficient; fixed unless ``kl_target`` is set.
        kl_target, kl_horizon: adaptive controller of Ziegler et al. (2019) steering the sequence KL to the target.
        reward_clip: clip shaped scores to ``[-reward_clip, reward_clip]``.
        normalize_rewards: standardise scores by the running mean and std of all scores seen (all processes).
        missing_eos_penalty: score given, instead of the reward model's, to a response without EOS.
        max_grad_norm: clip each network's gradient norm (``None``: no clipping).
        lora: ``peft.LoraConfig`` keyword arguments; the policy trains only the adapter and the reference is the
            same network with the adapter disabled (no second copy). LoRA dropout is zeroed like all dropout.
        gradient_checkpointing: recompute activations of policy and critic in the backward pass.
        compile: ``torch.compile`` the policy and critic forward passes of the PPO update (generation and the
            rollout's forward passes stay eager). Pays when small models spend their time on per-operation
            overhead (the 1M-parameter benchmark model: a quarter off each minibatch); the first rollout pays the
            compilation (tens of seconds on a CPU). Single process; not combined with LoRA or FSDP2.
        seed: base of the per-rollout, per-process seeds of sampling and minibatch shuffling, so a resumed run
            samples what the uninterrupted run would have.
        log_samples_every_n_rollouts, n_log_samples: sample responses written as TensorBoard text (0: never).
        eval_scorers: instruments, never the reward: each scores the validation answers, logged as
            ``val/<name>_score`` (mean over the answers it can judge) next to ``val/score`` and ``val/kl``, so that
            a run draws its over-optimization curve (the sandbox logs the oracle this way).
        export_dir: at the end of ``fit``, save the policy (LoRA merged) and tokenizer here in HF format.
    """

    def __init__(
        self,
        source: ModelSource,
        reward: Scorer | str,
        critic: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        recompute_logprobs: bool = False,
        ppo_epochs: int = 4,
        minibatch_size: int = 8,
        forward_batch_size: int | None = None,
        gradient_accumulation_steps: int = 1,
        policy_lr: float = 1e-6,
        critic_lr: float = 5e-6,
        clip: float = 0.2,
        value_clip: float = 0.2,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        kl_coef: float = 0.05,
        kl_target: float | None = None,
        kl_horizon: int = 10000,
        reward_clip: float | None = None,
        normalize_rewards: bool = False,
        missing_eos_penalty: float | None = None,
        max_grad_norm: float | None = 1.0,
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        seed: int = 0,
        log_samples_every_n_rollouts: int = 20,
        n_log_samples: int = 4,
        eval_scorers: dict[str, Scorer] | None = None,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"PPO samples: temperature must be > 0, got {temperature}")
        if min(ppo_epochs, minibatch_size, gradient_accumulation_steps, max_new_tokens, forward_batch_size or 1) < 1:
            raise ValueError("ppo_epochs, minibatch_size, forward_batch_size, gradient_accumulation_steps and "
                             "max_new_tokens must be >= 1")
        self.source = ModelSource.of(source)
        self.reward = RewardModelScorer(reward) if isinstance(reward, str) else reward
        if critic is None and not isinstance(self.reward, RewardModelScorer):
            raise ValueError(f"PPOModule: the reward {type(self.reward).__name__} is not a reward model: set critic "
                             "(a reward model or causal LM directory to start the value network from)")
        self.eval_scorers = dict(eval_scorers or {})
        self.save_hyperparameters(ignore=["source", "reward", "eval_scorers"])
        self.hparams["source"] = asdict(self.source)  # plain data, so checkpoints load with weights_only
        self.hparams["reward"] = self.reward.describe()
        self.hparams["eval_scorers"] = {name: scorer.describe() for name, scorer in self.eval_scorers.items()}
        self.automatic_optimization = False
        self.tokenizer = load_tokenizer(self.source)
        self.kl_controller = (AdaptiveKLController(kl_coef, kl_target, kl_horizon) if kl_target is not None
                              else FixedKLController(kl_coef))
        self.reward_moments = RunningMoments()
        self.rollouts_done = 0
        # built in configure_model, once
        self.policy: nn.Module | None = None  # trainable (a PeftModel with LoRA)
        self.reference: nn.Module | None = None  # frozen copy of the initial policy; None with LoRA
        self.reward_net: RewardModel | None = None  # frozen; the token path of a reward-model reward, else None
        self.critic: RewardModel | None = None  # trainable
        # with ``compile``: the compiled forwards of policy LM and critic the PPO update calls, by name (a plain
        # dict of functions, so that no network is registered twice)
        self.compiled: dict[str, Callable[..., Any]] = {}

    # --- model ----------------------------------------------------------------------------------
    @property
    def policy_lm(self) -> nn.Module:
        """The causal LM that generates and is called for log-probs (under LoRA: the model inside peft,
        adapters injected; it is also the FSDP root, so its forward hooks gather the shards)."""
        return self.policy.get_base_model() if self.hparams.lora else self.policy

    def configure_model(self) -> None:
        if self.policy is not None:  # Lightning may call this more than once
            return
        reset_seed()  # as in TrainingStage: fresh weights (``source.arch``) equal under every strategy
        hp = self.hparams
        policy = build_causal_lm(self.source, self.tokenizer)
        self.check_inputs(policy)
        reward_net = self.token_path_reward_model(policy)
        critic = RewardModel.build(ModelSource(path=hp.critic or self.reward.path, dtype=self.source.dtype),
                                   self.tokenizer)
        reference = None if hp.lora else copy.deepcopy(policy).requires_grad_(False)
        if reward_net is not None:
            reward_net.requires_grad_(False)
        if hp.lora:
            from peft import LoraConfig, get_peft_model

            policy = get_peft_model(policy, LoraConfig(**{"task_type": "CAUSAL_LM", **hp.lora}))
        for net in (policy, reference, reward_net, critic):
            if net is not None:  # with dropout off, the mode only switches gradient checkpointing and caching:
                disable_dropout(net)  # train mode as Lightning expects at fit start, eval in rollout_mode
                net.train()
        self.policy, self.reference, self.reward_net, self.critic = policy, reference, reward_net, critic
        if hp.gradient_checkpointing:
            for lm in (self.policy_lm, critic.backbone):
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.device_mesh is not None:  # FSDP2 (see lit_models.strategy.FSDP2Strategy)
            for net in (self.policy_lm, reference, reward_net, critic):
                if net is not None:
                    shard_model(net, self.device_mesh["data_parallel"])
        if hp.compile:
            if hp.lora or self.device_mesh is not None:
                raise ValueError("PPOModule(compile=True) runs in a single process without LoRA")
            self.compiled = {"policy": torch.compile(self.policy_lm.forward), "critic": torch.compile(critic.forward)}

    def token_path_reward_model(self, policy: nn.Module) -> RewardModel | None:
        """The reward model to score token ids with, when the reward is one that reads the policy's ids as they
        are (same vocabulary and chat template); None when answers must be decoded for the scorer."""
        if not isinstance(self.reward, RewardModelScorer):
            return None
        net = RewardModel.from_pretrained(self.reward.path, dtype=self.source.dtype)
        same_vocabulary = net.backbone.config.vocab_size == policy.config.vocab_size
        return net if same_vocabulary and self.reward.template == self.data_template() else None

    def data_template(self):
        """The chat template the prompts are rendered with (the DataModule's)."""
        from almost.chat import ChatTemplate

        datamodule = self.trainer.datamodule if self._trainer is not None else None
        return getattr(datamodule, "template", ChatTemplate())

    def check_inputs(self, policy: nn.Module) -> None:
        """Before any rollout: the prompts are rendered in the template the policy was trained with, and prompts
        plus responses fit in the policy's positions."""
        if self.source.path is not None:
            resolve_template(self.source.path, self.data_template())  # raises on a template the policy never saw
        limit = getattr(policy.config, "max_position_embeddings", None)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        prompt_length = getattr(getattr(datamodule, "hparams", None), "max_length", None)
        if limit is not None and prompt_length is not None and prompt_length + self.hparams.max_new_tokens > limit:
            raise ValueError(f"PPO: prompts of up to {prompt_length} tokens (data max_length) plus max_new_tokens "
                             f"{self.hparams.max_new_tokens} exceed the policy's max_position_embeddings ({limit})")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        policy_params = [p for p in self.policy.parameters() if p.requires_grad]  # the adapter only, with LoRA
        return [torch.optim.AdamW(policy_params, lr=self.hparams.policy_lr, fused=True),  # one kernel per step
                torch.optim.AdamW(self.critic.parameters(), lr=self.hparams.critic_lr, fused=True)]

    def on_fit_start(self) -> None:
        for scorer in ([self.reward] if self.reward_net is None else []) + list(self.eval_scorers.values()):
            scorer.to(self.device)  # scorers of decoded answers run beside the policy
        if str(self.trainer.precision).startswith("16"):
            raise ValueError("PPOModule clips gradients itself and has no fp16 loss scaling: use bf16-mixed or 32-true")
        if self.trainer.max_steps != -1:
            rank_zero_warn("PPOModule: max_steps counts optimizer steps of policy and critic (many per rollout); "
                           "bound PPO in rollouts with max_epochs and limit_train_batches instead.")

    # --- the PPO step -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        seed = self.sample_seed(self.rollouts_done)
        with self.rollout_mode():
            # 1. sample a response per prompt with the current policy
            rollout = self.sample(batch["input_ids"], batch["attention_mask"], seed)
            finished = ends_with_eos(rollout.response_ids, rollout.response_mask, self.tokenizer.eos_token_id)
            # 2. score each answer, then EOS penalty / running standardisation / clipping
            raw_scores = self.score_responses(rollout, batch.get("prompts"))
            check_finite({"rollout/score": raw_scores}, f"step {self.global_step}", self.trainer.strategy)
            rollout = replace(rollout, scores=self.shape_scores(raw_scores, finished))
            # 3. log-probs (policy, reference), values, KL, per-token rewards, GAE advantages
            rollout = self.make_rollout(rollout)
        # 4. PPO epochs x shuffled minibatches
        ppo_stats = self.ppo_update(rollout, seed)
        # 5. statistics over all processes, then the KL controller (same coefficient on every process)
        rollout_stats = self.rollout_stats(rollout, raw_scores, finished)
        metrics = self.reduce_metrics({**as_metrics(rollout_stats, "rollout"), **as_metrics(ppo_stats, "ppo")})
        metrics["ppo/kl_coef"] = torch.tensor(self.kl_controller.value)  # the coefficient this rollout used
        self.kl_controller.update(metrics["rollout/kl"].item(), n_steps=rollout.batch_size * self.trainer.world_size)
        self.rollouts_done += 1
        # 6. log
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=rollout.batch_size)
        self.log_samples(rollout, raw_scores)
        return {"response_length": rollout.response_mask.sum(-1), "score": raw_scores}  # this process's rows

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Held-out prompts, sampled with a fixed seed per batch: score, KL to the reference, length."""
        seed = VALIDATION_SEED_OFFSET + self.sample_seed(batch_idx)
        with self.rollout_mode():
            rollout = self.sample(batch["input_ids"], batch["attention_mask"], seed)
            scores = self.score_responses(rollout, batch.get("prompts"))
            logprobs, ref_logprobs, _ = self.evaluate(rollout, values=False)
        response_mask = rollout.response_mask
        finished = ends_with_eos(rollout.response_ids, response_mask, self.tokenizer.eos_token_id)
        log = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=response_mask.shape[0])
        self.log("val/score", scores.mean(), prog_bar=True, **log)
        self.log("val/kl", sequence_kl(logprobs, ref_logprobs, response_mask).mean(), **log)
        self.log("val/response_length", response_mask.sum(-1).float().mean(), **log)
        self.log("val/no_eos_fraction", (~finished).float().mean(), **log)
        if self.eval_scorers:
            prompts, answers = self.require_prompts(batch.get("prompts"), "an eval scorer"), self.decode(rollout)
            for name, scorer in self.eval_scorers.items():
                judged = [s for s in scorer.score(prompts, answers) if s is not None]
                if judged:
                    self.log(f"val/{name}_score", sum(judged) / len(judged), **{**log, "batch_size": len(judged)})

    # --- 1. sample ----------------------------------------------------------------------------
    def sample_seed(self, index: int) -> int:
        """Seed of rollout (or validation batch) ``index`` on this process: distinct per process and index."""
        return self.hparams.seed + self.global_rank + self.trainer.world_size * index

    @contextmanager
    def rollout_mode(self) -> Iterator[None]:
        """Eval mode and no gradients for rollout and scoring; every network's mode is restored after."""
        nets = [net for net in (self.policy, self.reference, self.reward_net, self.critic) if net is not None]
        modes = [net.training for net in nets]
        for net in nets:
            net.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for net, mode in zip(nets, modes):
                net.train(mode)

    def sample(self, query_ids: torch.Tensor, query_mask: torch.Tensor, seed: int) -> Rollout:
        """One response per left-padded prompt ``(B, P)``, sampled with the KV cache; ``T <= max_new_tokens``.
        The rollout carries the sampling pass's log-probs unless ``recompute_logprobs``."""
        from transformers import GenerationConfig

        hp, tokenizer = self.hparams, self.tokenizer
        config = GenerationConfig(
            max_new_tokens=hp.max_new_tokens, do_sample=True, temperature=hp.temperature, top_p=hp.top_p, top_k=0,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, use_cache=True,
            return_dict_in_generate=True, output_logits=not hp.recompute_logprobs,
        )
        # sharded weights are gathered layer by layer in every forward: all processes must keep stepping
        # until the last one is done (transformers does not recognise our FSDP2 modules by itself)
        synced = is_sharded(self.policy_lm)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, device_type=self.device.type):  # leave the global RNG alone
            torch.manual_seed(seed)
            output = self.policy_lm.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=config,
                                             synced_gpus=synced)
        response_ids = output.sequences[:, query_ids.shape[1]:]  # (B, T)
        logprobs = None
        if not hp.recompute_logprobs:  # the raw logits of every sampling step, before temperature and top-p
            logprobs = token_logprobs(torch.stack(output.logits, 1), response_ids, hp.temperature)  # (B, T)
        response_mask = response_mask_from_ids(response_ids, tokenizer.eos_token_id)
        response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
        return Rollout(query_ids, query_mask, response_ids, response_mask, logprobs)

    # --- 2. score -----------------------------------------------------------------------------
    def score_responses(self, rollout: Rollout, prompts: list[str] | None) -> torch.Tensor:
        """The reward's score ``(B,)`` of each answer: a reward model sharing the policy's ids reads
        ``[prompt | response]`` at its last real token (the EOS, or the last token of a cut response); any other
        scorer gets ``prompts`` (the DataModule's texts) and the decoded answers."""
        if self.reward_net is not None:
            return self.reward_net.score(*rollout.sequences()).float()
        prompts = self.require_prompts(prompts, f"the reward {type(self.reward).__name__}")
        scores = self.reward.score(prompts, self.decode(rollout))
        if any(s is None for s in scores):
            raise ValueError(f"PPO: the reward {type(self.reward).__name__} could not score "
                             f"{sum(s is None for s in scores)} of {len(scores)} answers; a PPO reward must score all")
        return torch.tensor(scores, dtype=torch.float32, device=self.device)

    def decode(self, rollout: Rollout) -> list[str]:
        """The rollout's answers as text."""
        return [self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip()
                for ids, mask in zip(rollout.response_ids, rollout.response_mask)]

    @staticmethod
    def require_prompts(prompts: list[str] | None, who: str) -> list[str]:
        if prompts is None:
            raise ValueError(f"PPO: {who} scores text, but the batches carry no 'prompts' "
                             "(use data_modules.PromptDataModule)")
        return list(prompts)

    def shape_scores(self, scores: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        """``almost.rollout.shape_scores`` with this run's settings; the running moments (all processes) take in
        the scores after the EOS penalty, before they standardise them."""
        hp = self.hparams
        scores = shape_scores(scores, finished, hp.missing_eos_penalty)
        mean_std = None
        if hp.normalize_rewards:
            self.reward_moments.update(self.all_gather(scores))  # every process keeps the same moments
            mean_std = (self.reward_moments.mean, self.reward_moments.std)
        return shape_scores(scores, finished, mean_std=mean_std, clip=hp.reward_clip)

    # --- 3. log-probs, values, advantages -----------------------------------------------------
    @contextmanager
    def reference_policy(self) -> Iterator[nn.Module]:
        """The frozen SFT policy rho: the reference copy, or under LoRA the policy with its adapter disabled."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy_lm

    def evaluate(self, rollout: Rollout,
                 values: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(logprobs, ref_logprobs, values)``, each ``(B, T)``, in chunks of ``forward_batch_size`` rows. The
        policy's log-probs are those of the sampling pass when the rollout carries them."""
        temperature, parts = self.hparams.temperature, []
        n_rows = rollout.batch_size
        for rows in torch.arange(n_rows, device=self.device).split(self.hparams.forward_batch_size or n_rows):
            chunk = rollout.rows(rows)
            logprobs = chunk.logprobs
            if logprobs is None:
                logprobs = response_logprobs(self.policy_lm, chunk, temperature)
            with self.reference_policy() as reference:
                ref_logprobs = response_logprobs(reference, chunk, temperature)
            parts.append((logprobs, ref_logprobs, response_values(self.critic, chunk) if values else None))
        logprobs, ref_logprobs, chunk_values = zip(*parts)
        return torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(chunk_values) if values else None

    def make_rollout(self, rollout: Rollout) -> Rollout:
        """The scored rollout with its log-probs, values, rewards ``-kl_coef * kl`` (+ score at the end), GAE
        advantages and returns."""
        hp, mask = self.hparams, rollout.response_mask
        logprobs, ref_logprobs, values = self.evaluate(rollout)
        kl = kl_estimate(logprobs, ref_logprobs)  # (B, T), k1: log pi - log rho
        rewards = per_token_rewards(rollout.scores, kl, mask, self.kl_controller.value)
        advantages, returns = gae_advantages(rewards, values, mask, hp.gamma, hp.lam)
        if hp.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return replace(rollout, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values, rewards=rewards,
                       advantages=advantages, returns=returns)

    # --- 4. PPO epochs x minibatches ----------------------------------------------------------
    def ppo_update(self, rollout: Rollout, seed: int) -> PPOStats:
        """``ppo_epochs`` passes over the rollout in shuffled minibatches; one optimizer step per
        ``gradient_accumulation_steps`` minibatches. Returns the means over minibatches."""
        hp = self.hparams
        policy_optimizer, critic_optimizer = self.optimizers()
        shuffle = torch.Generator().manual_seed(seed)
        records: list[dict[str, torch.Tensor]] = []
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(rollout.batch_size, generator=shuffle).to(self.device)  # one copy per epoch
            minibatches = order.split(hp.minibatch_size)
            for start in range(0, len(minibatches), hp.gradient_accumulation_steps):
                group = minibatches[start:start + hp.gradient_accumulation_steps]
                for indices in group:
                    mb = rollout.rows(indices)
                    logits = response_logits(self.compiled.get("policy", self.policy_lm), mb)  # (b, T, V)
                    mb_logprobs = token_logprobs(logits, mb.response_ids, hp.temperature)
                    mb_values = response_values(self.compiled.get("critic", self.critic), mb)
                    pg_loss, pg_stats = policy_loss(mb_logprobs, mb.logprobs, mb.advantages, mb.response_mask, hp.clip)
                    vf_loss, vf_stats = value_loss(mb_values, mb.values, mb.returns, mb.response_mask, hp.value_clip)
                    self.manual_backward((pg_loss + vf_loss) / len(group))
                    with torch.no_grad():
                        entropy = entropy_from_logits(logits / hp.temperature, mb.response_mask)
                    records.append(dict(policy_loss=pg_loss.detach(), value_loss=vf_loss.detach(), entropy=entropy,
                                        clipfrac=pg_stats.clipfrac, approx_kl=pg_stats.approx_kl,
                                        value_clipfrac=vf_stats.value_clipfrac))
                records[-1]["policy_grad_norm"] = self.clip_and_step(policy_optimizer, self.policy)
                records[-1]["critic_grad_norm"] = self.clip_and_step(critic_optimizer, self.critic)
        means = {name: torch.stack([r[name] for r in records if name in r]).float().mean() for name in records[-1]}
        ev = explained_variance(rollout.values, rollout.returns, rollout.response_mask)
        return PPOStats(explained_variance=ev, **means)

    def clip_and_step(self, optimizer, module: nn.Module) -> torch.Tensor:
        """Clip the gradient norm of ``module`` (sharded or not), step, zero the gradients; the norm before clipping."""
        parameters = [p for p in module.parameters() if p.requires_grad]
        max_norm = self.hparams.max_grad_norm if self.hparams.max_grad_norm is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)  # DTensor under FSDP2
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).detach()

    # --- 5./6. statistics and logging ---------------------------------------------------------
    def rollout_stats(self, rollout: Rollout, raw_scores: torch.Tensor, finished: torch.Tensor) -> RolloutStats:
        """This process's rollout scalars; ``raw_scores`` (before shaping) and ``finished`` ``(B,)``."""
        mask = rollout.response_mask.bool()
        kl = sequence_kl(rollout.logprobs, rollout.ref_logprobs, mask)  # (B,)
        return RolloutStats(score=raw_scores.mean(), reward_total=torch.where(mask, rollout.rewards, 0).sum(-1).mean(),
                            kl=kl.mean(), response_length=mask.sum(-1).float().mean(),
                            no_eos_fraction=(~finished).float().mean())

    def reduce_metrics(self, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean of every scalar over the processes, in one collective."""
        stacked = self.trainer.strategy.reduce(torch.stack(list(metrics.values())), reduce_op="mean")
        return dict(zip(metrics, stacked.cpu()))

    def log_samples(self, rollout: Rollout, raw_scores: torch.Tensor) -> None:
        """Every ``log_samples_every_n_rollouts`` rollouts, a few prompts and responses as TensorBoard text."""
        from lightning.pytorch.loggers import TensorBoardLogger

        every = self.hparams.log_samples_every_n_rollouts
        if not every or (self.rollouts_done - 1) % every or self.global_rank != 0:
            return
        if not isinstance(self.logger, TensorBoardLogger):
            return
        rows = ["| prompt | response | score |", "|---|---|---|"]
        for i in range(min(self.hparams.n_log_samples, rollout.batch_size)):
            prompt = self.tokenizer.decode(rollout.query_ids[i][rollout.query_mask[i].bool()], skip_special_tokens=True)
            response = self.tokenizer.decode(rollout.response_ids[i][rollout.response_mask[i].bool()])
            cells = [text.replace("|", "\\|").replace("\n", "<br>") for text in (prompt, response)]
            rows.append(f"| {cells[0]} | {cells[1]} | {raw_scores[i].item():.3f} |")
        self.logger.experiment.add_text("rollout/samples", "\n".join(rows), global_step=self.rollouts_done)

    # --- checkpoints and export ---------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # networks and optimizers are saved by Lightning; the rest of the trajectory's state is ours
        checkpoint["ppo"] = {"kl_controller": self.kl_controller.state_dict(),
                             "reward_moments": self.reward_moments.state_dict(), "rollouts_done": self.rollouts_done}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["ppo"]
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        self.rollouts_done = int(state["rollouts_done"])

    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            self.export(self.hparams.export_dir)

    def export(self, directory: str | Path) -> None:
        """Save the full policy (LoRA merged into the weights), tokenizer and chat template (``lit_models.export``)."""
        from transformers import AutoModelForCausalLM

        config, dtype = self.policy_lm.config, self.source.torch_dtype
        export_pretrained(self, self.policy_lm, directory, self.tokenizer,
                          lambda: AutoModelForCausalLM.from_config(config, dtype=dtype), lora=self.hparams.lora)
