"""The curation policy file: one threshold per scorer, YAML or JSON.

    # policy.yaml
    image:
      min_confidence: 0.9        # evaluator's top-class probability
      max_duplicate_bits: 2      # phash Hamming distance to an earlier item of the batch
      min_train_distance: 0.02   # RMS pixel distance to the nearest training image
    text:
      min_words: 3                 # words per item: fewer is too_short
      max_words: 2000              # more is too_long
      min_perplexity: null         # per character under the generating model, given the prompt:
      max_perplexity: 200          #   too low is degenerate repetition, too high is noise
      min_mean_word_length: 3      # Gopher quality: mean length of whitespace-separated words
      max_mean_word_length: 10     #   outside [3, 10] is short_words / long_words
      min_alpha_word_fraction: 0.8   # words with a letter; fewer is few_alphabetic_words
      max_symbol_word_ratio: 0.1     # "#", "..." and "…" per word; more is symbols
      max_duplicate_line_fraction: 0.30       # Gopher: lines repeating an earlier line
      max_duplicate_line_char_fraction: 0.20  # Gopher: characters in those lines
      max_top_ngram_fraction: {2: 0.20, 3: 0.18, 4: 0.16}  # Gopher: most frequent word n-gram
      max_duplicate_ngram_fraction: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
      blocklist: [badword, "bad phrase"]      # whole words, case-insensitive
      pii: [email, phone, ipv4, credit_card]  # the PII patterns that reject an item
      minhash_threshold: 0.8       # estimated Jaccard of word 3-shingles to an earlier item
      minhash_shingle: 3
      minhash_num_perm: 128
      train_ngram: 13              # word n-grams shared with the model's training text...
      max_train_ngram_fraction: 0.0  # ...above this fraction of the item's n-grams reject it

Keys left out take the defaults of `ImagePolicy` / `TextPolicy`; null turns a scorer off;
an unknown key is an error (a typo must not silently disable a filter).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from aigc_core.curation.images import ImagePolicy
from aigc_core.curation.text import TextPolicy


class PolicyError(ValueError):
    """A policy file cannot be read or names unknown scorers."""


@dataclass(frozen=True)
class Policy:
    image: ImagePolicy = field(default_factory=ImagePolicy)
    text: TextPolicy = field(default_factory=TextPolicy)

    def to_dict(self) -> dict:
        return {"image": self.image.to_dict(), "text": self.text.to_dict()}

    @classmethod
    def from_dict(cls, data: dict | None, source: str = "policy") -> Policy:
        data = data or {}
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: expected a mapping with 'image' and/or 'text' sections")
        unknown = set(data) - {"image", "text"}
        if unknown:
            raise PolicyError(f"{source}: unknown section(s) {sorted(unknown)}; use image, text")
        parts = {}
        for section, klass in (("image", ImagePolicy), ("text", TextPolicy)):
            values = data.get(section) or {}
            if not isinstance(values, dict):
                raise PolicyError(f"{source}: section {section!r} must be a mapping")
            known = {f.name for f in dataclasses.fields(klass)}
            bad = set(values) - known
            if bad:
                raise PolicyError(
                    f"{source}: unknown {section} threshold(s) {sorted(bad)}; "
                    f"known: {', '.join(sorted(known))}"
                )
            try:
                parts[section] = klass(**values)
            except (TypeError, ValueError) as e:
                raise PolicyError(f"{source}: {section}: {e}") from None
        return cls(**parts)


def load_policy(path: str | Path | None) -> Policy:
    """Read a policy from a .yaml/.yml or .json file; None gives the defaults."""
    if path is None:
        return Policy()
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PolicyError(f"policy file {p} must end in .yaml, .yml or .json")
    try:
        raw = p.read_text()
    except OSError as e:
        raise PolicyError(f"cannot read policy file {p}: {e.strerror}") from None
    import yaml

    try:
        data = json.loads(raw) if suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise PolicyError(f"policy file {p} is not valid {suffix[1:]}: {e}") from None
    return Policy.from_dict(data, source=str(p))
