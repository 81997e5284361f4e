"""Turn records into token ids: the chat template, truncation and label masks.

Every segment (a user turn with the assistant tag, an assistant turn) is tokenized on its own and
the ids are concatenated, so training and generation see exactly the same ids at every boundary.
Layout of a conversation (``|`` separates segments)::

    <s> | User: {user 1}\\nAssistant: | {assistant 1} </s> | User: {user 2}\\nAssistant: | ...

Assistant segments end with the EOS token, so a policy learns to stop after its turn. The text of an assistant turn
is read as following ``"Assistant: "``: a tokenizer that puts a space before a text encoded on its own
(SentencePiece's dummy prefix, as the sandbox's) encodes the content as is; one that does not (byte-level BPE as
SmolLM2's, Gemma's SentencePiece) gets ``" " + content``, so the answer's first word is the token the pretrained
model would write after the tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary
from typing import Sequence

from almost.records import Comparison, Demonstration, Turn

IGNORE_INDEX = -100  # label of a token that the SFT loss skips


@dataclass(frozen=True)
class ChatTemplate:
    user_tag: str = "User:"
    assistant_tag: str = "Assistant:"

    def user_segment(self, content: str) -> str:
        """Text of a user turn, ending with the tag after which the assistant speaks."""
        return f"{self.user_tag} {content}\n{self.assistant_tag}"


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    pad: int

    @classmethod
    def of(cls, tokenizer) -> "SpecialIds":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} needs BOS and EOS tokens")
        return cls(tokenizer.bos_token_id, tokenizer.eos_token_id, pad)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


_CONTENT_PREFIX: WeakKeyDictionary = WeakKeyDictionary()  # tokenizer -> its content_prefix


def content_prefix(tokenizer) -> str:
    """What an assistant turn's text gets in front: ``""`` where the tokenizer's encoding of a lone word starts
    with a word-boundary piece (``▁`` or ``Ġ``: it adds the space itself), else ``" "``."""
    if tokenizer not in _CONTENT_PREFIX:
        first = tokenizer.convert_ids_to_tokens(_encode(tokenizer, "a"))[0]
        _CONTENT_PREFIX[tokenizer] = "" if first[:1] in ("▁", "Ġ", " ") else " "
    return _CONTENT_PREFIX[tokenizer]


def encode_prompt(tokenizer, template: ChatTemplate, history: Sequence[Turn]) -> list[int]:
    """Ids of a conversation that ends with a user turn, ready for the assistant to answer."""
    if not history or history[-1].role != "user":
        raise ValueError("a prompt must end with a user turn")
    ids = [SpecialIds.of(tokenizer).bos]
    for turn in history:
        ids += encode_turn(tokenizer, template, turn)
    return ids


def encode_turn(tokenizer, template: ChatTemplate, turn: Turn) -> list[int]:
    if turn.role == "user":
        return _encode(tokenizer, template.user_segment(turn.content))
    return _encode(tokenizer, content_prefix(tokenizer) + turn.content) + [SpecialIds.of(tokenizer).eos]


def text_ids(tokenizer, template: ChatTemplate, text: str) -> list[int]:
    """Ids of ``text`` as an assistant turn's content, without the EOS that closes the turn."""
    return encode_turn(tokenizer, template, Turn("assistant", text))[:-1]


def encode_comparison(
    tokenizer, template: ChatTemplate, comparison: Comparison, max_length: int
) -> tuple[list[int], list[int]]:
    """(chosen ids, rejected ids), each at most ``max_length`` long.

    The prompt is truncated from the left (the end of the prompt matters most); the response is
    kept whole, and only when the response alone exceeds ``max_length`` is it cut from the right.
    """
    prompt = encode_prompt(tokenizer, template, [Turn("user", comparison.prompt)])
    pairs = []
    for response in (comparison.chosen, comparison.rejected):
        response_ids = encode_turn(tokenizer, template, Turn("assistant", response))
        pairs.append(truncate_prompt_left(prompt, response_ids, max_length))
    return pairs[0], pairs[1]


def encode_exchange(tokenizer, template: ChatTemplate, history: Sequence[Turn], response: str,
                    max_length: int) -> list[int]:
    """``history`` (ending with a user turn) followed by ``response`` as a closed assistant turn (with EOS, as a
    reward model is trained), at most ``max_length`` ids: the history is cut from the left first."""
    return truncate_prompt_left(encode_prompt(tokenizer, template, history),
                                encode_turn(tokenizer, template, Turn("assistant", response)), max_length)


def truncate_prompt_left(prompt_ids: list[int], response_ids: list[int], max_length: int) -> list[int]:
    """``prompt_ids + response_ids`` cut to ``max_length``: drop prompt tokens from the left first."""
    if len(response_ids) >= max_length:
        return response_ids[:max_length]
    keep = max_length - len(response_ids)
    return prompt_ids[max(0, len(prompt_ids) - keep):] + response_ids


def encode_demonstration(
    tokenizer, template: ChatTemplate, demonstration: Demonstration, max_length: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels equal the ids on assistant tokens (and their EOS), else IGNORE_INDEX.

    Truncated from the right to ``max_length`` (the first turns are kept).
    """
    ids = [SpecialIds.of(tokenizer).bos]
    labels = [IGNORE_INDEX]
    for turn in demonstration.messages:
        turn_ids = encode_turn(tokenizer, template, turn)
        ids += turn_ids
        labels += turn_ids if turn.role == "assistant" else [IGNORE_INDEX] * len(turn_ids)
    return ids[:max_length], labels[:max_length]
