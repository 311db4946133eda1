"""The curation policy file: one threshold per scorer, YAML or JSON.

    # policy.yaml
    image:
      min_confidence: 0.9        # evaluator's top-class probability
      max_duplicate_bits: 2      # phash Hamming distance to an earlier item of the batch
      min_train_distance: 0.02   # RMS pixel distance to the nearest training image
      require_requested_class: true  # an item asked to be class c (--labels) that the
                                     #   evaluator reads as another class is wrong_class
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
    audio:
      max_silence_fraction: 0.5    # 256-sample frames below -50 dBFS; more is silent
      max_clipping_fraction: 0.001 # samples at full scale; more is clipped
      max_dc_offset: 0.05          # |mean sample| in full-scale units; more is dc_offset
      min_confidence: 0.9          # the audio evaluator's top-class probability
      max_duplicate_bits: 8        # Hamming distance of 256-bit mel SimHashes to an earlier clip
      max_train_similarity: 0.998  # mel-vector cosine with the nearest training clip
      require_requested_class: true

`require_requested_class` is a switch, not a threshold: on (the default), an item of a
conditional model's batch that was asked to be class c (`aigc generate --labels`) is rejected
as wrong_class when the evaluator predicts another class; items asked for no class are never
checked. Off keeps such items (their requested and predicted labels stay in the batch).

Keys left out take the defaults of `ImagePolicy` / `TextPolicy` / `AudioPolicy`; null turns a
scorer off; an unknown key is an error (a typo must not silently disable a filter), and so is a
value out of its range. The classes are pydantic dataclasses: `Policy.json_schema()` is the
file's JSON Schema (a config file's `curation` section has the same format:
`aigc_core.settings`). YAML numbers are read as YAML 1.2 reads them: `2e-4` is a number (YAML
1.1 made it a string).

The classes live here, apart from the scorers that apply them (`curation.images` and
`curation.audio` import torch and scipy, `curation.text` pandas): the CLI checks a policy or a
config file without those. A batch's id hashes only its own kind's section, so a change to
the audio section leaves image and text batch ids as they were.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from aigc_core.config_types import (
    CONFIG,
    Bool,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Probability,
    describe,
)

HammingBits = Annotated[int, Field(strict=True, ge=0, le=64)]  # of a 64-bit hash
AUDIO_HASH_BITS = 256  # the audio fingerprint's bits (`curation.audio.simhash`)
SimHashBits = Annotated[int, Field(strict=True, ge=0, le=AUDIO_HASH_BITS)]
Cosine = Annotated[float, Field(strict=True, ge=-1, le=1)]


@dataclass(frozen=True, config=CONFIG)
class ImagePolicy:
    """Image curation thresholds; null turns a scorer off."""

    min_confidence: Probability | None = 0.9
    """the evaluator's top-class probability; less is low_confidence"""
    max_duplicate_bits: HammingBits | None = 2
    """phash Hamming distance to an earlier item of the batch; within it is a duplicate"""
    min_train_distance: Probability | None = 0.02
    """RMS pixel distance to the nearest training image; less is memorized"""
    require_requested_class: Bool = True
    """an item asked to be one class (--labels) that the evaluator predicts as another is
    wrong_class; items asked for no class are not checked"""

    def to_dict(self) -> dict:
        """The thresholds and switches. A switch added after batches were first made
        (`LATER_SWITCHES`) is left out at its default: a batch id is a hash of this dict, and
        at the default the switch changes nothing in a batch that asks for no labels, so such
        batches keep their ids."""
        d = asdict(self)
        for name, default in LATER_SWITCHES.items():
            if d[name] == default:
                del d[name]
        return d


# switches of `ImagePolicy.to_dict` left out at their default (name -> default)
LATER_SWITCHES = {"require_requested_class": True}


