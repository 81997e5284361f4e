"""Checks that stop a run early and in one line, rather than late or with a traceback.

``OutputCheck``: every location the run will write (checkpoints, a training stage's ``export_dir``, a job's
``output`` and its shards, an evaluation's ``out_dir``) is tested at ``setup``, before ``configure_model`` builds
any network (a job, which loads its models as it is built, checks its outputs first thing in ``__init__``): a file where a directory is needed, a directory where a file is needed, or
a location this user cannot write is an ``OutputLocationError`` naming the path.

``NonFiniteCheck``: a non-finite training loss or gradient norm stops training before the optimizer steps with it,
so the weights stay finite; a non-finite value among the statistics PPO logs stops it at the end of that batch,
before ``ModelCheckpoint`` (Lightning runs checkpoint callbacks last); and as a last guard no checkpoint and no
export (``on_train_end``, which Lightning calls only on a normal finish, callbacks before the module) is written
from non-finite weights. The error is a ``NonFiniteError``: ``step 3: train/loss is nan; stopping ...``.

``train.py`` adds both callbacks to every run and prints a ``RunError`` as one line, without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Literal, NamedTuple

import lightning as L
import torch

STOPPING = "stopping before any checkpoint or export"


class RunError(Exception):
    """A fault of the run's setup or numbers that ``train.py`` reports as one line (``error: <message>``)."""


class OutputLocationError(RunError):
    """An output location that cannot be written as needed."""


class NonFiniteError(RunError):
    """A non-finite loss, reward, gradient norm or weight."""


# --- output locations -------------------------------------------------------------------------------
class Output(NamedTuple):
    role: str  # how the run calls it, for the message: "export_dir", "output", "checkpoints dir", ...
    path: str
    kind: Literal["dir", "file"]


def check_output(output: Output) -> None:
    """Raise ``OutputLocationError`` unless ``output`` can be written: the path, or the directory that will hold
    it, is a directory (or can be made one inside the nearest existing directory), and this user may write there.
    Nothing is created."""
    path = Path(output.path)

    def fail(problem: str) -> None:
        raise OutputLocationError(f"{output.role} {output.path}: {problem}")

    if output.kind == "file" and path.is_dir():
        fail("is a directory (a file is needed)")
    if output.kind == "file" and path.exists():
        if not os.access(path, os.W_OK):
            fail("not writable")
        return
    directory = path if output.kind == "dir" else path.parent
    existing = next(p for p in (directory, *directory.parents) if p.exists())  # "/" or "." at the latest
    if not existing.is_dir():
        fail("a file is in the way (a directory is needed)" if existing == path
             else f"{existing} is a file (a directory is needed)")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail("not writable" if existing == path else f"not writable (cannot create it in {existing})")


def check_outputs(outputs: Iterable[Output]) -> None:
    for output in outputs:
        check_output(output)


def module_outputs(pl_module: L.LightningModule, stage: str) -> list[Output]:
    """What the module writes in ``stage``: its own ``output_paths()`` (jobs, evaluations), else a training
    stage's ``export_dir`` at the end of ``fit``."""
    if hasattr(pl_module, "output_paths"):
        return list(pl_module.output_paths())
    export_dir = pl_module.hparams.get("export_dir")
    return [Output("export_dir", str(export_dir), "dir")] if stage == "fit" and export_dir else []


def checkpoint_outputs(trainer: L.Trainer, stage: str) -> list[Output]:
    """In ``fit``, the checkpoint directories (Lightning's default for a ``ModelCheckpoint`` without ``dirpath`` lies
    under the logger's directory, or else ``default_root_dir``). The loggers are not checked here: Lightning creates
    their directories before any callback's ``setup`` (``train.py`` checks them before it builds anything)."""
    outputs = []
    for callback in trainer.checkpoint_callbacks if stage == "fit" else []:
        dirpath = getattr(callback, "dirpath", None)
        if dirpath:
            outputs.append(Output("checkpoints dir", str(dirpath), "dir"))
        elif not trainer.loggers:
            outputs.append(Output("default_root_dir", str(trainer.default_root_dir), "dir"))
    return outputs


