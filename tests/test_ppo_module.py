"""PPOModule on tiny models: positions of log-probs, values and scores; score shaping; learning; resume;
LoRA; 2-process FSDP through train.py (plus a slow FSDP resume)."""

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from almost.batching import pad_sequences
from almost.losses import response_token_loss
from almost.models import ModelSource, RewardModel, build_causal_lm
from almost.logprobs import token_logprobs
from almost.ppo import masked_mean, masked_var
from almost.rollout import Rollout, ends_with_eos, response_logits, response_mask_from_ids
from data_modules import DemonstrationDataModule, PromptDataModule
from lit_models import PPOModule
from tests.conftest import FIXTURES, TINY_ARCH
from tests.ppo_helpers import RolloutRecorder, TargetTokenPPO

ROOT = Path(__file__).parent.parent
LORA = {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a busy machine those threads spin-wait (runs
    measured 10x slower): one thread for this module, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tokenizer_dir, tokenizer, tmp_path_factory) -> SimpleNamespace:
    """A tiny "SFT" policy (60 steps on the fixture demonstrations: it answers, and sometimes stops within
    a few dozen tokens) and a tiny reward model with fresh weights, both saved in HF format."""
    root = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    policy = build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer)
    data = DemonstrationDataModule(str(FIXTURES / "demonstrations.jsonl"), tokenizer_dir, batch_size=16, max_length=64)
    data.setup("fit")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for batch in itertools.islice(itertools.cycle(data.train_dataloader()), 60):
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, _ = response_token_loss(logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.save_pretrained(root / "sft")
    tokenizer.save_pretrained(root / "sft")
    RewardModel.build(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer).save_pretrained(root / "rm")
    return SimpleNamespace(policy=str(root / "sft"), reward=str(root / "rm"))


def make_module(tiny, cls=PPOModule, **kwargs) -> PPOModule:
    L.seed_everything(0)
    defaults = dict(max_new_tokens=16, minibatch_size=8, policy_lr=1e-3, critic_lr=3e-3)
    reward = kwargs.pop("reward", tiny.reward)
    return cls(ModelSource(path=tiny.policy), reward, **{**defaults, **kwargs})


def prompt_data(tiny, batch_size=16) -> PromptDataModule:
    return PromptDataModule(str(FIXTURES / "prompts.jsonl"), tiny.policy, batch_size=batch_size, max_length=64,
                            shuffle=False)


def fit(model, data, rollouts, callbacks=(), ckpt_path=None, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, max_epochs=1, limit_train_batches=rollouts, limit_val_batches=0)
    trainer = L.Trainer(callbacks=list(callbacks), **{**options, **kwargs})
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer


def prompt_batch(tokenizer, texts) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [[tokenizer.bos_token_id] + tokenizer(f"User: {t}\nAssistant:", add_special_tokens=False)["input_ids"]
           for t in texts]
    return pad_sequences(ids, tokenizer.pad_token_id, side="left")


# --- pure helpers ---------------------------------------------------------------------------------
def test_response_mask_ends_at_the_first_eos_inclusive():
    eos, pad = 3, 0
    ids = torch.tensor([[5, 6, eos, pad, pad], [5, eos, eos, eos, eos], [7, 8, 9, 10, 11]])
    assert response_mask_from_ids(ids, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    mask = response_mask_from_ids(ids, eos)
    assert ends_with_eos(ids, mask, eos).tolist() == [True, True, False]


# --- positions: scores, log-probs and values --------------------------------------------------------
def test_score_lands_on_the_last_real_token_and_missing_eos_gets_the_penalty(tiny, tokenizer):
    model = make_module(tiny, missing_eos_penalty=-1.5)
    model.configure_model()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    query_ids, query_mask = prompt_batch(tokenizer, ["What is 2 plus 2?", "Hi"])  # different lengths: left padding
    response_ids = torch.tensor([[40, 41, eos, pad, pad, pad], [50, 51, 52, 53, 54, 55]])  # ended | cut
    response_mask = response_mask_from_ids(response_ids, eos)
    with torch.no_grad():
        scores = model.score_responses(Rollout(query_ids, query_mask, response_ids, response_mask), None)
        for row in range(2):  # each [prompt | response] alone, without any padding
            alone = torch.cat([query_ids[row][query_mask[row].bool()], response_ids[row][response_mask[row].bool()]])
            expected = model.reward_net.score(alone[None], torch.ones_like(alone)[None])
            torch.testing.assert_close(scores[row:row + 1], expected, atol=1e-5, rtol=0)
    finished = ends_with_eos(response_ids, response_mask, eos)
    shaped = model.shape_scores(scores, finished)
    assert shaped[0] == scores[0] and shaped[1] == -1.5
    no_penalty_but_clip = make_module(tiny, reward_clip=0.01)  # flag off (and clipping on)
    assert (scores.abs() > 0.01).all()  # so the clip engages
    assert torch.equal(no_penalty_but_clip.shape_scores(scores, finished), scores.clamp(-0.01, 0.01))


def test_rollout_log_probs_and_values_are_those_of_each_prefix_alone(tiny, tokenizer):
    temperature = 0.7
    model = make_module(tiny, temperature=temperature, max_new_tokens=10, minibatch_size=2)
    model.configure_model()
    query_ids, query_mask = prompt_batch(tokenizer, ["What is 2 plus 2?", "Hi", "What is the capital of Veloria?"])
    with model.rollout_mode():
        responses = model.sample(query_ids, query_mask, seed=0)
        logprobs, ref_logprobs, values = model.evaluate(responses)
        response_ids, response_mask = responses.response_ids, responses.response_mask
        for row in range(3):
            prompt = query_ids[row][query_mask[row].bool()]
            for t in range(int(response_mask[row].sum())):  # state before response token t
                prefix = torch.cat([prompt, response_ids[row, :t]])[None]
                next_logits = model.policy(input_ids=prefix).logits[0, -1].double() / temperature
                expected = next_logits.log_softmax(-1)[response_ids[row, t]]
                assert abs(logprobs[row, t].item() - expected.item()) < 1e-4, (row, t)
                value = model.critic(prefix, torch.ones_like(prefix))[0, -1]
                assert abs(values[row, t].item() - value.item()) < 1e-4, (row, t)
    torch.testing.assert_close(ref_logprobs, logprobs)  # the reference is the initial policy


def test_sampling_pass_log_probs_and_forward_batch_size_change_no_result(tiny, tokenizer):
    """The rollout's log-probs come from the sampling pass unless recompute_logprobs; the rollout forwards run
    in chunks of forward_batch_size rows: both give what a separate pass over the finished sequences gives."""
    query_ids, query_mask = prompt_batch(tokenizer, ["What is 2 plus 2?", "Hi", "What is the capital of Veloria?"])
    results = []
    for options in (dict(), dict(recompute_logprobs=True, forward_batch_size=1), dict(forward_batch_size=2)):
        model = make_module(tiny, temperature=0.7, max_new_tokens=12, **options)
        model.configure_model()
        with model.rollout_mode():
            responses = model.sample(query_ids, query_mask, seed=3)
            assert (responses.logprobs is None) == bool(options.get("recompute_logprobs"))
            results.append((responses.response_ids, responses.response_mask, *model.evaluate(responses)))
    mask = results[0][1].bool()
    assert mask.sum() > 10
    for ids, response_mask, logprobs, ref_logprobs, values in results[1:]:
        assert torch.equal(ids, results[0][0]) and torch.equal(response_mask, results[0][1])  # same samples
        for got, expected in zip((logprobs, ref_logprobs, values), results[0][2:]):
            torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=0)


def test_normalisation_uses_running_moments_after_the_penalty_and_before_the_clip(tiny):
    model = make_module(tiny, normalize_rewards=True, missing_eos_penalty=-7.0, reward_clip=1.2)
    model.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)  # all_gather of one process
    finished = torch.tensor([True, True, True])
    first = model.shape_scores(torch.tensor([1.0, 2.0, 3.0]), finished)  # mean 2, std 1
    torch.testing.assert_close(first, torch.tensor([-1.0, 0.0, 1.0]))
    second = model.shape_scores(torch.tensor([9.0, 5.0]), torch.tensor([False, True]))  # -7 (penalty) and 5
    # moments of [1, 2, 3, -7, 5]: mean 0.8, squared deviations 0.04 + 1.44 + 4.84 + 60.84 + 17.64 = 84.8,
    # unbiased std sqrt(84.8 / 4); then the clip to +-1.2
    std = (84.8 / 4) ** 0.5
    torch.testing.assert_close(second, torch.tensor([max((-7 - 0.8) / std, -1.2), min((5 - 0.8) / std, 1.2)]))
    assert model.reward_moments.count == 5