# The PII kinds a policy's `text.pii` can name, and what each matches (`curation.text.pii_hits`):
# precise enough to avoid flagging ordinary numbers and prose.
PII_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "phone": re.compile(
        r"(?<![\w+])(?:\+\d{1,3}(?:[ .-]\d{1,4}){2,4}"  # international: +CC and 2-4 groups
        r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})(?!\w)"  # North American: 3-3-4
    ),
    "ipv4": re.compile(
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"
    ),
    "credit_card": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
}

PiiKind = Literal[tuple(PII_PATTERNS)]  # "email", "phone", "ipv4", "credit_card"
NgramLength = Annotated[int, Field(ge=1)]  # not strict: YAML/JSON keys "2" mean 2
NgramFractions = dict[NgramLength, Probability]
Similarity = Annotated[float, Field(strict=True, gt=0, le=1)]

GOPHER_TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
GOPHER_DUP_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


@dataclass(frozen=True, config=CONFIG)
class TextPolicy:
    """Text curation thresholds; null turns a scorer off."""

    min_words: NonNegativeInt | None = 3
    """words per item: fewer is too_short"""
    max_words: NonNegativeInt | None = 2000
    """more is too_long"""
    min_perplexity: NonNegativeFloat | None = None
    """per character under the generating model, given the prompt (exp of the mean nats per
    character): less is degenerate repetition"""
    max_perplexity: NonNegativeFloat | None = None
    """more is noise"""
    # Gopher quality rules, on whitespace-separated words: they reject character soup, which
    # the generating model's own perplexity cannot (an untrained model rates its soup typical)
    min_mean_word_length: NonNegativeFloat | None = 3.0
    """Gopher: mean length of whitespace-separated words; less is short_words"""
    max_mean_word_length: NonNegativeFloat | None = 10.0
    """more is long_words"""
    min_alpha_word_fraction: Probability | None = 0.8
    """words holding at least one letter; fewer is few_alphabetic_words"""
    max_symbol_word_ratio: NonNegativeFloat | None = 0.1
    """hash signs and ellipses ("#", "...", "…") per word; more is symbols"""
    max_duplicate_line_fraction: Probability | None = 0.30
    """Gopher: lines that repeat an earlier line"""
    max_duplicate_line_char_fraction: Probability | None = 0.20
    """Gopher: characters in those lines"""
    max_top_ngram_fraction: NgramFractions | None = field(
        default_factory=lambda: dict(GOPHER_TOP_NGRAM)
    )
    """Gopher: characters covered by the most frequent word n-gram, per n"""
    max_duplicate_ngram_fraction: NgramFractions | None = field(
        default_factory=lambda: dict(GOPHER_DUP_NGRAM)
    )
    """Gopher: characters in word n-grams that occur more than once, per n"""
    blocklist: tuple[str, ...] = ()
    """words or phrases, matched case-insensitively as whole words"""
    pii: tuple[PiiKind, ...] = tuple(PII_PATTERNS)
    """the PII patterns that reject an item"""
    minhash_threshold: Similarity | None = 0.8
    """estimated Jaccard similarity of word shingles to an earlier item; more is a duplicate"""
    minhash_shingle: PositiveInt = 3
    minhash_num_perm: PositiveInt = 128
    train_ngram: PositiveInt = 13
    """word n-gram length for overlap with the training text"""
    max_train_ngram_fraction: Probability | None = 0.0
    """fraction of the item's n-grams seen in the training text; more rejects it"""

    def __post_init__(self):
        for lo, hi in (
            ("min_words", "max_words"),
            ("min_perplexity", "max_perplexity"),
            ("min_mean_word_length", "max_mean_word_length"),
        ):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is more than {hi} ({b}): nothing could pass")

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("max_top_ngram_fraction", "max_duplicate_ngram_fraction"):
            if d[name] is not None:
                d[name] = {str(k): v for k, v in d[name].items()}
        d["blocklist"], d["pii"] = list(self.blocklist), list(self.pii)
        return d


