"""DPO against TRL's DPOTrainer: our loss equals TRL's on identical log-probs and, end to end, on the peer's model
and batch (TRL runs in the peer's TRL 1.16 environment through ``benchmarks/trl_dpo_loss.py``; skipped where that
environment is not built: ``bash ../shared/peer/setup.sh``; ``slow``: importing TRL alone takes seconds); and the
DPO benchmark's own pieces (pair batches, FLOP floor, result lines, commands), checked by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from almost.chat import IGNORE_INDEX
from almost.dpo import dpo_loss

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from compare_trl import ours_command, seconds_per_step, trl_command  # noqa: E402
from peer import PreferenceIdsDataModule, dpo_floor_flops  # noqa: E402

TRL_PYTHON = Path("/tmp/peer-trl116/bin/python")
PEER_1M = Path("/tmp/peer-models/1m")
needs_trl = pytest.mark.skipif(not TRL_PYTHON.exists(),
                               reason="TRL 1.16 environment not built (../shared/peer/setup.sh)")


def trl_losses(spec: dict) -> dict[str, float]:
    """TRL's DPOTrainer loss, per loss type, on the batch ``spec`` describes (see benchmarks/trl_dpo_loss.py)."""
    done = subprocess.run([str(TRL_PYTHON), str(BENCHMARKS / "trl_dpo_loss.py")], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- loss parity ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_trl
def test_loss_equals_trl_on_identical_log_probs():
    # 3 pairs, rows chosen 0..2 then rejected 0..2; prompts of 2, 3, 4 tokens, responses of various lengths,
    # right-padded to T = 9. Per-token log-probs (2B, T - 1): position t scores token t + 1.
    prompts, chosen, rejected = [2, 3, 4], [5, 3, 4], [4, 6, 2]
    lengths = [(p, n) for p, n in zip(prompts + prompts, chosen + rejected)]
    T = max(p + n for p, n in lengths)
    completion_mask = torch.tensor([[0] * p + [1] * n + [0] * (T - p - n) for p, n in lengths])  # (6, 9)
    attention_mask = torch.tensor([[1] * (p + n) + [0] * (T - p - n) for p, n in lengths])  # (6, 9)
    generator = torch.Generator().manual_seed(0)
    policy = -3 * torch.rand(6, T - 1, generator=generator, dtype=torch.float64)
    reference = -3 * torch.rand(6, T - 1, generator=generator, dtype=torch.float64)
    policy[0], reference[0] = -0.01, -60.0  # pair 0: beta h = +30 (loss ~ 1e-13)
    policy[1], reference[1] = -60.0, -0.01  # pair 1: beta h = -18 (loss ~ 18): logsigmoid must not overflow
    beta = 0.1
    trl = trl_losses({"input_ids": torch.ones(6, T, dtype=torch.long).tolist(),
                      "attention_mask": attention_mask.tolist(), "completion_mask": completion_mask.tolist(),
                      "policy_token_logps": policy.tolist(), "reference_token_logps": reference.tolist(),
                      "beta": beta, "loss_types": ["sigmoid", "ipo"]})

    scored = completion_mask[:, 1:].bool()  # (6, T - 1): the next token is a response token
    n_tokens = scored.sum(-1)  # (6,)
    policy_sums, reference_sums = (policy * scored).sum(-1), (reference * scored).sum(-1)  # (6,)
    sigmoid, _ = dpo_loss(*policy_sums.chunk(2), *reference_sums.chunk(2), beta, "sigmoid")
    assert abs(sigmoid.item() - trl["sigmoid"]) < 1e-6
    # TRL's ipo averages the log-probs over each response's tokens; ours is the paper's, on the sums: the same
    # function of per-token means
    ipo_of_means, _ = dpo_loss(*(policy_sums / n_tokens).chunk(2), *(reference_sums / n_tokens).chunk(2), beta, "ipo")
    assert abs(ipo_of_means.item() - trl["ipo"]) < 1e-6
    ipo_of_sums, _ = dpo_loss(*policy_sums.chunk(2), *reference_sums.chunk(2), beta, "ipo")
    assert abs(ipo_of_sums.item() - trl["ipo"]) > 1.0


@pytest.mark.slow
@needs_trl
@pytest.mark.skipif(not (PEER_1M / "policy").is_dir(), reason="peer models not built (../shared/peer/setup.sh)")
def test_module_loss_equals_trl_on_the_peer_model(tmp_path):
    from lit_models import DPOModule

    # 3 pairs of random token ids; TRL batches them with its own collator, ours with PreferenceIdsDataModule
    generator = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(4, 1000, (n,), generator=generator).tolist()  # noqa: E731
    pairs = [{"prompt_ids": [2] + ids(p - 1), "chosen_ids": ids(c) + [3], "rejected_ids": ids(r) + [3]}
             for p, c, r in ((5, 6, 7), (8, 4, 9), (3, 9, 2))]
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    beta, head_scale = 0.1, 1.5  # the policy's LM head scaled: it differs from the reference
    trl = trl_losses({"examples": pairs, "pad_token_id": 0, "policy": str(PEER_1M / "policy"),
                      "reference": str(PEER_1M / "ref"), "policy_head_scale": head_scale, "beta": beta,
                      "loss_types": ["sigmoid", "ipo"]})

    model = DPOModule(source={"path": str(PEER_1M / "policy")}, beta=beta)
    model.configure_model()  # the reference is a copy of the policy as loaded
    data = PreferenceIdsDataModule(str(data_file), pad_token_id=0, batch_size=3)
    batch = data.collate(data.pairs)
    with torch.no_grad():
        model.net.get_output_embeddings().weight.mul_(head_scale)
        policy = model.response_logps(model.net, batch)  # (B,) chosen, (B,) rejected
        reference = model.response_logps(model.reference, batch)
    sigmoid, stats = dpo_loss(*policy, *reference, beta, "sigmoid")
    assert stats.reward_margin.abs() > 0.01  # the check is not at h = 0, where every loss is log 2
    assert abs(sigmoid.item() - trl["sigmoid"]) < 1e-6  # fp32 forward passes, TRL's chunked LM head against ours
    n_tokens = [(batch[f"{side}_labels"][:, 1:] != IGNORE_INDEX).sum(-1) for side in ("chosen", "rejected")]
    ipo, _ = dpo_loss(*(x / n for x, n in zip(policy, n_tokens)), *(x / n for x, n in zip(reference, n_tokens)),
                      beta, "ipo")
    assert ipo.item() == pytest.approx(trl["ipo"], rel=1e-6)  # about 25


# --- the benchmark's pieces -----------------------------------------------------------------------------------
def test_pair_batches_are_trl_layout(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt_ids": [2, 5], "chosen_ids": [6, 3], "rejected_ids": [7, 8, 3]}) + "\n"
                    + json.dumps({"prompt_ids": [2], "chosen_ids": [9, 3], "rejected_ids": [3]}) + "\n")
    data = PreferenceIdsDataModule(str(path), pad_token_id=0, batch_size=2)
    batch = data.collate(data.pairs)
    x = IGNORE_INDEX
    # one T for all 2B rows: the longest sequence (2 + 3 tokens)
    assert batch["chosen_input_ids"].tolist() == [[2, 5, 6, 3, 0], [2, 9, 3, 0, 0]]
    assert batch["rejected_input_ids"].tolist() == [[2, 5, 7, 8, 3], [2, 3, 0, 0, 0]]
    assert batch["chosen_attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert batch["rejected_attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["chosen_labels"].tolist() == [[x, x, 6, 3, x], [x, 9, 3, x, x]]
    assert batch["rejected_labels"].tolist() == [[x, x, 7, 8, 3], [x, 3, x, x, x]]
    assert len(list(data.train_dataloader())) == 1


def test_dpo_floor_by_hand():
    # policy 100 parameters, 7 tokens: trained 6 * 100 * 7 = 4200, reference 2 * 100 * 7 = 1400
    assert dpo_floor_flops(100, tokens=7) == 5600


def test_dpo_result_lines_and_commands(tmp_path):
    assert seconds_per_step("# step_secs=1,2\nTRL_DPO size=1m sec_per_step=0.301 pairs_per_sec=53.2\n") == 0.301
    assert seconds_per_step("OURS_DPO size=5m sec_per_step=1.250 pairs_per_sec=12.8") == 1.25
    data, peer = tmp_path / "dpo-5m.jsonl", tmp_path / "peer"
    trl = trl_command("dpo-5m", peer, data)
    assert trl[0] == "/tmp/peer-trl116/bin/python" and trl[1] == str(BENCHMARKS / "trl_dpo_bench.py")
    assert trl[trl.index("--size") + 1] == "5m" and trl[trl.index("--dump-data") + 1] == str(data)
    assert trl[trl.index("--peer") + 1] == str(peer)
    ours = ours_command("dpo-5m", data)
    assert ours[1] == str(BENCHMARKS / "dpo_step.py") and ours[ours.index("--data") + 1] == str(data)
