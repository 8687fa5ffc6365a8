import pytest
from perl_rlhf import PerlError, WordBand, contains_number


def test_contains_number():
    assert contains_number(["p"] * 3, ["in 1850", "long ago", ""]) == [1.0, 0.0, 0.0]


def test_word_band_counts_whitespace_separated_words():
    rule = WordBand(1, 3)
    answers = ["", "one", "one two  three", "one\ntwo three four", "  x  "]
    assert rule([""] * len(answers), answers) == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert WordBand(0, 2)([""], [""]) == [1.0]
    assert repr(rule) == "WordBand(1, 3)"
    with pytest.raises(PerlError, match="min_words <= max_words"):
        WordBand(4, 2)
