"""Evaluation sets -> batches of records, for the evaluation commands (``lit_models.evaluation``).

Batches are lists of :class:`Indexed` records, not tensors: the evaluation module tokenizes them, since the
prompt depends on the method (A/B question, P(true) question, plain continuation) and, for win rates, on
each compared model's own tokenizer. These DataModules take no ``tokenizer`` argument, so ``train.py``'s link
from ``model.init_args.source`` does not apply to them (jsonargparse skips a link whose target is absent).

Benchmark files (HHH, TruthfulQA, HH-RLHF, Vicuna / MT-bench; ``.gz`` too) are read as they are by
``almost.evaluation``: an unusable item is left out and listed in ``skipped`` (``almost.evaluation.Skipped``:
index, reason, where, detail), which the evaluation module counts as ``skipped_<reason>`` metrics. Our own
records (Prompt, CorpusDocument files) are validated by ``almost.records``: a bad one raises an error naming
the file and the line.

Records keep their position in the set (``Indexed.index``; every item of every file counts, skipped ones too,
so rows and skips share one numbering): under several processes the distributed sampler pads the last batch
with repeats, and the evaluation module uses the index to drop them and to put the rows gathered from all
processes back in file order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from almost.evaluation import (ABExample, Loaded, Skipped, load_hh_rlhf, load_hhh, load_questions,
                               load_truthfulqa_mc)
from almost.records import CorpusDocument, Prompt, RecordError, load_jsonl, scan_jsonl


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
        self.skipped: list[Skipped] = []  # the items left out, indexed in the set, in set order

    # --- to implement -------------------------------------------------------------------------
    def load(self) -> Loaded | list[Any]:
        """The usable records of the evaluation set in file order: a ``Loaded`` (with every record's position
        and the skipped items) or a plain list (nothing skipped)."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.items is None:
            loaded = self.load()
            loaded = loaded if isinstance(loaded, Loaded) else Loaded(loaded)
            self.items = [Indexed(index, record) for index, record in zip(loaded.positions, loaded)]
            self.skipped = loaded.skipped

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

    def load(self) -> Loaded:
        """Every file's usable examples, files in order; a file's indices follow all items of the files before."""
        records, positions, skipped, offset = [], [], [], 0
        for path in self.data_files:
            loaded = load_hhh(path)
            records += [SubsetExample(Path(path).stem, example) for example in loaded]
            positions += [offset + position for position in loaded.positions]
            skipped += [replace(skip, index=offset + skip.index) for skip in loaded.skipped]
            offset += loaded.n_items
        return Loaded(records, positions, skipped)


class TruthfulQADataModule(EvaluationDataModule):
    """A TruthfulQA ``mc_task.json``; records are ``almost.evaluation.MCQuestion``."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> Loaded:
        return load_truthfulqa_mc(self.hparams.path)


class HHRLHFDataModule(EvaluationDataModule):
    """HH-RLHF preference pairs (``.jsonl`` or ``.jsonl.gz``), each split into a shared prompt and two responses
    by ``almost.evaluation.split_hh_pair``; records are ``almost.evaluation.HHPair``."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> Loaded:
        return load_hh_rlhf(self.hparams.path)


class InstructionDataModule(EvaluationDataModule):
    """Questions to answer, records :class:`Instruction`: a Vicuna / MT-bench ``question.jsonl`` (first turn of
    each question) or a JSONL of ``Prompt`` records (the sandbox's ``heldout_queries.jsonl``). The format is
    told by the first JSON object: ``turns`` means Vicuna (an unusable question is skipped), ``prompt`` a
    Prompt record (every line is validated; a bad one raises)."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> Loaded | list[Instruction]:
        path = self.hparams.path
        where, first = next(((where, obj) for _, where, obj in scan_jsonl(path) if isinstance(obj, dict)), (path, None))
        if first is None:
            raise RecordError(f"{path}: no questions")
        if "turns" in first:
            questions = load_questions(path)
            return Loaded([Instruction(str(q.question_id), q.text) for q in questions], questions.positions,
                          questions.skipped)
        if "prompt" in first:
            return [Instruction(str(i), p.prompt) for i, p in enumerate(load_jsonl(path, Prompt))]
        raise RecordError(f"{where}: neither a Vicuna question (with 'turns') nor a Prompt record (with 'prompt')")


class TextDataModule(EvaluationDataModule):
    """Held-out text: a JSONL of ``CorpusDocument`` records ``{"text": ...}`` (the sandbox's corpus_heldout.jsonl).
    A document may be of any length (the perplexity window slides over it)."""

    def __init__(self, path: str, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__([path], batch_size, num_workers)

    def load(self) -> list[CorpusDocument]:
        return load_jsonl(self.hparams.path, CorpusDocument, max_field_chars=None)
