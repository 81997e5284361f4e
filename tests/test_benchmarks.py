"""The TRL side-by-side benchmark's own pieces: FLOP floors against hand-computed values, the peer-data
DataModules, the result-line parsing, and the reward-model conversion (when the peer models are built)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

from compare_trl import seconds_per_step  # noqa: E402
from peer import PairIdsDataModule, PromptIdsDataModule, ppo_floor_flops, rm_floor_flops  # noqa: E402
from pretrain_precision import stage_settings, step_seconds  # noqa: E402


def test_ppo_floor_by_hand():
    # 2 prompts of 3 + 2 tokens = 10 tokens; policy 100 and reward 10 parameters; 3 epochs
    # forward-only: 2 * 10 * (2 * 100 + 2 * 10) = 4400; trained: 6 * 10 * 3 * (100 + 10) = 19800
    assert ppo_floor_flops(100, 10, batch=2, prompt_len=3, response_len=2, ppo_epochs=3) == 24200
    assert rm_floor_flops(10, tokens=7) == 420


def test_pretrain_precision_benchmark_times_the_configured_models():
    arch, batch_size, length, precision = stage_settings("s")
    assert arch["model_type"] == "llama" and batch_size >= 1 and length >= 16
    assert precision in ("32-true", "bf16-mixed")
    # vocabulary 50, hidden 16, MLP 32, one layer, untied: embeddings and LM head 2 * 50 * 16 = 1600,
    # attention 4 * 16 * 16 = 1024, MLP 3 * 16 * 32 = 1536, norms 3 * 16 = 48: 4208 parameters
    tiny = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 64}
    for bf16 in (False, True):
        seconds, params = step_seconds(tiny, batch_size=2, length=8, bf16=bf16, steps=1, vocab_size=50)
        assert params == 4208 and seconds > 0


def test_peer_data_batches_as_our_datamodules_make_them(tmp_path):
    prompts, pairs = tmp_path / "prompts.jsonl", tmp_path / "pairs.jsonl"
    prompts.write_text("".join(json.dumps({"input_ids": [2, 10 + i, 11 + i]}) + "\n" for i in range(5)))
    pairs.write_text("".join(json.dumps({"chosen_ids": [2, 5, 6, 3], "rejected_ids": [2, 7, 3]}) + "\n"
                             for _ in range(5)))
    prompt_batches = list(PromptIdsDataModule(str(prompts), pad_token_id=0, batch_size=2).train_dataloader())
    assert len(prompt_batches) == 2  # the last, incomplete batch is dropped
    assert prompt_batches[0]["input_ids"].shape == (2, 3) and prompt_batches[0]["attention_mask"].all()
    pair_batch = next(iter(PairIdsDataModule(str(pairs), pad_token_id=0, batch_size=2).train_dataloader()))
    assert pair_batch["input_ids"].tolist() == [[2, 5, 6, 3], [2, 5, 6, 3], [2, 7, 3, 0], [2, 7, 3, 0]]
    assert pair_batch["attention_mask"].tolist() == [[1, 1, 1, 1]] * 2 + [[1, 1, 1, 0]] * 2


def test_result_lines_are_parsed_from_either_side():
    output = "# step_secs=1,2\nTRL_PPO size=1m steps=5 sec_per_step=1.404 tokens_per_sec=547.0\n"
    assert seconds_per_step(output) == 1.404
    assert seconds_per_step("OURS_RM size=5m sec_per_step=0.842 pairs_per_sec=19.0") == 0.842
    with pytest.raises(SystemExit, match="no result line"):
        seconds_per_step("Traceback ...")


@pytest.mark.skipif(not Path("/tmp/peer-models/1m/reward").is_dir(),
                    reason="peer models not built (bash ../shared/peer/setup.sh)")
def test_converted_peer_reward_model_scores_as_the_original(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from almost.models import RewardModel
    from peer import reward_model_dir

    ours = RewardModel.from_pretrained(reward_model_dir("1m", cache=str(tmp_path))).eval()
    theirs = AutoModelForSequenceClassification.from_pretrained("/tmp/peer-models/1m/reward", num_labels=1).eval()
    ids = torch.randint(4, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(ours.score(ids, mask), theirs(input_ids=ids, attention_mask=mask).logits[:, 0])


@pytest.mark.skipif(not Path("/tmp/peer-models/1m/reward").is_dir(),
                    reason="peer models not built (bash ../shared/peer/setup.sh)")
def test_eager_bound_runs_the_ppo_step_and_prints_its_line(tmp_path, monkeypatch, capsys):
    import ppo_eager_bound

    prompts = tmp_path / "prompts.jsonl"
    rows = torch.randint(4, 1000, (4, 32), generator=torch.Generator().manual_seed(0)).tolist()
    prompts.write_text("".join(json.dumps({"input_ids": row}) + "\n" for row in rows))
    monkeypatch.setattr(sys, "argv", ["ppo_eager_bound.py", "--size", "1m", "--prompts", str(prompts), "--batch", "4",
                                      "--steps", "1", "--warmup", "0", "--trl-s", "10"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the test process's threads alone
    ppo_eager_bound.main()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(item.split("=") for item in line.split()[1:])
    assert line.startswith("BOUND_PPO size=1m") and float(fields["sec_per_step"]) > 0
    # max_speedup is printed to 0.01: a slow step (a loaded machine) makes it small, so the rounding is absolute too
    assert float(fields["max_speedup"]) == pytest.approx(10 / float(fields["sec_per_step"]), rel=0.01, abs=0.006)
