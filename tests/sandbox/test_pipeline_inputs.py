"""The pipelines' stage lists: a stage reruns when what shapes its output changes."""

from pathlib import Path

from almost.sandbox import gold, pipeline, self_rewarding
from train import with_bases

ROOT = Path(__file__).resolve().parents[2]
PROMPTER = "almost.sandbox.prompts.SandboxPrompter"


def renders_sandbox_prompts(command: tuple[str, ...]) -> bool:
    """Whether the stage's config (with its base chain) builds the sandbox prompter."""
    if "--config" not in command:
        return False
    config = command[command.index("--config") + 1]
    return any(PROMPTER in Path(path).read_text() for path in with_bases(str(ROOT / config))[1::2])


def test_every_stage_that_renders_the_sandbox_prompts_reruns_when_they_change():
    stages = [*pipeline.stages(), *gold.stages(), *self_rewarding.stages()]
    rendering = [s.name for s in stages if renders_sandbox_prompts(s.command)]
    assert {"responses", "rmsp", "selfplay", "gold/rmsp"} <= set(rendering)
    prompts = pipeline.SANDBOX_CODE / "prompts.py"
    assert [name for name in rendering if prompts not in {s.name: s for s in stages}[name].inputs] == []
    assert prompts in {s.name: s for s in stages}["baselines"].inputs  # renders them in Python, not from a config