class OutputCheck(L.Callback):
    """Tests every output location of the run at ``setup`` (before any network is built)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        check_outputs(checkpoint_outputs(trainer, stage) + module_outputs(pl_module, stage))


# --- numbers ------------------------------------------------------------------------------------------
def nonfinite(value: torch.Tensor) -> str | None:
    """How ``value`` is not finite (``"is nan"``, ``"has 3 non-finite values of 16 (e.g. inf)"``), or None."""
    value = value.detach()
    if hasattr(value, "full_tensor"):  # a DTensor (FSDP2)
        value = value.full_tensor()
    bad = ~torch.isfinite(value)
    if not bad.any():
        return None
    if value.numel() == 1:
        return f"is {value.item()}"
    return f"has {int(bad.sum())} non-finite values of {value.numel()} (e.g. {value[bad][0].item()})"


def check_finite(values: dict[str, torch.Tensor], where: str, strategy=None) -> None:
    """Raise ``NonFiniteError`` if any of ``values`` (name -> tensor) is not finite. With ``strategy``, every
    process raises when one does (a process stopping alone would leave the others waiting in a collective)."""
    problems = [f"{name} {how}" for name, value in values.items() if (how := nonfinite(value))]
    anywhere = strategy.reduce_boolean_decision(bool(problems), all=False) if strategy is not None else problems
    if anywhere:
        what = "; ".join(problems) if problems else "a non-finite value on another process"
        raise NonFiniteError(f"{where}: {what}; {STOPPING}")


def first_nonfinite_weight(named: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor with a non-finite value (this process's shard), or None."""
    for name, tensor in named:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
            if not torch.isfinite(local.detach()).all():
                return name
    return None


class NonFiniteCheck(L.Callback):
    """Stops training at the first non-finite loss, gradient norm, PPO statistic or weight (see the module doc)."""

    # logged each step by PPOModule (means over processes, so every process sees the same values)
    WATCHED = ("rollout/score", "ppo/policy_loss", "ppo/value_loss", "ppo/policy_grad_norm", "ppo/critic_grad_norm")

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []  # every loss backpropagated since the last optimizer step

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        # kept, not checked: no device sync per backward; they are read with the gradient norm, once per optimizer
        # step. A process whose loss is not finite sends non-finite gradients to all the others (DDP), so all of
        # them stop at the same step.
        self.losses.append(loss.detach().float().reshape(1))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if hasattr(norm, "full_tensor"):  # DTensor under FSDP2: the norm of the whole model, the same everywhere
            norm = norm.full_tensor()
        losses, self.losses = self.losses, []
        values = torch.cat([norm.detach().float().reshape(1), *(loss.to(norm.device) for loss in losses)])
        if bool(torch.isfinite(values).all()):  # one device sync per optimizer step
            return
        where = f"step {trainer.global_step}"
        bad_loss = next((value for value in losses if not torch.isfinite(value).all()), None)
        if bad_loss is not None:
            loss = "train/loss" if pl_module.automatic_optimization else "the loss passed to manual_backward"
            raise NonFiniteError(f"{where}: {loss} is {bad_loss.item()}; {STOPPING}")
        which = ""
        if len(trainer.optimizers) > 1:
            which = f" (optimizer {next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), '?')})"
        raise NonFiniteError(f"{where}: gradient norm{which} is {norm.item()}; {STOPPING}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        logged = {name: torch.as_tensor(trainer.callback_metrics[name]) for name in self.WATCHED
                  if name in trainer.callback_metrics}
        check_finite(logged, f"step {trainer.global_step}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.check_weights(trainer, checkpoint.get("state_dict", {}).items(), "not writing the checkpoint")

    def on_train_end(self, trainer, pl_module) -> None:  # callbacks run before the module's export
        self.check_weights(trainer, pl_module.named_parameters(), "not exporting")

    @staticmethod
    def check_weights(trainer, named: Iterable[tuple[str, Any]], action: str) -> None:
        name = first_nonfinite_weight(named)
        if trainer.strategy.reduce_boolean_decision(name is not None, all=False):
            where = f"weight {name}" if name else "a weight on another process"
            raise NonFiniteError(f"step {trainer.global_step}: {where} is not finite; {action}")
