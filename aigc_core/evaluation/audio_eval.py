"""The audio evaluator and the audio generator's scores: what the evaluate stage logs for audio.

The evaluator is a small CNN on log-mel spectrograms, trained once per snapshot on its training
split and scored on its validation split, stored like the image evaluator under
`<evaluators>/<snapshot_id>/` (weights.safetensors + config.json of family "audio_classifier",
beside metrics.json). It plays the role VGGish plays in the usual Fréchet Audio Distance
(Kilgour et al., "Fréchet Audio Distance", 2019): its penultimate activations are the feature
space, and its softmax gives the confidence that curation thresholds.

Input normalisation: log-mel power in dB relative to each clip's own maximum, floored 80 dB
below it (`aigc_core.audio.log_mel`), so a clip's level does not change its class or features;
training shifts clips in time by up to an eighth of their length (zero-filled).

"None of these": a classifier trained on K classes alone gave white noise one class with 98%
confidence (measured on `notes`), which would make "recognized" mean nothing for an untrained
generator. So the network has a (K+1)-th output trained on junk made on the fly (`_junk`: white
and brown noise, clicks, and mixtures of two real clips of different classes), and `embed`
returns the K real classes' probabilities out of the K+1: junk gets a low top-class confidence.
Real clips are trained with added white noise too (`_with_noise`: half of them, at 6 to 40 dB
SNR), keeping their class: a note whose pitch is plain to hear under a noise floor is that
note. Without it the "none" output learned "any noise at all": real `notes` clips at 20 dB SNR
were recognized 1.5% of the time (all still argmax-correct), and a GAN's clips, which always
carry some noise, never.

Scores of a generator (`audio_metrics`):
- `fad`: Fréchet distance between Gaussians fitted to the evaluator features of generated clips
  and of held-out clips (`fid.fid`), beside `fad_floor`, held-out against training clips (real
  vs real: the best a model can hope for at these sample sizes), and `fad_inf_estimate`
  (2 FAD(N) - FAD(N/2), the small-sample bias removed; Chong & Forsyth 2020);
- `class_diversity` (exp E KL(p(y|x) || p(y)), in [1, K]) and `classes_covered` (distinct
  predicted classes);
- `recognized_fraction`: generated clips the evaluator gives one class at least
  `RECOGNIZED_CONFIDENCE`; `mean_confidence`;
- memorization, in the evaluator's feature space: `memorization_rate`, the share of generated
  clips nearer to a training clip than the 1st percentile of held-out clips' nearest-training
  distances (`samples.memorization_rate`), and `nn_distance_ratio`, the median generated clip's
  nearest-training distance over the median held-out clip's (well below 1: copies);
- precision and recall (k-NN balls, k=3) in the same space;
- a conditional generator's clips are asked for its classes in turn, and `label_accuracy` is
  the share the evaluator assigns to the class asked.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from aigc_core import progress
from aigc_core.audio import N_MELS, TOP_DB, as_float, log_mel, spectrogram_image
from aigc_core.evaluation.classifier import embed_in_batches, fit_classifier
from aigc_core.evaluation.evaluator import stored_evaluator
from aigc_core.evaluation.fid import fid
from aigc_core.evaluation.samples import (
    class_diversity,
    memorization_rate,
    nearest_distances,
    precision_recall,
)
from aigc_core.families.base import EvalInputs, Evaluation
from aigc_core.generation.labels import balanced
from aigc_core.models.io import CONFIG, WEIGHTS, config_fields, load_weights, read_config

log = logging.getLogger(__name__)

FAD_SEED = 2024  # fixed latents: every candidate is scored on the same noise
FAD_GENERATED = 2000  # generated clips per FAD
RECOGNIZED_CONFIDENCE = 0.9
PR_K = 3
SAMPLES_SHOWN = 16  # spectrograms in spectrograms.png
MIN_STEPS = 200  # evaluator training steps, at least
NOISE_SNR_DB = (6.0, 40.0)  # real clips are also trained with white noise at these SNRs


@dataclass(frozen=True)
class AudioClassifierConfig:
    num_classes: int
    sample_rate: int
    length: int
    n_mels: int = N_MELS
    width: int = 8
    feature_dim: int = 64

    def to_dict(self) -> dict:
        return {"family": "audio_classifier", **asdict(self)}


class AudioClassifier(nn.Module):
    """Clips (B, L) or (B, 1, L) in [-1, 1] -> class logits (B, K), through log-mel features."""

    def __init__(self, cfg: AudioClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, W, M/2, T/2)
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2W, M/4, T/4)
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            # pooled over time only: pitch is where in frequency the energy is
            nn.AdaptiveMaxPool2d((cfg.n_mels // 8, 1)),  # (B, 4W, M/8, 1)
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(4 * w * (cfg.n_mels // 8), cfg.feature_dim),
            nn.ReLU(),  # (B, F)
        )
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes + 1)  # the last: none of these

    def mel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 1, M, T) log-mel in [0, 1]: 0 is 80 dB below the clip's maximum."""
        db = log_mel(x, self.cfg.sample_rate, self.cfg.n_mels)
        return ((db - db.amax(dim=(1, 2), keepdim=True)) / TOP_DB + 1)[:, None]

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.mel(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K+1) logits, the last one "none of these classes"."""
        return self.head(self.embedding(x))

    @torch.no_grad()
    def embed(self, x, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, F), probabilities (N, K)) of clips (N, L) (int16 PCM or floats), in
        eval mode. The probabilities are the K classes' share of the softmax over K+1 outputs:
        a row sums to 1 minus the probability of "none of these"."""
        self.eval()
        clips = torch.from_numpy(as_float(np.asarray(x)))
        return embed_in_batches(
            clips, batch_size, self.embedding, lambda f: torch.softmax(self.head(f), dim=1)[:, :-1]
        )


