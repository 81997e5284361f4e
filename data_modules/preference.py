"""Comparisons -> chosen and rejected conversations with labels on the response, for DPO."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from almost.batching import pad_sequences
from almost.chat import IGNORE_INDEX, encode_prompt, encode_turn, truncate_prompt_left
from almost.records import Comparison, Turn, load_jsonl
from data_modules.base import EncodedRecords, RecordDataModule, split_by_seed

IndexedComparison = tuple[int, Comparison]  # (record index, record)


@dataclass(frozen=True)
class PreferenceExample:
    """One pair as two sequences ``prompt + response``; labels are IGNORE_INDEX on the prompt."""

    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]
    record_index: int  # position among the records of ``files`` taken in order (see PreferenceDataModule)


class PreferenceDataModule(RecordDataModule):
    """Batches of ``B`` comparisons for DPO, every tensor ``(B, T)`` with one ``T`` for chosen and rejected
    (so that the two can be stacked into one forward pass of ``2B`` rows), right-padded:

        chosen_input_ids, chosen_attention_mask, chosen_labels,
        rejected_input_ids, rejected_attention_mask, rejected_labels,
        record_index  (B,): the pair's position among the records of ``files`` (``path``, then ``val_path``),
                      where a cache of reference log-probs looks its values up.

    A sequence is the prompt as one user turn and the response as a closed assistant turn (``almost.chat``);
    the prompt is truncated from the left so that the response stays whole. (A record whose chosen and rejected
    responses are the same text is refused by ``almost.records``: it states no preference.)
    """

    record_type = Comparison

    @property
    def files(self) -> list[str]:
        """The JSONL files of the records, in the order of ``record_index``."""
        return [self.hparams.path] + ([self.hparams.val_path] if self.hparams.val_path else [])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.file_records = [load_jsonl(path, Comparison) for path in self.files]
        indexed = list(enumerate(r for records in self.file_records for r in records))
        n_path = len(self.file_records[0])
        if self.hparams.val_path:
            train, val = indexed[:n_path], indexed[n_path:]
        else:  # the same split as the other DataModules: it depends on the number of records and the seed only
            train, val = split_by_seed(indexed, self.hparams.val_fraction, self.hparams.seed)
        self.train_set, self.val_set = EncodedRecords(train, self.encode), EncodedRecords(val, self.encode)
        self.predict_set = EncodedRecords(indexed[:n_path], self.encode)  # `path`, in file order

    def file_loader(self, file_number: int) -> DataLoader:
        """Every record of ``files[file_number]``, in file order (for a pass of the reference model)."""
        offset = sum(len(records) for records in self.file_records[:file_number])
        records = self.file_records[file_number]
        indexed = [(offset + i, record) for i, record in enumerate(records)]
        return DataLoader(EncodedRecords(indexed, self.encode), batch_size=self.hparams.batch_size, shuffle=False,
                          collate_fn=self.collate)

    def encode(self, item: IndexedComparison) -> PreferenceExample:
        index, record = item
        prompt = encode_prompt(self.tokenizer, self.template, [Turn("user", record.prompt)])
        chosen_ids, chosen_labels = self.encode_response(prompt, record.chosen)
        rejected_ids, rejected_labels = self.encode_response(prompt, record.rejected)
        return PreferenceExample(chosen_ids, chosen_labels, rejected_ids, rejected_labels, index)

    def encode_response(self, prompt_ids: list[int], response: str) -> tuple[list[int], list[int]]:
        """``(ids, labels)`` of ``prompt + response``, at most ``max_length`` long; labels only on the response."""
        response_ids = encode_turn(self.tokenizer, self.template, Turn("assistant", response))
        ids = truncate_prompt_left(prompt_ids, response_ids, self.hparams.max_length)
        n_prompt = len(ids) - min(len(response_ids), self.hparams.max_length)
        return ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:]

    def collate(self, examples: list[PreferenceExample]) -> dict[str, torch.Tensor]:
        sequences = [e.chosen_ids for e in examples] + [e.rejected_ids for e in examples]
        labels = [e.chosen_labels for e in examples] + [e.rejected_labels for e in examples]
        input_ids, attention_mask = pad_sequences(sequences, self.tokenizer.pad_token_id)  # (2B, T)
        padded_labels, _ = pad_sequences(labels, IGNORE_INDEX)  # (2B, T)
        batch = {"record_index": torch.tensor([e.record_index for e in examples])}  # (B,)
        for name, rows in (("input_ids", input_ids), ("attention_mask", attention_mask), ("labels", padded_labels)):
            batch[f"chosen_{name}"], batch[f"rejected_{name}"] = rows.chunk(2)  # (B, T) each
        return batch

