"""Text curation: each filter rejects a planted bad item and keeps a good one."""

from __future__ import annotations

import math

import pytest

from aigc_core.curation.policy import TextPolicy
from aigc_core.curation.text import (
    blocklist_hits,
    curate_texts,
    duplicate_line_fractions,
    duplicate_ngram_fraction,
    near_duplicate_of,
    perplexity,
    pii_hits,
    top_ngram_fraction,
    words,
)

GOOD = [
    "The lighthouse keeper counted ships until the fog rolled over the harbour at dawn.",
    "Seven quiet foxes crossed the frozen river while the village slept under heavy snow.",
    "A small bakery on the corner sells rye bread, honey cakes and strong black coffee.",
    "Engineers tested the new bridge with loaded trucks before opening it to the public.",
]
TRAINING = [
    "once upon a time there was a princess who lived in a tall tower by the grey northern sea "
    "and every morning she watched the fishing boats leave the harbour"
]


def reasons(df, i):
    return df.loc[i, "reason"].split(";") if df.loc[i, "reason"] else []


def test_each_planted_bad_text_is_rejected_and_good_ones_kept():
    bad = {
        "duplicate": GOOD[0].upper() + " AGAIN",  # near-copy of item 0
        "blocklist": "The report mentioned a Frobnicator near the old mill by the river bank.",
        "email": "For details about the harvest festival write to jane.doe@example.org today.",
        "repeated_lines": "buy now\nbuy now\nbuy now\nbuy now\nlimited offer on every item",
        "training": "she said once upon a time there was a princess who lived in a tall tower "
        "by the grey northern sea",
        "short": "Hi.",
        "soup": ",D*p_wWf%aEh]EC?aaL>O)dk mN]o…p/>wBeV'^YB_?p’Qn@1NL*n{_k%C4N|%vuwk02_d°)Qu) "
        "X:<k,>;O3^k?4)Lxa^&&/UU|_8(%K!p#z8K#^D%;M&6e8FKQ;lT–0k",  # an untrained model's output
    }
    texts = GOOD + list(bad.values())
    policy = TextPolicy(blocklist=("frobnicator",))
    df = curate_texts(texts, policy, training_texts=TRAINING)
    assert df.loc[: len(GOOD) - 1, "kept"].all(), df.loc[: len(GOOD) - 1, "reason"].tolist()
    at = {k: len(GOOD) + i for i, k in enumerate(bad)}
    assert "near_duplicate" in reasons(df, at["duplicate"])
    assert df.loc[at["duplicate"], "duplicate_of"] == 0
    assert reasons(df, at["blocklist"]) == ["blocklist"]
    assert reasons(df, at["email"]) == ["pii_email"]
    assert "repeated_lines" in reasons(df, at["repeated_lines"])
    assert reasons(df, at["training"]) == ["train_13gram_overlap"]
    assert reasons(df, at["short"]) == ["too_short<3"]
    assert "long_words" in reasons(df, at["soup"])
    assert not df.loc[list(at.values()), "kept"].any()


def test_gopher_quality_rules():
    texts = [
        GOOD[1],
        "a b c d e f g h i j k l",  # mean word length 1
        "--> === 3.14 (1) [22] <=> 2.71 +++ whole thing",  # 2 of 10 words hold a letter
        "# heading # another # and # more # hashes here",  # 5 hashes over 9 words
    ]
    df = curate_texts(texts, TextPolicy())
    assert df.loc[0, "kept"]
    assert reasons(df, 1) == ["short_words"]
    assert reasons(df, 2) == ["few_alphabetic_words"]
    assert "symbols" in reasons(df, 3)
    lenient = TextPolicy(
        min_mean_word_length=None, min_alpha_word_fraction=None, max_symbol_word_ratio=None
    )
    assert curate_texts(texts, lenient)["kept"].all()
    with pytest.raises(ValueError, match="min_mean_word_length"):
        TextPolicy(min_mean_word_length=12.0)
    with pytest.raises(ValueError, match="min_alpha_word_fraction"):
        TextPolicy(min_alpha_word_fraction=1.5)


