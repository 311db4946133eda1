"""Text curation: perplexity bounds, Gopher quality and repetition rules, length, a blocklist,
PII patterns, MinHash near-duplicates and long n-gram overlap with the training text.

References:
- Rae et al., "Scaling Language Models: Methods, Analysis & Insights from Training Gopher"
  (2021), arXiv:2112.11446, appendix A (quality and repetition thresholds used as defaults
  here: mean word length 3-10, at least 80% of words with a letter, at most 0.1 hash or
  ellipsis symbols per word).
- Broder, "On the resemblance and containment of documents" (1997): MinHash; the LSH index is
  datasketch's `MinHashLSH`.
- Brown et al., "Language Models are Few-Shot Learners" (2020): 13-gram overlap for
  contamination; here the same test flags generated text that copies training text.

Like image curation, `score_texts` is per item and `decide_texts` applies a policy to a batch;
every item is kept or rejected with all of its reasons.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from aigc_core.curation.decisions import Reasons
from aigc_core.curation.policy import PII_PATTERNS, TextPolicy

_WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def perplexity(token_logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-likelihood per token (natural log-probs)."""
    if len(token_logprobs) == 0:
        return math.nan
    return float(math.exp(-float(np.mean(token_logprobs))))


def _ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]


def duplicate_line_fractions(text: str) -> tuple[float, float]:
    """(fraction of non-empty lines that repeat an earlier line, fraction of characters in them)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0, 0.0
    seen, dup_n, dup_chars = set(), 0, 0
    for ln in lines:
        if ln in seen:
            dup_n += 1
            dup_chars += len(ln)
        seen.add(ln)
    return dup_n / len(lines), dup_chars / sum(len(ln) for ln in lines)


def top_ngram_fraction(ws: Sequence[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram over all word characters (Gopher)."""
    grams = _ngrams(ws, n)
    total = sum(len(w) for w in ws)
    if not grams or total == 0:
        return 0.0
    gram, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(len(w) for w in gram) / total)


def duplicate_ngram_fraction(ws: Sequence[str], n: int) -> float:
    """Characters of words inside n-grams that occur more than once, over all word characters
    (Gopher; overlapping occurrences are counted once per word)."""
    grams = _ngrams(ws, n)
    total = sum(len(w) for w in ws)
    if not grams or total == 0:
        return 0.0
    counts = Counter(grams)
    covered = np.zeros(len(ws), dtype=bool)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = True
    return sum(len(w) for w, c in zip(ws, covered, strict=True) if c) / total


def blocklist_hits(text: str, blocklist: Iterable[str]) -> list[str]:
    """Blocklisted words or phrases present in `text` as whole words, case-insensitively."""
    hits = []
    for term in blocklist:
        pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, term.split())) + r"(?!\w)"
        if term.strip() and re.search(pattern, text, flags=re.IGNORECASE):
            hits.append(term)
    return hits


def _luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


def pii_hits(text: str, kinds: Iterable[str] = tuple(PII_PATTERNS)) -> list[str]:
    """Kinds of PII found in `text` (card numbers must pass the Luhn check)."""
    found = []
    for kind in kinds:
        for m in PII_PATTERNS[kind].finditer(text):
            if kind == "credit_card" and not _luhn_ok(re.sub(r"\D", "", m.group())):
                continue
            found.append(kind)
            break
    return found


class TrainingNgrams:
    """The set of word n-grams of a training corpus, for overlap checks."""

    def __init__(self, texts: Iterable[str], n: int = 13):
        self.n = n
        self.grams: set[int] = set()
        for t in texts:
            self.grams.update(hash(g) for g in _ngrams(words(t), n))

    def overlap_fraction(self, text: str) -> float:
        grams = _ngrams(words(text), self.n)
        if not grams:
            return 0.0
        return sum(hash(g) in self.grams for g in grams) / len(grams)


def _minhash(ws: Sequence[str], shingle: int, num_perm: int):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    grams = _ngrams(ws, shingle) or [tuple(ws)]
    m.update_batch([" ".join(g).encode() for g in grams])
    return m


