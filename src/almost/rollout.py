"""A PPO rollout: its one container and the token-position, mask, EOS and KL math around it.

Layout. A rollout row is ``[query (P, left-padded) | response (T, right-padded after EOS)]``. Response token
``t`` sits at sequence position ``P + t`` and is predicted by the output at position ``P + t - 1``
(``P - 1`` is the last prompt token, never padding, because prompts are left-padded). The critic's value of
token ``t`` is ``V(s_t)``, read at that same position ``P + t - 1``: the value of the state whose next action
is token ``t``. So both log-probs and values of the response are the outputs at positions
``P - 1 .. P + T - 2`` (:func:`response_outputs`). The value at the last real token itself (the state after
the episode ended) is never used: GAE takes it as 0.

Shapes: ``B`` rows, ``P`` prompt length, ``T`` response length, ``V`` vocabulary. Masks are 1 on real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from almost.batching import position_ids_from_mask
from almost.logprobs import token_logprobs


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """``(B, T)`` generated ids -> ``(B, T)`` long mask: 1 up to and including the first EOS, 0 after it.

    A row without EOS (cut by ``max_new_tokens``) is all ones. Works whether the padding id equals EOS or not.
    """
    is_eos = (response_ids == eos_token_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before position t
    return (eos_before == 0).long()


def ends_with_eos(response_ids: torch.Tensor, response_mask: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """``(B,)`` bool: the response's last real token is EOS (it finished within ``max_new_tokens``)."""
    return ((response_ids == eos_token_id) & response_mask.bool()).any(-1)


def response_outputs(per_position: torch.Tensor, n_query: int, n_response: int) -> torch.Tensor:
    """The outputs that belong to the response tokens: ``(B, P + T, ...)`` -> ``(B, T, ...)``, positions
    ``P - 1 .. P + T - 2`` (each predicts, or values the state before, the response token one to its right)."""
    if per_position.shape[1] != n_query + n_response:
        raise ValueError(f"expected {n_query + n_response} positions, got {per_position.shape[1]}")
    return per_position[:, n_query - 1:n_query + n_response - 1]


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Sequence KL estimate ``sum_t (log pi - log rho)`` over each row's real tokens (k1): ``(B, T)`` x 3 -> ``(B,)``."""
    return torch.where(response_mask.bool(), logprobs - ref_logprobs, 0).sum(-1)


def shape_scores(scores: torch.Tensor, finished: torch.Tensor, missing_eos_penalty: float | None = None,
                 mean_std: tuple[float, float] | None = None, clip: float | None = None) -> torch.Tensor:
    """``(B,)`` scores -> the scores the rewards use, in this order: a response without EOS (``finished``
    ``(B,)`` bool False) gets ``missing_eos_penalty`` instead; then ``(s - mean) / std`` with ``mean_std``;
    then clipped to ``[-clip, clip]``. Each step is skipped when its argument is None."""
    if missing_eos_penalty is not None:
        scores = torch.where(finished, scores, torch.full_like(scores, missing_eos_penalty))
    if mean_std is not None:
        scores = (scores - mean_std[0]) / mean_std[1]
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


@dataclass(frozen=True)
class Rollout:
    """One batch of generated experience, filled in stages of the PPO step (ALMoST section 2.3):
    1. sample (``query_*``, ``response_*``, and ``logprobs`` when the sampling pass kept its logits);
    2. score (``scores``); 3. evaluate (``logprobs``, ``ref_logprobs``, ``values``), then rewards, advantages and
    returns. Later fields are added with ``dataclasses.replace``. Per-token fields are aligned with
    ``response_ids``: entry ``t`` is about response token ``t``.
    """

    query_ids: torch.Tensor  # (B, P) prompt token ids, left-padded
    query_mask: torch.Tensor  # (B, P) 1 = real prompt token
    response_ids: torch.Tensor  # (B, T) generated ids, the pad id after the first EOS
    response_mask: torch.Tensor  # (B, T) 1 up to and including the first EOS (response_mask_from_ids)
    logprobs: torch.Tensor | None = None  # (B, T) log pi_old(token) at the sampling temperature
    ref_logprobs: torch.Tensor | None = None  # (B, T) log rho(token), the frozen reference (SFT) policy
    values: torch.Tensor | None = None  # (B, T) V_old(state before token t)
    scores: torch.Tensor | None = None  # (B,) shaped score of each response (shape_scores)
    rewards: torch.Tensor | None = None  # (B, T) per_token_rewards: -kl_coef * kl, plus the score at the end
    advantages: torch.Tensor | None = None  # (B, T) gae_advantages (whitened or not, as the caller chose)
    returns: torch.Tensor | None = None  # (B, T) advantages + values: the value-function targets

    @property
    def batch_size(self) -> int:
        return self.response_ids.shape[0]

    def rows(self, indices: torch.Tensor) -> Rollout:
        """The rows ``indices`` ``(b,)`` of every field that is set, as a new Rollout."""
        selected = {f.name: getattr(self, f.name)[indices] for f in fields(self) if getattr(self, f.name) is not None}
        return replace(self, **selected)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` ``(B, P + T)`` of ``[prompt | response]``: padding only at the two
        ends, so that positions counted over real tokens (``position_ids_from_mask``) are those of generation."""
        return (torch.cat([self.query_ids, self.response_ids], 1), torch.cat([self.query_mask, self.response_mask], 1))


def response_logits(lm: nn.Module, rollout: Rollout) -> torch.Tensor:
    """Logits ``(B, T, V)`` that predict each response token (:func:`response_outputs`). Positions count real
    tokens only, as in generation; only the last ``T + 1`` positions reach the LM head."""
    input_ids, attention_mask = rollout.sequences()
    n_response = rollout.response_ids.shape[1]
    logits = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                use_cache=False, logits_to_keep=n_response + 1).logits  # (B, T + 1, V): positions P - 1 .. P + T - 1
    return logits[:, :-1]  # (B, T, V)


def response_logprobs(lm: nn.Module, rollout: Rollout, temperature: float) -> torch.Tensor:
    """``log softmax(logits / temperature)`` of each response token under ``lm``: ``(B, T)``."""
    return token_logprobs(response_logits(lm, rollout), rollout.response_ids, temperature)


def response_values(critic: nn.Module, rollout: Rollout) -> torch.Tensor:
    """Critic values ``(B, T)``: entry ``t`` is ``V(s_t)``, read before token ``t`` (:func:`response_outputs`).
    ``critic(input_ids, attention_mask)`` gives one value per position, like ``almost.models.RewardModel``."""
    values = critic(*rollout.sequences())  # (B, P + T)
    return response_outputs(values, rollout.query_ids.shape[1], rollout.response_ids.shape[1])
