"""Entry point of every stage: ``python train.py <fit|validate|test|predict> --config configs/<setting>/<stage>.yaml``.

The config names the LightningModule (``model.class_path``) and the DataModule (``data.class_path``);
any value can be overridden on the command line, e.g. ``--trainer.max_steps=10 --model.init_args.lr=1e-5``.

Configs compose: a config may name the config it builds on with a top-level ``base:`` key (a path
relative to its own folder). ``--config stage.yaml`` then loads the base first and the stage file over it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from almost.gguf import GGUFError
from almost.models import ModelSource
from almost.records import RecordError
from lit_models.callbacks import NonFiniteCheck, Output, OutputCheck, RunError, check_outputs


def with_bases(config: str) -> list[str]:
    """``--config`` arguments for ``config`` and, before it, the chain of configs it builds on."""
    chain, path, seen = [], Path(config), set()
    while True:
        if path.resolve() in seen:
            raise ValueError(f"{config}: 'base' chain loops back to {path}")
        seen.add(path.resolve())
        chain.insert(0, str(path))
        base = (yaml.safe_load(path.read_text()) or {}).get("base") if path.is_file() else None
        if not base:
            break
        path = path.parent / base
    return [arg for p in chain for arg in ("--config", p)]


def expand_config_bases(argv: list[str]) -> list[str]:
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--config":
            out += with_bases(next(args))
        elif arg.startswith("--config="):
            out += with_bases(arg.removeprefix("--config="))
        else:
            out.append(arg)
    return out


# faults whose message names the file or setting at fault in one line: reported without a traceback
ONE_LINE_ERRORS = (RunError, RecordError, GGUFError)


def tokenizer_of(source: ModelSource | dict) -> str:
    """The tokenizer directory of a model source: the DataModule tokenizes with the model's tokenizer."""
    try:
        return ModelSource.of(source).tokenizer_dir  # converts a GGUF file on first use
    except ONE_LINE_ERRORS as error:  # jsonargparse would wrap it in its usage text
        sys.exit(f"error: {error}")


def run_error(error: BaseException | None) -> Exception | None:
    """The one-line error (``ONE_LINE_ERRORS``) behind ``error``, if any (jsonargparse wraps errors raised while it
    builds the classes)."""
    while error is not None and not isinstance(error, ONE_LINE_ERRORS):
        error = error.__cause__ or error.__context__
    return error


def logger_outputs(trainer: Namespace) -> list[Output]:
    """The directories the configured loggers write (Lightning's default logger: under ``default_root_dir``)."""
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    outputs = []
    for logger in loggers:
        if logger is None or logger is True:
            outputs.append(Output("default_root_dir", trainer.default_root_dir or ".", "dir"))
        elif isinstance(logger, Namespace) and logger.get("init_args") and logger.init_args.get("save_dir"):
            outputs.append(Output("logger save_dir", str(logger.init_args.save_dir), "dir"))
    return outputs


class AlmostCLI(LightningCLI):
    def before_instantiate_classes(self) -> None:
        # Lightning creates the loggers' directories before any callback runs, and a generation job loads its models
        # as it is built: check where the logs go before building anything (the other outputs: OutputCheck).
        check_outputs(logger_outputs(self.config.get(str(self.subcommand), self.config).trainer))

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--base", type=str | None, default=None, help="config this config builds on (see train.py)")
        parser.link_arguments("model.init_args.source", "data.init_args.tokenizer", compute_fn=tokenizer_of)


def main(argv: list[str] | None = None) -> None:
    argv = expand_config_bases(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass the expanded argv
    # every run: outputs checked before any network is built, training stopped at the first non-finite number
    checks = [OutputCheck(), NonFiniteCheck()]
    try:
        AlmostCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_kwargs={"overwrite": True}, args=argv,
                  trainer_defaults={"callbacks": checks})
    except Exception as error:
        cause = run_error(error)
        if cause is None:
            raise
        sys.exit(f"error: {cause}")  # the message says it all: no traceback


if __name__ == "__main__":
    main()