def near_duplicate_of(
    texts: Sequence[str], threshold: float, shingle: int, num_perm: int
) -> np.ndarray:
    """(N,) index of an earlier text whose estimated Jaccard similarity of word shingles reaches
    `threshold`, else -1 (MinHash LSH from datasketch)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    out = np.full(len(texts), -1, dtype=np.int64)
    hashes = []
    for i, t in enumerate(texts):
        m = _minhash(words(t), shingle, num_perm)
        hashes.append(m)
        cands = [int(j) for j in lsh.query(m) if m.jaccard(hashes[int(j)]) >= threshold]
        if cands:
            out[i] = min(cands)
        lsh.insert(str(i), m)
    return out


def score_texts(
    texts: Sequence[str],
    policy: TextPolicy,
    perplexities: Sequence[float] | None = None,
    training: TrainingNgrams | None = None,
) -> pd.DataFrame:
    """Per-item scores (one row per text)."""
    rows = []
    for i, t in enumerate(texts):
        ws = words(t)
        line_frac, line_char_frac = duplicate_line_fractions(t)
        tokens = t.split()
        row = {
            "words": len(ws),
            # no words: nothing for these rules to judge (min_words rejects empty texts)
            "mean_word_length": float(np.mean([len(w) for w in tokens])) if tokens else math.nan,
            "alpha_word_frac": (
                sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens)
                if tokens
                else math.nan
            ),
            "symbol_word_ratio": (
                (t.count("#") + t.count("...") + t.count("…")) / len(tokens) if tokens else 0.0
            ),
            "perplexity": float(perplexities[i]) if perplexities is not None else math.nan,
            "dup_line_frac": line_frac,
            "dup_line_char_frac": line_char_frac,
            "blocklist": ";".join(blocklist_hits(t, policy.blocklist)),
            "pii": ";".join(pii_hits(t, policy.pii)),
            "train_ngram_frac": training.overlap_fraction(t) if training else math.nan,
        }
        for n in policy.max_top_ngram_fraction or {}:
            row[f"top_{n}gram_frac"] = top_ngram_fraction(ws, n)
        for n in policy.max_duplicate_ngram_fraction or {}:
            row[f"dup_{n}gram_frac"] = duplicate_ngram_fraction(ws, n)
        rows.append(row)
    return pd.DataFrame(rows, index=range(len(texts)))


def decide_texts(texts: Sequence[str], scores: pd.DataFrame, policy: TextPolicy) -> pd.DataFrame:
    """Add `duplicate_of`, `kept` and `reason` (all reasons, `;`-separated, empty when kept)."""
    df = scores.copy()
    reasons = Reasons(len(df))
    flag = reasons.flag
    if policy.min_words is not None:
        flag(df["words"] < policy.min_words, f"too_short<{policy.min_words}")
    if policy.max_words is not None:
        flag(df["words"] > policy.max_words, f"too_long>{policy.max_words}")
    if policy.min_mean_word_length is not None:
        flag(df["mean_word_length"] < policy.min_mean_word_length, "short_words")
    if policy.max_mean_word_length is not None:
        flag(df["mean_word_length"] > policy.max_mean_word_length, "long_words")
    if policy.min_alpha_word_fraction is not None:
        flag(df["alpha_word_frac"] < policy.min_alpha_word_fraction, "few_alphabetic_words")
    if policy.max_symbol_word_ratio is not None:
        flag(df["symbol_word_ratio"] > policy.max_symbol_word_ratio, "symbols")
    if policy.min_perplexity is not None or policy.max_perplexity is not None:
        ppl = df["perplexity"].to_numpy(dtype=np.float64)
        if len(ppl) and np.isnan(ppl).all():
            raise ValueError(
                "the policy bounds perplexity but no item has one: pass perplexities "
                "computed under the generating model, or set min/max_perplexity to null"
            )
        # an empty text has no perplexity: it cannot be shown to lie within the bounds
        flag(np.isnan(ppl), "no_perplexity")
        if policy.min_perplexity is not None:
            flag(ppl < policy.min_perplexity, f"perplexity<{policy.min_perplexity:g}")
        if policy.max_perplexity is not None:
            flag(ppl > policy.max_perplexity, f"perplexity>{policy.max_perplexity:g}")
    if policy.max_duplicate_line_fraction is not None:
        flag(df["dup_line_frac"] > policy.max_duplicate_line_fraction, "repeated_lines")
    if policy.max_duplicate_line_char_fraction is not None:
        flag(
            df["dup_line_char_frac"] > policy.max_duplicate_line_char_fraction,
            "repeated_line_chars",
        )
    for n, thr in (policy.max_top_ngram_fraction or {}).items():
        flag(df[f"top_{n}gram_frac"] > thr, f"top_{n}gram>{thr:g}")
    for n, thr in (policy.max_duplicate_ngram_fraction or {}).items():
        flag(df[f"dup_{n}gram_frac"] > thr, f"dup_{n}gram>{thr:g}")
    flag(df["blocklist"] != "", "blocklist")
    for kind in policy.pii:
        flag(df["pii"].str.split(";").apply(lambda ks, k=kind: k in ks), f"pii_{kind}")
    dup = np.full(len(df), -1, dtype=np.int64)
    if policy.minhash_threshold is not None and len(texts):
        dup = near_duplicate_of(
            texts, policy.minhash_threshold, policy.minhash_shingle, policy.minhash_num_perm
        )
        flag(dup >= 0, "near_duplicate")
    if policy.max_train_ngram_fraction is not None:
        frac = df["train_ngram_frac"].to_numpy()
        if np.isnan(frac).any():
            raise ValueError(
                "the policy checks overlap with the training text (max_train_ngram_fraction) but "
                "no training text was given: pass it, or set max_train_ngram_fraction to null"
            )
        flag(frac > policy.max_train_ngram_fraction, f"train_{policy.train_ngram}gram_overlap")
    return reasons.decided(df, dup)


def curate_texts(
    texts: Sequence[str],
    policy: TextPolicy,
    perplexities: Sequence[float] | None = None,
    training_texts: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Score and decide one batch of texts. Without training text, overlap is not checked."""
    training = None
    if training_texts is not None:
        training = TrainingNgrams(training_texts, policy.train_ngram)
    elif policy.max_train_ngram_fraction is not None:
        policy = TextPolicy(**{**policy.to_dict(), "max_train_ngram_fraction": None})
    return decide_texts(texts, score_texts(texts, policy, perplexities, training), policy)