@pytest.mark.parametrize("whiten", [True, False])
def test_rollout_rewards_score_the_last_real_token_and_advantages_are_whitened_on_request(tiny, tokenizer, whiten):
    model = make_module(tiny, whiten_advantages=whiten, max_new_tokens=24)
    model.configure_model()
    query_ids, query_mask = prompt_batch(tokenizer, ["What is 2 plus 2?", "Hi", "What is 30 plus 4?", "Hello"])
    scores = torch.tensor([0.5, -1.0, 2.0, 0.25])
    with model.rollout_mode():
        rollout = model.make_rollout(dataclasses.replace(model.sample(query_ids, query_mask, seed=3), scores=scores))
    mask = rollout.response_mask.bool()
    lengths = rollout.response_mask.sum(-1)
    assert len(set(lengths.tolist())) > 1, lengths  # ragged responses: padding after some of them
    expected = torch.zeros_like(rollout.rewards)  # KL = 0 at the start: only the score, on the last real token
    expected[torch.arange(4), lengths - 1] = scores
    torch.testing.assert_close(rollout.rewards, expected)
    assert (rollout.advantages[~mask] == 0).all() and (rollout.returns[~mask] == 0).all()
    if whiten:
        assert abs(masked_mean(rollout.advantages, mask).item()) < 1e-5
        assert abs(masked_var(rollout.advantages, mask).item() - 1.0) < 1e-4
    else:  # returns = advantages + values, so the raw advantages come back as returns - values
        torch.testing.assert_close(rollout.advantages[mask], (rollout.returns - rollout.values)[mask])


