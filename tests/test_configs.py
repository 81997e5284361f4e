"""Every YAML parses through train.py; configs compose; a stage runs through the command line."""

from pathlib import Path

import pytest
import yaml

import train

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
STAGES = [p for p in CONFIGS if "model" in (yaml.safe_load(p.read_text()) or {})]
PARALLEL = sorted((ROOT / "configs" / "parallel").glob("*.yaml"))


def resolved_config(capsys, *args: str) -> dict:
    """The full config `train.py fit` would run with (parsed, linked, nothing instantiated)."""
    with pytest.raises(SystemExit) as exit_:
        train.main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_there_are_stage_configs_for_both_settings():
    names = {str(p.relative_to(ROOT / "configs")) for p in STAGES}
    pipeline = {f"sandbox/{stage}.yaml" for stage in ("mine", "responses", "comparisons", "rm", "rmsp", "selfplay",
                                                      "sft_rmsp", "sft_selfplay", "ppo")}
    assert pipeline | {"fixture/rm.yaml", "fixture/sft.yaml", "llama/rm.yaml", "llama/sft.yaml"} <= names


@pytest.mark.parametrize("config", STAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_stage_config_parses(config, capsys):
    resolved = resolved_config(capsys, "--config", str(config))
    assert resolved["model"]["class_path"].startswith("lit_models.")
    assert resolved["data"]["class_path"].startswith("data_modules.")
    assert "tokenizer" not in resolved["data"]["init_args"]  # linked from model.init_args.source


@pytest.mark.parametrize("fragment", PARALLEL, ids=lambda p: p.name)
def test_parallel_fragments_compose_with_a_stage(fragment, capsys):
    resolved = resolved_config(capsys, "--config", "configs/fixture/rm.yaml", "--config", str(fragment))
    assert resolved["trainer"]["devices"] in (1, 2)
    assert resolved["trainer"]["accelerator"] == "cpu"  # from the sandbox base


def test_llama_settings_follow_the_paper(capsys):
    rm = resolved_config(capsys, "--config", "configs/llama/rm.yaml")
    sft = resolved_config(capsys, "--config", "configs/llama/sft.yaml")
    for stage in (rm, sft):
        assert stage["model"]["init_args"]["lr"] == 2e-5 and stage["model"]["init_args"]["warmup_ratio"] == 0.03
        assert stage["trainer"]["precision"] == "bf16-mixed"
        assert stage["trainer"]["strategy"]["class_path"] == "lit_models.FSDP2Strategy"
    assert (rm["trainer"]["max_epochs"], rm["data"]["init_args"]["max_length"]) == (1, 1024)
    assert (sft["trainer"]["max_epochs"], sft["data"]["init_args"]["max_length"]) == (3, 512)


def test_base_chain_and_overrides(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("trainer: {max_epochs: 7, log_every_n_steps: 3}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrainer: {max_epochs: 5}\n")
    assert train.with_bases(str(tmp_path / "b.yaml")) == ["--config", str(tmp_path / "a.yaml"),
                                                          "--config", str(tmp_path / "b.yaml")]
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="loops"):
        train.with_bases(str(tmp_path / "loop.yaml"))
    # the stage file wins over its base, the command line over both
    resolved = resolved_config(capsys, "--config", "configs/fixture/rm.yaml", "--trainer.max_epochs=9",
                               "--model.init_args.lr=1e-5")
    assert resolved["trainer"]["max_epochs"] == 9 and resolved["trainer"]["log_every_n_steps"] == 5
    assert resolved["model"]["init_args"]["lr"] == 1e-5


@pytest.mark.parametrize("stage", ["rm", "sft"])
def test_stage_runs_through_the_cli(stage, tokenizer_dir, tmp_path):
    train.main(["fit", "--config", f"configs/fixture/{stage}.yaml", "--trainer.max_steps=3",
                f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.callbacks.dirpath={tmp_path}/ckpt",
                f"--model.init_args.source.tokenizer={tokenizer_dir}", f"--model.init_args.export_dir={tmp_path}/hf",
                "--trainer.enable_progress_bar=false"])
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "ckpt" / "last.ckpt").is_file()
    events = list((tmp_path / stage).rglob("events.out.tfevents.*"))
    assert events, "TensorBoard event file under <save_dir>/<stage>/"
    for subcommand in ("validate", "test", "predict"):
        train.main([subcommand, "--config", f"configs/fixture/{stage}.yaml", "--ckpt_path", f"{tmp_path}/ckpt/last.ckpt",
                    f"--trainer.logger.init_args.save_dir={tmp_path}", f"--model.init_args.source.tokenizer={tokenizer_dir}",
                    "--trainer.limit_predict_batches=2", "--trainer.enable_progress_bar=false"])


def test_gold_controls_differ_from_their_stages_only_in_the_scorer(capsys):
    gold = resolved_config(capsys, "--config", "configs/sandbox/gold/ppo.yaml")
    ppo = resolved_config(capsys, "--config", "configs/sandbox/ppo.yaml")
    reward = gold["model"]["init_args"].pop("reward")
    assert reward["class_path"] == "almost.sandbox.scorer.OracleScorer"
    assert gold["model"]["init_args"].pop("critic") == ppo["model"]["init_args"]["reward"]  # the RM's network
    for config in (gold, ppo):
        for key in ("reward", "critic", "export_dir"):
            config["model"]["init_args"].pop(key, None)
    assert gold["model"] == ppo["model"] and gold["data"] == ppo["data"]
