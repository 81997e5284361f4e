"""The English few-shot prompts for real LMs (prompts/en/): they load with FewShotPrompter, the styles differ as
meant (HHH short and plain, faithful careful and complete), and the seed queries span the three aspects."""

from pathlib import Path
from statistics import fmean

import pytest
import yaml

from almost.prompting import FewShotPrompter, PromptedConfig
from almost.records import Demonstration, Prompt, Turn, load_jsonl

ROOT = Path(__file__).parent.parent
PROMPTS = ROOT / "prompts" / "en"
STYLES = {style: str(PROMPTS / f"{style}.jsonl") for style in ("faithful", "hhh", "user")}


@pytest.fixture(scope="module")
def prompter() -> FewShotPrompter:
    return FewShotPrompter(STYLES)


def answers(style: str) -> list[str]:
    return [t.content for d in load_jsonl(STYLES[style], Demonstration) for t in d.messages if t.role == "assistant"]


def test_every_style_has_five_or_more_demonstrations(prompter):
    assert {style: len(pool) >= 5 for style, pool in prompter.pools.items()} == dict.fromkeys(STYLES, True)
    assert all(len(demo) >= 2 for demo in prompter.pools["user"])  # the simulated user learns follow-up questions
    assert all(len(demo) == 1 for style in ("faithful", "hhh") for demo in prompter.pools[style])


def test_faithful_answers_are_fuller_than_hhh_answers():
    faithful, hhh = (fmean(len(a.split()) for a in answers(style)) for style in ("faithful", "hhh"))
    assert faithful > 3 * hhh, (faithful, hhh)
    assert max(len(a.split()) for a in answers("hhh")) <= 25


def test_each_turn_is_one_line_as_the_prompt_renders_it():
    # a demonstration is rendered one exchange per line; a newline would read as the end of the turn
    for style, path in STYLES.items():
        for demo in load_jsonl(path, Demonstration):
            assert all("\n" not in t.content and t.content == t.content.strip() for t in demo.messages), style


def test_prompts_render_for_the_rubric_of_the_gemma_configs(prompter):
    responses = yaml.safe_load((ROOT / "configs" / "gemma" / "responses.yaml").read_text())
    rubric = responses["model"]["init_args"]["rubric"]
    for name in rubric.split(" > "):
        config = PromptedConfig.parse(name.strip())
        text = prompter.assistant_prompt(config.style, config.shots, [Turn("user", "Why is the sky blue?")])
        assert text.count("User: ") == config.shots + 1 and text.endswith("User: Why is the sky blue?\nAssistant:")
    history = [Turn("user", "How do I boil an egg?"), Turn("assistant", "Put it in boiling water for 7 minutes.")]
    assert prompter.user_prompt(2, history).endswith("Assistant: Put it in boiling water for 7 minutes.\nUser:")


def test_seed_queries_span_helpful_harmful_and_unknowable_questions(prompter):
    seeds = load_jsonl(PROMPTS / "seed_queries.jsonl", Prompt)
    families = [s.meta["family"] for s in seeds]
    assert 25 <= len(seeds) <= 40 and len({s.prompt for s in seeds}) == len(seeds)
    assert families.count("helpful") >= 15 and families.count("harmful") >= 3 and families.count("unknowable") >= 3
    demonstrated = {q for pool in prompter.pools.values() for demo in pool for q, _ in demo}
    assert not demonstrated & {s.prompt for s in seeds}  # a seed never meets its own answer in a prompt