def test_perplexity_bounds():
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert math.isnan(perplexity([]))
    policy = TextPolicy(min_perplexity=1.5, max_perplexity=50.0)
    df = curate_texts(GOOD[:3], policy, perplexities=[1.1, 12.0, 80.0])
    assert df["reason"].tolist() == ["perplexity<1.5", "", "perplexity>50"]
    with pytest.raises(ValueError, match="pass perplexities"):
        curate_texts(GOOD[:1], policy)


def test_gopher_repetition_scores():
    assert duplicate_line_fractions("a\nb\na\na") == (0.5, pytest.approx(2 / 4))
    assert duplicate_line_fractions("") == (0.0, 0.0)
    ws = words("the cat the cat the cat sat")
    # "the cat" occurs 3 times: 3 * 6 chars of 21 word characters
    assert top_ngram_fraction(ws, 2) == pytest.approx(18 / 21)
    assert top_ngram_fraction(words(GOOD[0]), 2) == 0.0
    spam = words("one two three four five one two three four five six")
    assert duplicate_ngram_fraction(spam, 5) == pytest.approx(
        sum(map(len, spam[:10])) / sum(map(len, spam))
    )
    assert duplicate_ngram_fraction(words(GOOD[1]), 5) == 0.0
    df = curate_texts(["alpha beta gamma " * 6 + "delta"], TextPolicy())
    r = df.loc[0, "reason"].split(";")
    assert "top_2gram>0.2" in r and "dup_5gram>0.15" in r


def test_blocklist_matches_whole_words_case_insensitively():
    assert blocklist_hits("A BadWord here", ["badword"]) == ["badword"]
    assert blocklist_hits("notbadwordy", ["badword"]) == []
    assert blocklist_hits("a very  bad\nphrase", ["bad phrase"]) == ["bad phrase"]


@pytest.mark.parametrize(
    "text,kind",
    [
        ("mail me: a.b+c@mail.co.uk", "email"),
        ("call +1 415-555-0134 now", "phone"),
        ("server at 192.168.10.254 is down", "ipv4"),
        ("card 4111 1111 1111 1111 expires", "credit_card"),
    ],
)
def test_pii_patterns(text, kind):
    assert kind in pii_hits(text)


def test_pii_ignores_ordinary_numbers():
    assert pii_hits("In 1969, 3 of 12 ships sailed 1234567890123 miles at 3.14 knots.") == []
    assert pii_hits("card 4111 1111 1111 1112") == []  # fails the Luhn check


def test_minhash_near_duplicates_use_an_earlier_item():
    texts = [GOOD[1], GOOD[2], GOOD[1] + " Again.", GOOD[3]]
    assert near_duplicate_of(texts, 0.7, 3, 128).tolist() == [-1, -1, 0, -1]


def test_policy_validation():
    with pytest.raises(ValueError, match="pii.0\n.*'email', 'phone', 'ipv4' or 'credit_card'"):
        TextPolicy(pii=("ssn",))
    with pytest.raises(ValueError, match="minhash_threshold"):
        TextPolicy(minhash_threshold=0)
    with pytest.raises(ValueError, match="max_top_ngram_fraction.2\n.*less than or equal to 1"):
        TextPolicy(max_top_ngram_fraction={2: 1.5})
    with pytest.raises(ValueError, match="blocklist.0\n.*valid string"):
        TextPolicy(blocklist=[True])  # YAML's `yes` is not a word to block
    with pytest.raises(ValueError, match="minhash_num_perm\n.*valid integer"):
        TextPolicy(minhash_num_perm=128.5)
    p = TextPolicy(max_top_ngram_fraction={"2": 0.3}, blocklist=["x"], pii=["email"])
    assert p.max_top_ngram_fraction == {2: 0.3}  # JSON's string keys are n-gram lengths
    assert p.blocklist == ("x",) and p.pii == ("email",)
    assert TextPolicy(**p.to_dict()) == p


def test_an_empty_text_has_no_perplexity_and_says_so():
    policy = TextPolicy(min_words=None, max_perplexity=50.0, minhash_threshold=None)
    df = curate_texts([GOOD[0], ""], policy, perplexities=[12.0, math.nan])
    assert df["reason"].tolist() == ["", "no_perplexity"]
    with pytest.raises(ValueError, match="min_perplexity .* is more than max_perplexity"):
        TextPolicy(min_perplexity=9.0, max_perplexity=3.0)
    with pytest.raises(ValueError, match="min_words\n.*greater than or equal to 0"):
        TextPolicy(min_words=-1)