# --- learning -----------------------------------------------------------------------------------------
def run_target_token(tiny, tokenizer, kl_coef, rollouts=16) -> RolloutRecorder:
    model = make_module(tiny, cls=TargetTokenPPO, kl_coef=kl_coef)
    model.target_token = tokenizer.convert_tokens_to_ids(".")
    recorder = RolloutRecorder()
    fit(model, prompt_data(tiny), rollouts, callbacks=[recorder])
    return recorder


def test_ppo_raises_a_scripted_reward_and_the_kl_penalty_holds_the_policy_near_the_reference(tiny, tokenizer):
    free = run_target_token(tiny, tokenizer, kl_coef=0.01)
    held = run_target_token(tiny, tokenizer, kl_coef=1.0)
    score, kl = free.series("rollout/score"), free.series("rollout/kl")
    assert all(math.isfinite(x) for x in kl + held.series("rollout/kl"))
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # the first rollout is sampled from the reference itself
    start, end = sum(score[:2]) / 2, sum(score[-4:]) / 4
    assert end > start + 0.12 and end > 2 * start, score  # measured: 0.107 -> 0.307
    held_score, held_kl = held.series("rollout/score"), held.series("rollout/kl")
    free_end_kl, held_end_kl = sum(kl[-4:]) / 4, sum(held_kl[-4:]) / 4
    assert held_end_kl < 0.4 * free_end_kl, (free_end_kl, held_end_kl)  # measured: 6.0 vs 1.6
    assert sum(held_score[-4:]) / 4 < start + 0.5 * (end - start), held_score
    assert free.series("ppo/kl_coef") == [pytest.approx(0.01)] * 16  # fixed controller


