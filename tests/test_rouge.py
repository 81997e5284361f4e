import random

import pytest

from almost.rouge import NearDuplicateFilter, RougeScore, lcs_length, rouge_l, tokenize


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("The cat's mat!") == ["the", "cat", "s", "mat"]
    assert tokenize("Hello,world -- 42_x  Café") == ["hello", "world", "42", "x", "café"]
    assert tokenize(" ?! ") == []


@pytest.mark.parametrize("a, b, expected", [
    ("ABCBDAB", "BDCABA", 4),  # CLRS 15.4: BCBA
    ("BDCABA", "ABCBDAB", 4),  # symmetric
    ("ABC", "ABC", 3),
    ("ABC", "DEF", 0),
    ("", "ABC", 0),
    ("AB", "BA", 1),
])
def test_lcs_length(a, b, expected):
    assert lcs_length(list(a), list(b)) == expected


def test_rouge_l_equal_lengths():
    # LCS = "the cat on mat" = 4 of 6 tokens each.
    score = rouge_l("the cat sat on the mat", "the cat lay on a mat")
    assert score.precision == pytest.approx(4 / 6)
    assert score.recall == pytest.approx(4 / 6)
    assert score.fmeasure == pytest.approx(4 / 6)


def test_rouge_l_different_lengths():
    # candidate 6 tokens, reference 4, LCS = "the gunman" = 2: P = 1/3, R = 1/2, F = 2PR/(P+R) = 2/5.
    score = rouge_l("The gunman was shot by police.", "Police killed the gunman")
    assert score.precision == pytest.approx(1 / 3)
    assert score.recall == pytest.approx(1 / 2)
    assert score.fmeasure == pytest.approx(0.4)
    swapped = rouge_l("Police killed the gunman", "The gunman was shot by police.")
    assert (swapped.precision, swapped.recall) == pytest.approx((1 / 2, 1 / 3))


def test_rouge_l_identical_disjoint_and_empty():
    assert rouge_l("What is the capital of France?", "what is the CAPITAL of france") == RougeScore(1.0, 1.0, 1.0)
    assert rouge_l("red green blue", "cyan magenta") == RougeScore(0.0, 0.0, 0.0)
    assert rouge_l("", "anything") == RougeScore(0.0, 0.0, 0.0)
    assert rouge_l("...", "...") == RougeScore(0.0, 0.0, 0.0)  # no tokens


def test_near_duplicate_filter_rejects_at_exactly_the_threshold():
    f = NearDuplicateFilter()
    assert f.threshold == 0.5
    assert f.add("alpha beta gamma delta")
    assert not f.add("alpha beta omega sigma")  # LCS 2 of 4 + 4 tokens: F = 4/8 = 0.5 -> rejected
    assert f.add("alpha beta omega sigma tau")  # LCS 2 of 4 + 5 tokens: F = 4/9 < 0.5 -> kept
    assert not f.add("Alpha, beta; gamma delta!")  # identical tokens: F = 1
    assert f.add("beta alpha")  # LCS 1: F = 2/6 against the first, 2/7 against the second
    assert f.kept == ["alpha beta gamma delta", "alpha beta omega sigma tau", "beta alpha"]
    assert f.is_duplicate("gamma delta alpha beta") and len(f.kept) == 3  # F = 2*2/8 against the first


def test_near_duplicate_filter_bag_overlap_is_not_the_lcs():
    # "b a" shares both tokens with "a b" but LCS is 1: F = 2/4 = 0.5 (rejected); at 0.6 it is kept.
    f = NearDuplicateFilter(0.6)
    assert f.add("a b")
    assert f.add("b a")
    f = NearDuplicateFilter(0.5)
    assert f.add("a b")
    assert not f.add("b a")


def test_near_duplicate_filter_matches_brute_force():
    # The length and bag pre-checks must never change a decision.
    rng = random.Random(0)
    words = ["a", "b", "c", "d", "e", "f"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(300)]
    for threshold in (0.3, 0.5, 0.7):
        f, kept = NearDuplicateFilter(threshold), []
        for text in texts:
            expected = all(rouge_l(text, k).fmeasure < threshold for k in kept)
            assert f.add(text) == expected
            if expected:
                kept.append(text)
        assert f.kept == kept


def test_near_duplicate_filter_validates_threshold():
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateFilter(0.0)
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateFilter(1.5)