def _junk(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n clips that are no class, (n, L): white noise, brown noise, clicks, and sums of two
    clips of the batch `x` (B, L) with different labels `y` (a chord is not one note)."""
    length = x.shape[1]
    kind = torch.randint(4, (n,), generator=gen)
    level = 10 ** (-torch.rand(n, 1, generator=gen) * 2)  # peak 0.01 .. 1
    white = torch.randn(n, length, generator=gen)
    brown = white.cumsum(1)
    brown = brown - brown.mean(1, keepdim=True)
    clicks = (torch.rand(n, length, generator=gen) < 0.002).float() * white.sign()
    a = torch.randint(len(x), (n,), generator=gen)
    b = torch.randint(len(x), (n,), generator=gen)
    mix = x[a] + x[b]
    mix = torch.where((y[a] != y[b])[:, None], mix, white)
    out = torch.stack([white, brown, clicks, mix])[kind, torch.arange(n)]  # (n, L)
    return out / out.abs().amax(1, keepdim=True).clamp_min(1e-6) * level


def _with_noise(x: torch.Tensor, gen: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """`share` of the clips (B, L) with white noise added at a random SNR in
    [NOISE_SNR_DB[0], NOISE_SNR_DB[1]] dB of each clip's own power; the rest unchanged."""
    b = x.shape[0]
    lo, hi = NOISE_SNR_DB
    snr = lo + (hi - lo) * torch.rand(b, 1, generator=gen)
    power = x.pow(2).mean(1, keepdim=True)
    noise = torch.randn(x.shape, generator=gen) * (power / 10 ** (snr / 10)).sqrt()
    chosen = torch.rand(b, 1, generator=gen) < share
    return torch.where(chosen, x + noise, x)


def _random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each clip (B, L) delayed or advanced by up to max_shift samples, zero-filled."""
    b, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=gen)
    idx = torch.arange(length)[None] - shift  # (B, L)
    valid = (idx >= 0) & (idx < length)
    return torch.where(valid, x.gather(1, idx.clamp(0, length - 1)), 0.0)


def train_audio_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: AudioClassifierConfig,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[AudioClassifier, float]:
    """Train on clips (N, L) (int16 PCM or floats) with random time shifts; returns the model
    (eval mode) and its accuracy on the validation clips."""
    y_tr = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
    if len(y_tr) == 0 or int(y_tr.max()) >= cfg.num_classes or int(y_tr.min()) < 0:
        raise ValueError(
            f"labels must lie in [0, {cfg.num_classes}) and there must be some, got "
            f"{len(y_tr)} in [{int(y_tr.min()) if len(y_tr) else '-'}, "
            f"{int(y_tr.max()) if len(y_tr) else '-'}]"
        )
    x_tr = torch.from_numpy(as_float(np.asarray(x_train)))
    if x_tr.shape[1] != cfg.length:
        raise ValueError(f"clips have {x_tr.shape[1]} samples, the evaluator {cfg.length}")

    def batch(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = x_tr[idx], y_tr[idx]
        junk = _junk(xb, yb, batch_size // 4, gen)
        xb = _random_shift(torch.cat([_with_noise(xb, gen), junk]), gen, cfg.length // 8)
        return xb, torch.cat([yb, torch.full((len(junk),), cfg.num_classes)])  # K: none of these

    model = fit_classifier(
        lambda: AudioClassifier(cfg),
        len(x_tr),
        batch,
        # at least MIN_STEPS: a small snapshot's few epochs would leave the classifier untrained
        steps=max(epochs * (len(x_tr) // batch_size), MIN_STEPS),
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    _, probs = model.embed(x_val)
    acc = float((probs.argmax(1) == np.asarray(y_val)).mean())
    log.info("audio evaluator: held-out accuracy %.4f on %d clips", acc, len(probs))
    return model, acc


class AudioSplits(NamedTuple):
    """A snapshot's clips as the evaluator needs them: (N, L) int16 PCM (or floats)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    label_names: list[str]
    sample_rate: int


def splits_of(table, manifest) -> AudioSplits:
    """The train and validation splits of a snapshot's audio table (`data.audio.audio_data`)."""
    from aigc_core.data.audio import audio_data

    tr = audio_data(table, "train", dict(manifest))
    va = audio_data(table, "validation", dict(manifest))
    return AudioSplits(tr.pcm, tr.labels, va.pcm, va.labels, tr.label_names, tr.sample_rate)


def audio_evaluator_in(
    folder: Path, splits: Callable[[], AudioSplits]
) -> tuple[AudioClassifier, dict]:
    """The audio evaluator stored in `folder` (`<evaluators>/<snapshot_id>`), trained there
    first when it is not, on `splits()` (called only then). Runs training at once are safe:
    the first to finish stores it, the others use theirs."""

    def train() -> tuple[AudioClassifier, dict, dict]:
        s = splits()
        cfg = AudioClassifierConfig(
            num_classes=len(s.label_names),
            sample_rate=int(s.sample_rate),
            length=s.x_train.shape[1],
        )
        model, acc = train_audio_classifier(s.x_train, s.y_train, s.x_val, s.y_val, cfg)
        metrics = {"accuracy": acc, "validation_clips": len(s.x_val), "train_clips": len(s.x_train)}
        return model, cfg.to_dict(), metrics

    return stored_evaluator(folder, train, load_audio_classifier)


def load_audio_classifier(folder: Path, device: str | torch.device = "cpu") -> AudioClassifier:
    cfg = read_config(Path(folder) / CONFIG)
    if cfg.get("family") != "audio_classifier":
        raise ValueError(
            f"{folder} holds a {cfg.get('family')!r} evaluator, not an audio one: is the "
            "snapshot an audio snapshot?"
        )
    model = AudioClassifier(AudioClassifierConfig(**config_fields(cfg)))
    return load_weights(model, Path(folder) / WEIGHTS, device)


def audio_metrics(
    evaluator: AudioClassifier,
    fake: np.ndarray,
    x_train: np.ndarray,
    x_val: np.ndarray,
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Every audio-generator score of generated clips `fake` (N, L) against the snapshot's real
    training and validation clips (see the module's docstring); with `labels` (N,), the class
    each clip was asked for (a conditional generator), also `label_accuracy`: the share the
    evaluator assigns to that class."""
    f_fake, p_fake = evaluator.embed(fake)
    extra = {}
    if labels is not None:
        extra["label_accuracy"] = float((p_fake.argmax(1) == np.asarray(labels)).mean())
    f_tr, _ = evaluator.embed(x_train)
    f_va, _ = evaluator.embed(x_val)
    half = len(f_fake) // 2
    fad = fid(f_va, f_fake)
    d_fake = nearest_distances(torch.from_numpy(f_fake).float(), torch.from_numpy(f_tr).float())
    d_val = nearest_distances(torch.from_numpy(f_va).float(), torch.from_numpy(f_tr).float())
    m = min(len(f_va), len(f_fake))  # equal set sizes: k-NN radii depend on density
    precision, recall = precision_recall(f_va[:m], f_fake[:m], k=PR_K)
    return {
        "fad": fad,
        "fad_floor": fid(f_va, f_tr),
        "fad_inf_estimate": 2 * fad - fid(f_va, f_fake[:half]),
        "precision": precision,
        "recall": recall,
        "class_diversity": class_diversity(p_fake / p_fake.sum(1, keepdims=True).clip(1e-12)),
        "classes_covered": float(len(set(p_fake.argmax(1).tolist()))),
        "mean_confidence": float(p_fake.max(1).mean()),
        "recognized_fraction": float((p_fake.max(1) >= RECOGNIZED_CONFIDENCE).mean()),
        "memorization_rate": memorization_rate(f_fake, f_tr, f_va),
        "nn_distance_ratio": float(d_fake.median() / d_val.median().clamp_min(1e-12)),
        "fad_samples_generated": float(len(f_fake)),
        "fad_samples_heldout": float(len(f_va)),
        "fad_samples_train": float(len(f_tr)),
        **extra,
    }


def spectrogram_sheet(clips: np.ndarray, sample_rate: int, n: int = SAMPLES_SHOWN, cols: int = 4):
    """The spectrograms of the first n clips in a grid (a PIL image, like samples.png)."""
    from PIL import Image

    pics = [spectrogram_image(c, sample_rate) for c in clips[:n]]
    w, h, pad = pics[0].width, pics[0].height, 4
    rows = -(-len(pics) // cols)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, pic in enumerate(pics):
        sheet.paste(pic, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return sheet


def evaluate_audio(
    inputs: EvalInputs, generator, splits: Callable[[], AudioSplits] | None = None
) -> Evaluation:
    """The audio scores of `generator` (`generation.audio.AudioGenerator`) on the snapshot of
    `inputs`: `audio_metrics` of `FAD_GENERATED` clips from fixed latents (a conditional
    generator: its classes in turn), `evaluator_accuracy` (the evaluator's held-out accuracy,
    trained once per snapshot) and spectrograms.png (the first clips). `splits()` gives the
    snapshot's clips (default: read from `inputs.table`). Reports progress as stage
    "evaluate"."""
    progress.report("evaluate", 0, 100)
    if splits is None:
        splits = functools.partial(splits_of, inputs.table, inputs.manifest)
    splits = functools.cache(splits)  # read once, whether or not the evaluator is trained
    evaluator, ev = audio_evaluator_in(inputs.evaluators_dir / inputs.snapshot_id, splits)
    cfg = evaluator.cfg
    if generator.sample_rate != cfg.sample_rate or generator.length != cfg.length:
        raise ValueError(
            f"the generator makes {generator.length} samples at {generator.sample_rate} Hz but "
            f"snapshot {inputs.snapshot_id} holds {cfg.length} at {cfg.sample_rate} Hz: "
            "evaluate it on the snapshot it was trained on"
        )
    progress.report("evaluate", 10, 100)

    def on_batch(done: int, n: int) -> None:
        progress.report("evaluate", 10 + 70 * done // n, 100)

    labels = balanced(FAD_GENERATED, generator.num_classes) if generator.num_classes else None
    fake = generator.generate(FAD_GENERATED, seed=FAD_SEED, on_batch=on_batch, labels=labels)
    s = splits()
    metrics = {
        **audio_metrics(evaluator, fake, s.x_train, s.x_val, labels),
        "evaluator_accuracy": float(ev["accuracy"]),
    }
    sheet = spectrogram_sheet(fake, cfg.sample_rate)
    progress.report("evaluate", 100, 100)
    summary = (
        f"FAD {metrics['fad']:.3f} (floor {metrics['fad_floor']:.3f}, {len(fake)} generated vs "
        f"{len(s.x_val)} held-out), recognized {metrics['recognized_fraction']:.3f}, classes "
        f"{metrics['classes_covered']:.0f}, memorization {metrics['memorization_rate']:.4f}, "
        f"evaluator accuracy {metrics['evaluator_accuracy']:.4f}"
    )
    return Evaluation(metrics=metrics, images={"spectrograms.png": sheet}, summary=summary)