def test_gradient_checkpointing_changes_memory_not_math(tiny):
    metrics = {}
    for checkpointing in (False, True):
        model, recorder = make_module(tiny, gradient_checkpointing=checkpointing), RolloutRecorder()
        fit(model, prompt_data(tiny, batch_size=8), 2, callbacks=[recorder])
        assert model.policy.is_gradient_checkpointing == checkpointing
        assert model.critic.backbone.is_gradient_checkpointing == checkpointing
        metrics[checkpointing] = recorder.history[-1]["metrics"]
    for name, value in metrics[False].items():
        assert metrics[True][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.slow  # compiling policy and critic takes about a minute on 2 cores
def test_compiled_update_changes_speed_not_math(tiny):
    metrics = {}
    for compiled in (False, True):
        model, recorder = make_module(tiny, compile=compiled), RolloutRecorder()
        fit(model, prompt_data(tiny, batch_size=8), 2, callbacks=[recorder])
        assert set(model.compiled) == ({"policy", "critic"} if compiled else set())
        assert not any(name.startswith("compiled") for name in model.state_dict())  # no network registered twice
        metrics[compiled] = recorder.history[-1]["metrics"]
    for name, value in metrics[False].items():
        assert metrics[True][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    with pytest.raises(ValueError, match="single process without LoRA"):
        make_module(tiny, compile=True, lora=LORA).configure_model()


def test_sample_responses_go_to_tensorboard_as_text(tiny, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_module(tiny, log_samples_every_n_rollouts=2, n_log_samples=3)
    fit(model, prompt_data(tiny, batch_size=4), 3, logger=TensorBoardLogger(str(tmp_path), name="ppo"),
        log_every_n_steps=1)
    event_file = next((tmp_path / "ppo").rglob("events.out.tfevents.*"))
    events = EventAccumulator(str(event_file), size_guidance={"tensors": 0})
    events.Reload()
    samples = events.Tensors("rollout/samples/text_summary")
    assert [s.step for s in samples] == [1, 3]  # rollouts 1 and 3
    table = samples[0].tensor_proto.string_val[0].decode()
    assert table.count("| User:") == 3, table  # one row per sample
    assert {"rollout/score", "rollout/kl", "ppo/kl_coef", "ppo/explained_variance"} <= set(events.Tags()["scalars"])


# --- checkpoints --------------------------------------------------------------------------------------
def test_resumed_run_continues_the_same_trajectory(tiny, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(max_epochs, ckpt_dir, ckpt_path=None):
        # adaptive KL and running reward moments: state that lives outside the weights
        model = make_module(tiny, kl_target=0.5, kl_horizon=100, normalize_rewards=True)
        recorder = RolloutRecorder()
        checkpoint = ModelCheckpoint(dirpath=str(tmp_path / ckpt_dir), save_last=True)
        fit(model, prompt_data(tiny, batch_size=8), 2, [recorder, checkpoint], ckpt_path=ckpt_path,
            max_epochs=max_epochs, enable_checkpointing=True, default_root_dir=str(tmp_path))
        return model, recorder

    uninterrupted, full = run(max_epochs=2, ckpt_dir="full")  # rollouts 1..4
    _, first = run(max_epochs=1, ckpt_dir="ckpt")  # rollouts 1..2, then last.ckpt
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["ppo"]
    assert saved["rollouts_done"] == 2 and saved["reward_moments"]["count"] == 16
    assert saved["kl_controller"]["value"] != 0.05  # the adaptive controller moved
    resumed_model, resumed = run(max_epochs=2, ckpt_dir="ckpt", ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [h["rollouts_done"] for h in resumed.history] == [3, 4]
    assert first.history == full.history[:2]
    for step in (0, 1):  # rollouts 3 and 4
        expected, got = full.history[2 + step], resumed.history[step]
        assert got["response_lengths"] == expected["response_lengths"]
        for name, value in expected["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (step, name)
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


# --- LoRA ---------------------------------------------------------------------------------------------
def test_lora_reference_is_the_initial_policy_and_export_merges_the_adapter(tiny, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = make_module(tiny, lora=LORA, policy_lr=1e-2, export_dir=str(tmp_path / "hf"))
    fit(model, prompt_data(tiny), rollouts=2)
    assert model.reference is None  # no second copy of the policy
    trainable = [name for name, p in model.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)

    query_ids, query_mask = prompt_batch(tokenizer, ["What is 2 plus 2?", "Hi"])
    initial = AutoModelForCausalLM.from_pretrained(tiny.policy).eval()
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    with model.rollout_mode():
        responses = model.sample(query_ids, query_mask, seed=1)
        logprobs, ref_logprobs, _ = model.evaluate(responses, values=False)
        initial_logprobs = token_logprobs(response_logits(initial, responses), responses.response_ids)
        exported_logprobs = token_logprobs(response_logits(exported, responses), responses.response_ids)
    mask = responses.response_mask.bool()
    torch.testing.assert_close(ref_logprobs[mask], initial_logprobs[mask], atol=1e-5, rtol=0)
    assert (logprobs - ref_logprobs)[mask].abs().max() > 1e-3  # the adapter did change the policy
    torch.testing.assert_close(exported_logprobs[mask], logprobs[mask], atol=1e-4, rtol=0)  # merged


# --- 2 processes, FSDP2, through train.py ---------------------------------------------------------------
def run_cli(tiny, out: Path, *extra: str) -> list[dict]:
    """`train.py fit` of the sandbox PPO config on 2 CPU processes with FSDP2; the RolloutRecorder report per rank.
    The callbacks list replaces the config's: the tiny policy would pass its KL budget in one rollout."""
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(out / "ckpt"), "save_last": True}}
    args = [sys.executable, "train.py", "fit", "--config", "configs/sandbox/ppo.yaml",
            "--config", "configs/parallel/fsdp.yaml",
            f"--model.init_args.source.path={tiny.policy}", f"--model.init_args.reward={tiny.reward}",
            "--model.init_args.max_new_tokens=24", "--model.init_args.minibatch_size=2",
            "--model.init_args.ppo_epochs=2", "--model.init_args.policy_lr=1e-3",
            f"--model.init_args.export_dir={out / 'hf'}",
            "--model.init_args.eval_scorers=null",  # the sandbox's oracle instrument needs a world
            f"--data.init_args.path={FIXTURES / 'prompts.jsonl'}", "--data.init_args.batch_size=4",
            "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.logger=false",
            f"--trainer.default_root_dir={out}",  # where the CLI writes config.yaml
            "--trainer.enable_progress_bar=false", f"--trainer.callbacks={json.dumps([checkpoint])}",
            "--trainer.callbacks+=tests.ppo_helpers.RolloutRecorder", f"--trainer.callbacks.out={out / 'report'}",
            *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # 2 processes on 2 cores
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted((out / "report").glob("rank*.json"))]


def test_two_process_fsdp_ppo_through_the_cli(tiny, tmp_path):
    ranks = run_cli(tiny, tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2] and [len(r["history"]) for r in ranks] == [3, 3]
    lengths = [[n for h in r["history"] for n in h["response_lengths"]] for r in ranks]
    assert lengths[0] != lengths[1], lengths  # each process sampled its own responses
    assert len(set(lengths[0] + lengths[1])) > 1, lengths  # some responses ended early (synced generation)
    assert ranks[0]["history"][-1]["metrics"] == ranks[1]["history"][-1]["metrics"]  # logged: means over ranks
    assert "val/score" in ranks[0]["val"]
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "ckpt" / "last.ckpt").is_dir()


@pytest.mark.slow
def test_two_process_fsdp_resume_continues_the_same_trajectory(tiny, tmp_path):
    two_epochs = ["--trainer.limit_train_batches=2", "--trainer.max_epochs=2"]
    full = run_cli(tiny, tmp_path / "full", *two_epochs)
    run_cli(tiny, tmp_path / "first", "--trainer.limit_train_batches=2", "--trainer.max_epochs=1")
    resumed = run_cli(tiny, tmp_path / "resumed", *two_epochs,
                      f"--ckpt_path={tmp_path / 'first' / 'ckpt' / 'last.ckpt'}")  # sharded (DCP) checkpoint
    for rank in (0, 1):
        assert [h["rollouts_done"] for h in resumed[rank]["history"]] == [3, 4]
        for expected, got in zip(full[rank]["history"][2:], resumed[rank]["history"]):
            assert got["response_lengths"] == expected["response_lengths"]
            for name, value in expected["metrics"].items():
                assert got["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


# --- any scorer as the reward: the sandbox oracle decodes the answers ------------------------------------
class RecordingOracle:
    """Wraps a scorer and keeps every (prompt, answer, score) it was asked about."""

    def __init__(self, scorer) -> None:
        self.scorer, self.calls = scorer, []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def score(self, prompts, responses):
        scores = self.scorer.score(prompts, responses)
        self.calls += list(zip(prompts, responses, scores))
        return scores


def test_ppo_with_the_oracle_as_reward_runs_on_a_world_and_scores_the_decoded_answers(tiny, tmp_path):
    from almost.records import Prompt, write_jsonl
    from almost.sandbox.oracle import score as oracle_score
    from almost.sandbox.scorer import OracleScorer
    from almost.sandbox.world import World

    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text(json.dumps({"world_seed": 0, "n_entities": 20}))
    world = World(seed=0, n_entities=20)
    write_jsonl(tmp_path / "prompts.jsonl", [Prompt(q.text) for q in world.sample_queries(8, seed=2, split="train")])
    oracle = RecordingOracle(OracleScorer(str(tmp_path / "world")))
    with pytest.raises(ValueError, match="not a reward model: set critic"):
        make_module(tiny, reward=oracle.scorer)
    model = make_module(tiny, reward=oracle.scorer, critic=tiny.reward)
    model.reward = oracle
    recorder = RolloutRecorder()
    prompts = str(tmp_path / "prompts.jsonl")  # all 8 in the one rollout (val_path: no held-out split)
    data = PromptDataModule(prompts, tiny.policy, val_path=prompts, batch_size=8, max_length=64, shuffle=False)
    fit(model, data, rollouts=1, callbacks=[recorder])
    assert model.reward_net is None  # no token path: the oracle reads text
    assert len(oracle.calls) == 8 and all(0.0 <= s <= 1.0 for _, _, s in oracle.calls)
    for prompt, answer, value in oracle.calls:  # each score is the oracle's own judgement of that text
        assert value == oracle_score(prompt, answer, world).total
    assert recorder.series("rollout/score")[0] == pytest.approx(sum(s for *_, s in oracle.calls) / 8, abs=1e-6)


def test_eval_scorers_score_validation_answers_and_leave_training_alone(tiny, tmp_path):
    from almost.records import Prompt, write_jsonl
    from almost.sandbox.scorer import OracleScorer
    from almost.sandbox.world import World

    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text(json.dumps({"world_seed": 0, "n_entities": 20}))
    world = World(seed=0, n_entities=20)
    queries = [Prompt(q.text) for q in world.sample_queries(8, seed=2, split="train")]
    write_jsonl(tmp_path / "prompts.jsonl", queries[:7] + [Prompt("Sing me a song about the sea.")])  # unparseable
    prompts = str(tmp_path / "prompts.jsonl")
    runs = {}
    for name, scorers in (("plain", None), ("instrumented", {"oracle": OracleScorer(str(tmp_path / "world"))})):
        model = make_module(tiny, eval_scorers=scorers)
        if scorers:
            model.eval_scorers["oracle"] = oracle = RecordingOracle(scorers["oracle"])
        recorder = RolloutRecorder()
        data = PromptDataModule(prompts, tiny.policy, val_path=prompts, batch_size=8, max_length=64, shuffle=False)
        trainer = fit(model, data, rollouts=2, callbacks=[recorder], limit_val_batches=1, num_sanity_val_steps=0)
        runs[name] = (recorder.series("rollout/score"), trainer.callback_metrics)
    assert runs["plain"][0] == runs["instrumented"][0]  # the instrument changes no rollout
    assert "val/oracle_score" not in runs["plain"][1]
    judged = [value for _, _, value in oracle.calls if value is not None]
    assert len(oracle.calls) == 8 and len(judged) == 7  # the song request: unjudged, left out of the mean
    assert runs["instrumented"][1]["val/oracle_score"].item() == pytest.approx(sum(judged) / 7, abs=1e-6)
    assert model.hparams["eval_scorers"]["oracle"]["class"] == "OracleScorer"


def test_the_sandbox_kl_budget_stops_ppo_at_the_first_validation_past_it(tiny):
    """configs/sandbox/ppo.yaml's EarlyStopping with a budget the first rollout passes ends the run after that
    rollout, not at the epoch's end; with a budget out of reach the run does every rollout."""
    import yaml
    from lightning.pytorch.callbacks import EarlyStopping

    config = yaml.safe_load((ROOT / "configs/sandbox/ppo.yaml").read_text())
    (budget,) = [c["init_args"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith(".EarlyStopping")]
    assert budget["monitor"] == "val/kl" and budget["divergence_threshold"] > 0
    prompts = str(FIXTURES / "prompts.jsonl")
    runs = {}
    for threshold in (1e-5, 1e9):
        model, recorder = make_module(tiny), RolloutRecorder()
        data = PromptDataModule(prompts, tiny.policy, val_path=prompts, batch_size=8, max_length=64, shuffle=False)
        trainer = fit(model, data, rollouts=4, callbacks=[recorder, EarlyStopping(**{**budget,
                                                                                     "divergence_threshold": threshold})],
                      limit_val_batches=1, num_sanity_val_steps=0,
                      val_check_interval=config["trainer"]["val_check_interval"])
        runs[threshold] = (len(recorder.history), trainer.callback_metrics["val/kl"].item())
    assert runs[1e9][0] == 4
    assert runs[1e-5][0] == 1 and runs[1e-5][1] > 1e-5  # stopped at the first validation, which passed the budget


def test_ppo_refuses_prompts_and_responses_longer_than_the_positions(tiny):
    policy_positions = json.loads((Path(tiny.policy) / "config.json").read_text())["max_position_embeddings"]
    model = make_module(tiny, max_new_tokens=policy_positions)
    with pytest.raises(ValueError, match=rf"plus max_new_tokens {policy_positions} exceed the policy's "
                                         rf"max_position_embeddings \({policy_positions}\)"):
        fit(model, prompt_data(tiny), rollouts=1)
