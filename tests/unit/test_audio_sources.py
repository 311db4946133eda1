"""Audio sources: WAV/FLAC folders in every common format, the built-in `notes`, the snapshot
table, and one test per bad input (a clear error naming the file, and nothing written)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import soundfile as sf

from aigc_core.data.audio import audio_data, fit_length, load_audio_folder, read_clip
from aigc_core.data.files import DataSourceError
from aigc_core.data.ingest import detect_kind, prepare, publish
from aigc_core.data.notes import load_notes
from aigc_core.data.snapshot import audio_table, read_table, write_snapshot


def tone(freq, rate, seconds, amp=0.5, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write(path, data, rate, subtype=None, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return path


def refused(tmp_path, folder, match):
    """Ingesting `folder` fails with a DataSourceError matching `match` and writes nothing."""
    root = tmp_path / "datasets"
    with pytest.raises(DataSourceError, match=match) as e:
        publish(prepare("rec", path=folder, kind="audio", clip_samples=1024), root)
    assert not root.exists()
    return str(e.value)


# --- reading -------------------------------------------------------------------------------


def test_class_subfolders_and_mixed_formats_rates_and_channels(tmp_path):
    write(tmp_path / "dog" / "a.wav", tone(440, 16000, 0.3), 16000, "PCM_16")
    write(tmp_path / "dog" / "b.wav", tone(440, 44100, 0.1, channels=2), 44100, "PCM_24")
    write(tmp_path / "dog" / "c.flac", tone(440, 22050, 2.0, channels=2), 22050, "PCM_16")
    write(tmp_path / "cat" / "d.wav", tone(660, 48000, 0.5), 48000, "FLOAT")
    write(tmp_path / "cat" / "e.wav", tone(660, 8000, 0.2), 8000, "PCM_32")
    write(tmp_path / "cat" / "f.wav", tone(660, 8000, 0.2), 8000, "PCM_U8")
    write(tmp_path / "cat" / "g.WAV", tone(660, 11025, 0.2), 11025, "ULAW")
    data = load_audio_folder(tmp_path, sample_rate=16000, clip_samples=1024)
    assert data.label_names == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert data.pcm.shape == (7, 1024) and data.pcm.dtype == np.int16
    assert data.files == ["cat/d.wav", "cat/e.wav", "cat/f.wav", "cat/g.WAV"] + [
        "dog/a.wav",
        "dog/b.wav",
        "dog/c.flac",
    ]
    peaks = np.abs(data.pcm.astype(np.int64)).max(axis=1) / 32768
    assert np.allclose(peaks, 0.5, atol=0.03)  # levels kept, whatever the format


def test_int16_at_the_target_rate_round_trips_exactly(tmp_path):
    x = (np.random.default_rng(0).standard_normal(1024) * 3000).astype(np.int16)
    write(tmp_path / "x.wav", x, 8000, "PCM_16")
    clip, fmt = read_clip(tmp_path / "x.wav", 8000, 1024)
    assert fmt == "WAV/PCM_16"
    assert np.array_equal(clip, x)


def test_resampling_keeps_the_pitch(tmp_path):
    write(tmp_path / "a.wav", tone(1000, 44100, 0.5), 44100, "PCM_16")
    clip, _ = read_clip(tmp_path / "a.wav", 16000, 4096)
    spectrum = np.abs(np.fft.rfft(clip.astype(np.float64)))
    assert abs(np.argmax(spectrum) * 16000 / 4096 - 1000) < 8


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(440, 8000, 0.2, 0.6), np.zeros(1600)
    write(tmp_path / "s.wav", np.stack([left, right], axis=1), 8000, "FLOAT")
    clip, _ = read_clip(tmp_path / "s.wav", 8000, 1024)
    assert abs(np.abs(clip.astype(int)).max() / 32768 - 0.3) < 0.01


def test_long_clips_keep_their_loudest_window_and_short_ones_are_padded():
    x = np.zeros(100, dtype=np.float32)
    x[60:70] = 1.0
    assert fit_length(x, 10).tolist() == [1.0] * 10
    assert fit_length(np.ones(100, np.float32), 10).tolist() == [1.0] * 10  # earliest on ties
    short = fit_length(np.ones(5, np.float32), 8)
    assert short.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]


def test_float_beyond_full_scale_is_clipped_not_rescaled(tmp_path):
    write(tmp_path / "hot.wav", np.array([0.0, 2.0, -2.0, 0.25] * 64), 8000, "FLOAT")
    clip, _ = read_clip(tmp_path / "hot.wav", 8000, 256)
    assert clip[:4].tolist() == [0, 32767, -32768, 8192]


def test_detect_kind_finds_audio_folders_and_the_builtin(tmp_path):
    write(tmp_path / "a" / "x.flac", tone(440, 8000, 0.1), 8000)
    (tmp_path / "README.txt").write_text("recordings of a")
    assert detect_kind("mine", tmp_path) == "audio"
    assert detect_kind("notes", None) == "audio"
    assert detect_kind("mine", tmp_path, kind="audio") == "audio"


# --- the built-in set and the snapshot table -----------------------------------------------


def test_notes_is_deterministic_balanced_and_labelled_by_pitch_class():
    a, b = load_notes(), load_notes()
    assert a.pcm.shape == (1920, 4096) and a.sample_rate == 8000
    assert np.array_equal(a.pcm, b.pcm) and np.array_equal(a.labels, b.labels)
    assert np.bincount(a.labels).tolist() == [240] * 8
    assert a.label_names == ["C", "D", "E", "F", "G", "A", "Bb", "B"]
    assert len({row.tobytes() for row in a.pcm}) == 1920  # no two clips alike
    # clips run pitch class x octave (3) x timbre (4) x envelope (4) x detune (5): A4, sine,
    # organ, 0 cents is clip 5 * 240 + 1 * 80 + 0 * 20 + 1 * 5 + 2; its strongest bin is 440 Hz
    i = 5 * 240 + 80 + 5 + 2
    assert a.labels[i] == 5
    spectrum = np.abs(np.fft.rfft(a.pcm[i].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 8000 / 4096 - 440) < 3


def test_prepare_notes_gives_an_audio_table_that_reads_back(tmp_path):
    p = prepare("notes", validation_fraction=0.2)
    assert p.kind == "audio" and p.table.num_rows == 1920
    assert p.extra["sample_rate"] == 8000 and p.extra["clip_samples"] == 4096
    assert prepare("notes").id == p.id  # content-addressed
    assert set(p.table.column("source_file").to_pylist()) == {None}
    snap = publish(p, tmp_path)
    back = audio_data(read_table(snap), manifest=snap.manifest)
    notes = load_notes()
    assert np.array_equal(back.pcm, notes.pcm) and np.array_equal(back.labels, notes.labels)
    assert back.label_names == notes.label_names and back.sample_rate == 8000
    val = audio_data(read_table(snap), split="validation")
    assert 250 < len(val.pcm) < 520 and val.label_names == notes.label_names


def test_folder_table_keeps_files_names_and_ids_by_content(tmp_path):
    write(tmp_path / "in" / "b" / "x.wav", tone(300, 8000, 0.2), 8000, "PCM_16")
    write(tmp_path / "in" / "a" / "y.wav", tone(500, 8000, 0.2), 8000, "PCM_16")
    p = prepare("rec", path=tmp_path / "in", sample_rate=8000, clip_samples=1024)
    assert p.table.column("source_file").to_pylist() == ["a/y.wav", "b/x.wav"]
    assert p.table.column("label_name").to_pylist() == ["a", "b"]
    assert p.table.schema.field("pcm").type.byte_width == 2048
    snap = write_snapshot(tmp_path / "ds", "rec", p.table, kind="audio", source="", params={})
    assert audio_data(read_table(snap)).pcm.tolist() == audio_data(p.table).pcm.tolist()


def test_table_refuses_non_int16_pcm():
    data = load_notes()
    data.pcm = data.pcm.astype(np.float32)
    with pytest.raises(ValueError, match="int16"):
        audio_table(data)


# --- bad input: a clear error naming the file, nothing written ------------------------------


def test_a_truncated_wav_is_refused(tmp_path):
    p = write(tmp_path / "in" / "cut.wav", tone(440, 8000, 1.0), 8000, "PCM_16")
    p.write_bytes(p.read_bytes()[:5000])
    msg = refused(tmp_path, tmp_path / "in", "truncated WAV")
    assert "cut.wav" in msg and "declares 16,000 bytes" in msg


def test_a_truncated_flac_is_refused(tmp_path):
    noise = np.random.default_rng(1).standard_normal((8000, 2)) * 0.1
    p = write(tmp_path / "in" / "cut.flac", noise, 8000, "PCM_16")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert "cut.flac" in refused(tmp_path, tmp_path / "in", "not a readable WAV or FLAC")


def test_a_text_file_named_wav_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fake.wav").write_text("this is not audio\n" * 20)
    assert "fake.wav" in refused(tmp_path, tmp_path / "in", "not a readable WAV or FLAC")


def test_another_container_named_wav_is_refused(tmp_path):
    p = write(tmp_path / "in" / "song.wav", tone(440, 8000, 0.5), 8000, fmt="OGG")
    assert sf.info(p).format == "OGG"
    assert "song.wav" in refused(tmp_path, tmp_path / "in", "a OGG file, not WAV or FLAC")


def test_a_coding_libsndfile_cannot_read_is_refused(tmp_path):
    """A WAV whose format tag is MPEG (0x0050): a sample format soundfile cannot decode."""
    fmt = struct.pack("<HHIIHH", 0x0050, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", 1000) + bytes(1000)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "mpeg.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert "mpeg.wav" in refused(tmp_path, tmp_path / "in", "not a readable WAV or FLAC")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_float_samples_are_refused(tmp_path, bad):
    x = tone(440, 8000, 0.3).astype(np.float32)
    x[100] = bad
    write(tmp_path / "in" / "bad.wav", x, 8000, "FLOAT")
    msg = refused(tmp_path, tmp_path / "in", "1 NaN or infinite sample")
    assert "bad.wav" in msg


def test_a_zero_length_file_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    assert "empty.wav" in refused(tmp_path, tmp_path / "in", r"empty \(0 bytes\)")


def test_a_file_with_no_frames_is_refused(tmp_path):
    write(tmp_path / "in" / "none.wav", np.zeros(0), 8000, "PCM_16")
    assert "none.wav" in refused(tmp_path, tmp_path / "in", "holds no audio frames")


def test_a_24_hour_file_is_refused_from_its_header(tmp_path):
    """A sparse file: a valid 16-bit mono 8 kHz header for 24 hours (1.4 GB of data) that
    takes no disk space; refused before any sample is read."""
    frames = 24 * 3600 * 8000
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    head = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    head += b"data" + struct.pack("<I", 2 * frames)
    (tmp_path / "in").mkdir()
    p = tmp_path / "in" / "day.wav"
    with open(p, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(head) + 2 * frames) + head)
        f.truncate(8 + len(head) + 2 * frames)
    assert sf.info(p).frames == frames
    msg = refused(tmp_path, tmp_path / "in", "1,440.0 minutes long")
    assert "day.wav" in msg and "--max-seconds" in msg


def test_max_seconds_is_an_option(tmp_path):
    write(tmp_path / "in" / "long.wav", tone(440, 8000, 3.0), 8000, "PCM_16")
    with pytest.raises(DataSourceError, match="long.wav.*at most 0.0333333"):
        prepare("rec", path=tmp_path / "in", clip_samples=1024, max_seconds=2.0)
    assert prepare("rec", path=tmp_path / "in", clip_samples=1024).table.num_rows == 1


def test_a_huge_channel_count_is_refused_from_the_header(tmp_path):
    write(tmp_path / "in" / "many.wav", np.zeros((100, 16)), 8000, "PCM_16")
    assert "many.wav" in refused(tmp_path, tmp_path / "in", "16 channels")


def test_a_symlink_escaping_the_folder_is_refused(tmp_path):
    outside = write(tmp_path / "secret.wav", tone(440, 8000, 0.2), 8000, "PCM_16")
    write(tmp_path / "in" / "ok.wav", tone(440, 8000, 0.2), 8000, "PCM_16")
    os.symlink(outside, tmp_path / "in" / "link.wav")
    assert "link.wav" in refused(tmp_path, tmp_path / "in", "outside the input folder")


def test_a_folder_without_recordings_or_with_mixed_layout_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    refused(tmp_path, tmp_path / "in", "no WAV or FLAC files found")
    write(tmp_path / "in2" / "top.wav", tone(440, 8000, 0.2), 8000)
    write(tmp_path / "in2" / "c" / "sub.wav", tone(440, 8000, 0.2), 8000)
    refused(tmp_path, tmp_path / "in2", "mixes recordings at the top level")


def test_rate_and_length_options_are_checked(tmp_path):
    with pytest.raises(DataSourceError, match="sample rate 100 Hz"):
        prepare("notes", sample_rate=100)
    with pytest.raises(DataSourceError, match="clip length 10 samples"):
        prepare("notes", clip_samples=10)
    with pytest.raises(DataSourceError, match="built in and reads no files"):
        prepare("notes", path=tmp_path)