@dataclass(frozen=True, config=CONFIG)
class AudioPolicy:
    """Audio curation thresholds; null turns a scorer off (`curation.audio` applies them)."""

    max_silence_fraction: Probability | None = 0.5
    """frames (256 samples) below -50 dBFS; a larger share is silent"""
    max_clipping_fraction: Probability | None = 0.001
    """samples at full scale (|x| >= 0.999); a larger share is clipped"""
    max_dc_offset: Probability | None = 0.05
    """|mean sample| in full-scale units; more is dc_offset"""
    min_confidence: Probability | None = 0.9
    """the evaluator's top-class probability; less is low_confidence"""
    max_duplicate_bits: SimHashBits | None = 8
    """Hamming distance of 256-bit mel SimHashes to an earlier clip; within it is a duplicate"""
    max_train_similarity: Cosine | None = 0.998
    """cosine of mel vectors with the nearest training clip; more is memorized"""
    require_requested_class: Bool = True
    """a clip asked to be one class that the evaluator predicts as another is wrong_class"""

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS = {"image": ImagePolicy, "text": TextPolicy, "audio": AudioPolicy}


class PolicyError(ValueError):
    """A policy file cannot be read, names unknown scorers or holds a value out of range."""


@dataclass(frozen=True, config=CONFIG)
class Policy:
    """The curation policy: one threshold per scorer, per content kind."""

    image: ImagePolicy = field(default_factory=ImagePolicy)
    text: TextPolicy = field(default_factory=TextPolicy)
    audio: AudioPolicy = field(default_factory=AudioPolicy)

    def to_dict(self) -> dict:
        return {k: getattr(self, k).to_dict() for k in SECTIONS}

    @classmethod
    def from_dict(cls, data: dict | None, source: str = "policy", prefix: str = "") -> Policy:
        """The policy of a parsed file. Errors name `source` (the file) and the key path, each
        key prefixed by `prefix` (e.g. "curation." for a config file's section)."""
        data = data or {}
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise PolicyError(
                f"{where}expected a mapping with 'image', 'text' and/or 'audio' sections"
            )
        unknown = set(data) - set(SECTIONS)
        if unknown:
            raise PolicyError(
                f"{where}unknown section(s) {sorted(map(str, unknown))} in "
                f"{prefix.rstrip('.') or 'the policy'}; "
                f"use {', '.join(SECTIONS)}"
            )
        parts = {}
        for section, klass in SECTIONS.items():
            values = data.get(section) or {}
            if not isinstance(values, dict):
                raise PolicyError(f"{where}section {prefix}{section} must be a mapping")
            known = set(klass.__pydantic_fields__)
            bad = set(values) - known
            if bad:
                raise PolicyError(
                    f"{where}unknown {section} threshold(s) {sorted(map(str, bad))} in "
                    f"{prefix}{section}; known: {', '.join(sorted(known))}"
                )
            try:
                parts[section] = klass(**values)
            except ValidationError as e:
                raise PolicyError(f"{where}{describe(e, prefix + section)}") from None
        return cls(**parts)

    @classmethod
    def json_schema(cls) -> dict:
        """The JSON Schema of a policy file (and of a config file's `curation` section)."""
        return TypeAdapter(cls).json_schema()


# YAML 1.2 numbers: PyYAML implements YAML 1.1, where a float needs a dot ("2e-4" is a string)
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


@functools.cache
def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # after SafeLoader's int resolver, which still claims "100"
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


def load_yaml(text: str) -> Any:
    """Parse YAML safely, reading numbers as YAML 1.2 does ("2e-4" is 0.0002). Raises
    yaml.YAMLError."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: plain data only


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
        data = json.loads(raw) if suffix == ".json" else load_yaml(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise PolicyError(f"policy file {p} is not valid {suffix[1:]}: {e}") from None
    return Policy.from_dict(data, source=str(p))
