"""Evaluation sets -> batches of records, for the evaluation commands (``lit_models.evaluation``).

Batches are lists of :class:`Indexed` records, not tensors: the evaluation module tokenizes them, since the
prompt depends on the method (A/B question, P(true) question, plain continuation) and, for win rates, on
each compared model's own tokenizer. These DataModules take no ``tokenizer`` argument, so ``train.py``'s link
from ``model.init_args.source`` does not apply to them (jsonargparse skips a link whose target is absent).

Every file is validated on load by ``almost.evaluation`` / ``almost.records``: a bad record raises an error
naming the file and the line or record. Records keep their position in the set (``Indexed.index``): under
several processes the distributed sampler pads the last batch with repeats, and the evaluation module uses
the index to drop them and to put the rows gathered from all processes back in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader

from almost.evaluation import ABExample, load_hh_rlhf, load_hhh, load_questions, load_truthfulqa_mc
from almost.records import CorpusDocument, Prompt, RecordError, iter_json_objects, load_jsonl


@dataclass(frozen=True)
class Indexed:
    """One record of an evaluation set and its position in the set (all files in order)."""

    index: int
    record: Any


@dataclass(frozen=True)
class SubsetExample:
    """An HHH A/B example and its subset: the stem of the file it came from (``hhh_helpful``)."""

    subset: str
    example: ABExample


@dataclass(frozen=True)
class Instruction:
    """A question to answer: a Vicuna ``question_id`` or the line number of a Prompt record, and its text."""

    id: str
    text: str


class EvaluationDataModule(L.LightningDataModule):
    """Base: ``load()`` the records of ``data_files`` once, then serve them in file order for ``test``.

    Args:
        files: the files read (their sha256 go into results.json).
        batch_size: records per batch and process (an evaluation module may score several sequences per record).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, files: list[str], batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["files"])
        self.data_files = list(files)
        self.items: list[Indexed] | None = None

    # --- to implement -------------------------------------------------------------------------
    def load(self) -> list[Any]:
        """Every record of the evaluation set, validated, in file order."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.items is None:
            self.items = [Indexed(i, record) for i, record in enumerate(self.load())]

    def transfer_batch_to_device(self, batch: list, device, dataloader_idx: int) -> list:
        return batch  # python records: the evaluation module builds its tensors on the model's device

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=self.hparams.batch_size, shuffle=False, collate_fn=list,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)


class HHHDataModule(EvaluationDataModule):
    """HHH A/B files in the BIG-bench ``hhh_alignment`` format; records are :class:`SubsetExample`.

    Args:
        paths: one file per subset; the subset is named by the file's stem, so stems must differ.
    """

    def __init__(self, paths: list[str], batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__(paths, batch_size, num_workers)
        if not paths:
            raise ValueError("HHHDataModule needs at least one file in 'paths'")
        seen: dict[str, str] = {}
        for path in paths:
            if Path(path).stem in seen:
                raise ValueError(f"{path}: same name {Path(path).stem!r} as {seen[Path(path).stem]}; subsets are "
                                 "named by file name, so rename one")
            seen[Path(path).stem] = path

    def load(self) -> list[SubsetExample]:
        return [SubsetExample(Path(path).stem, example) for path in self.data_files for example in load_hhh(path)]


class TruthfulQADataModule(EvaluationDataModule):
    """A TruthfulQA ``mc_task.json``; records are ``almost.evaluation.MCQuestion``."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> list:
        return load_truthfulqa_mc(self.hparams.path)


class HHRLHFDataModule(EvaluationDataModule):
    """HH-RLHF JSONL preference pairs; records are ``almost.evaluation.HHPair``.

    Args:
        on_mismatch: a line whose transcripts differ before the final Assistant turn is kept with the chosen
            transcript's context (``"keep_chosen"``, counted in the results) or rejects the file (``"raise"``).
    """

    def __init__(self, path: str, on_mismatch: Literal["keep_chosen", "raise"] = "keep_chosen", batch_size: int = 8,
                 num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> list:
        return load_hh_rlhf(self.hparams.path, self.hparams.on_mismatch)


class InstructionDataModule(EvaluationDataModule):
    """Questions to answer, records :class:`Instruction`: a Vicuna / MT-bench ``question.jsonl`` (first turn of
    each question) or a JSONL of ``Prompt`` records (the sandbox's ``heldout_queries.jsonl``). The format is
    told by the first line: ``turns`` means Vicuna, ``prompt`` a Prompt record; every line is then validated."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> list[Instruction]:
        path = self.hparams.path
        where, first = next(iter_json_objects(path), (path, None))
        if first is None:
            raise RecordError(f"{path}: no questions")
        if "turns" in first:
            return [Instruction(str(q.question_id), q.text) for q in load_questions(path)]
        if "prompt" in first:
            return [Instruction(str(i), p.prompt) for i, p in enumerate(load_jsonl(path, Prompt))]
        raise RecordError(f"{where}: neither a Vicuna question (with 'turns') nor a Prompt record (with 'prompt')")


class TextDataModule(EvaluationDataModule):
    """Held-out text: a JSONL of ``CorpusDocument`` records ``{"text": ...}`` (the sandbox's corpus_heldout.jsonl)."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> list[CorpusDocument]:
        return load_jsonl(self.hparams.path, CorpusDocument)
