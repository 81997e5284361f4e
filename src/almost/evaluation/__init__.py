"""Framework-free evaluation core: benchmark file formats, metrics, and the rubric judge (paper section 3)."""

from almost.evaluation.formats import (ABExample, HHPair, InstructionQuestion, Loaded, MCQuestion, Skipped, load_hh_rlhf,
                                       load_hhh, load_questions, load_truthfulqa_mc, parse_hh_transcript, skip_counts,
                                       split_hh_pair, write_hhh, write_truthfulqa_mc)
from almost.evaluation.judge import JUDGE_RUBRIC, JudgeTally, parse_score, render_judge_prompt
from almost.evaluation.metrics import (WinTieLoss, ab_accuracy, ab_choice_probability, longer_wins_accuracy, mc1, mc2,
                                       perplexity, preference_accuracy, sliding_window_nll, win_tie_loss,
                                       win_tie_loss_from_verdicts)

__all__ = ["ABExample", "HHPair", "InstructionQuestion", "Loaded", "MCQuestion", "Skipped", "load_hh_rlhf", "load_hhh",
           "load_questions", "load_truthfulqa_mc", "parse_hh_transcript", "skip_counts", "split_hh_pair", "write_hhh",
           "write_truthfulqa_mc", "JUDGE_RUBRIC", "JudgeTally", "parse_score", "render_judge_prompt", "WinTieLoss",
           "ab_accuracy", "ab_choice_probability", "longer_wins_accuracy", "mc1", "mc2", "perplexity",
           "preference_accuracy", "sliding_window_nll", "win_tie_loss", "win_tie_loss_from_verdicts"]
