"""What inference gives back: word times from the blank-aware alignment (a synthetic posterior with
1 s of leading blanks), snapped to the pauses of the audio, confidences by their formula, NeMo-style
rows (manifest in, manifest out, ``pred_text`` beside the reference ``text``) from the Python API,
speechkit-eval and a folder run of speechkit-transcribe holding an .m4a."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch

from speechkit import build
from speechkit.checkpoint import load_checkpoint
from speechkit.decoders import confidence
from speechkit.decoders.timing import WordTiming, align_tokens, word_spans
from speechkit.eval import evaluate
from tests.conftest import run_cli, sample_rows
from tests.test_inference_inputs import encode_audio

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipe(tiny_run):
    return load_checkpoint(tiny_run / "run/checkpoints/best.pt")


def posterior(T: int, V: int, spikes: dict[int, tuple[int, float]], blank: float = 0.98) -> torch.Tensor:
    """Log-probs ``(T, V)``: every frame blank with probability ``blank`` (the rest spread evenly), except
    ``spikes``: frame → (token, its probability)."""
    p = torch.full((T, V), (1 - blank) / (V - 1))
    p[:, 0] = blank
    for t, (tok, prob) in spikes.items():
        p[t] = (1 - prob) / (V - 1)
        p[t, tok] = prob
    return p.log()


# ----------------------------------------------------------------------------- word times


def test_words_span_their_tokens_frames_not_the_silence_before_or_after(pipe):
    """1 s of blanks, then "ab" (a on frames 50-51, b on 60), a space, "c" on 80, and blanks to the end:
    the words are read off [50, 52) (b a stray spike) and [80, 81) frames, whatever came before or after."""
    shift = pipe.model.frame_shift_s
    lead = round(1.0 / shift)  # frames in 1 s
    ids = {s: i for i, s in enumerate(pipe.tokenizer.tokens)}
    a, b, c, space = ids["a"], ids["b"], ids["c"], ids[" "]
    T = lead + 60
    spikes = {
        lead: (a, 0.9),
        lead + 1: (a, 0.7),
        lead + 10: (b, 0.6),
        lead + 20: (space, 0.9),
        lead + 30: (c, 0.95),
    }
    lp = posterior(T, len(ids), spikes)
    # WordTiming's rule: b, 8 blank frames after a (more than max_gap_s), is a stray spike left out of
    # "ab"; starts move by start_offset_s, ends by end_offset_s; milliseconds
    t = WordTiming()
    assert 8 * shift > t.max_gap_s
    expected = [
        ("ab", round(lead * shift + t.start_offset_s, 3), round((lead + 2) * shift + t.end_offset_s, 3)),
        (
            "c",
            round((lead + 30) * shift + t.start_offset_s, 3),
            round((lead + 31) * shift + t.end_offset_s, 3),
        ),
    ]

    greedy = build("decoder", "greedy", tokens=pipe.tokenizer.tokens, frame_shift_s=shift)
    (h,) = greedy(lp[None], torch.tensor([T]))[0]
    raw = [("ab", lead * shift, (lead + 11) * shift), ("c", (lead + 30) * shift, (lead + 31) * shift)]
    assert h.text == "ab c" and h.words == pytest.approx(raw)  # a decoder's words: its tokens' frames
    starts, ends = align_tokens(lp.numpy(), h.tokens)
    assert (starts, ends) == (
        [lead, lead + 10, lead + 20, lead + 30],
        [lead + 1, lead + 10, lead + 20, lead + 30],
    )
    spans = word_spans(h.tokens, starts, pipe.tokenizer.tokens, shift, ends, timing=t)
    assert spans == pytest.approx(expected)

    beam = build(
        "decoder", "beam", tokens=pipe.tokenizer.tokens, frame_shift_s=shift, engine="torch", beam_size=4
    )
    nbests = pipe.annotate(beam(lp[None], torch.tensor([T])), lp[None], torch.tensor([T]), [T * shift])
    assert nbests[0][0].text == "ab c" and nbests[0][0].words == pytest.approx(expected)
    # the input ends inside the last frame: no word ends after it
    end = (lead + 30.5) * shift
    (clamped,) = pipe.annotate([[h]], lp[None], torch.tensor([T]), [end])[0]
    assert clamped.words[-1] == pytest.approx(("c", min(expected[1][1], end), end), abs=5e-4)


def bursts_with_late_posteriors(pipe, monkeypatch) -> tuple[np.ndarray, torch.Tensor]:
    """2 s of audio, noise bursts for "ab" at 1.00–1.35 s and "c" at 1.60–1.90 s over a faint floor, and
    posteriors ``(T, V)`` that put the words' times 55–130 ms off, put in place of the model's."""
    sr, shift = pipe.model.frontend.cfg.sample_rate, pipe.model.frame_shift_s
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e-3, 2 * sr).astype(np.float32)
    for a, b in ((1.0, 1.35), (1.6, 1.9)):
        x[round(a * sr) : round(b * sr)] = rng.normal(0, 0.3, round(b * sr) - round(a * sr))
    ids = {s: i for i, s in enumerate(pipe.tokenizer.tokens)}
    T = int(pipe.model.output_lengths(torch.tensor([len(x)]))[0])
    at = {round(1.04 / shift): ids["a"], round(1.09 / shift): ids["b"], round(1.45 / shift): ids[" "]}
    at[round(1.64 / shift)] = ids["c"]
    lp = posterior(T, len(ids), {t: (tok, 0.9) for t, tok in at.items()})
    monkeypatch.setattr(
        pipe, "log_probs", lambda x_, lengths: (lp[None].expand(len(x_), -1, -1), torch.full((len(x_),), T))
    )
    return x, lp


def test_transcribe_snaps_word_times_to_the_pauses_of_its_audio_unless_turned_off(pipe, monkeypatch):
    """Audio of 2 s, noise bursts for "ab" at 1.00–1.35 s and "c" at 1.60–1.90 s over a faint floor;
    the posteriors (in place of the model's) put the words' times 55–130 ms off. ``transcribe`` reads
    the word times off the frames, then moves them to the bursts' edges; with ``snap_s=None`` they stay
    where the frames put them, and so does ``annotate`` without the audio."""
    sr, shift = pipe.model.frontend.cfg.sample_rate, pipe.model.frame_shift_s
    x, lp = bursts_with_late_posteriors(pipe, monkeypatch)
    T = lp.shape[0]

    snapped = [(w.word, w.start, w.end) for w in pipe.transcribe(x, sample_rate=sr).words]
    assert [w for w, _, _ in snapped] == ["ab", "c"]
    truth = [1.0, 1.35, 1.6, 1.9]
    assert [v for _, s, e in snapped for v in (s, e)] == pytest.approx(truth, abs=0.01)

    greedy = build("decoder", "greedy", tokens=pipe.tokenizer.tokens, frame_shift_s=shift)
    (h,) = greedy(lp[None], torch.tensor([T]))[0]
    starts, ends = align_tokens(lp.numpy(), h.tokens)
    frames_only = word_spans(
        h.tokens, starts, pipe.tokenizer.tokens, shift, ends, " ", len(x) / sr, WordTiming()
    )
    off = np.abs(np.array([v for _, s, e in frames_only for v in (s, e)]) - truth)
    assert off.min() > 0.05, frames_only  # the frames alone: every time off by more than 50 ms
    (unsnapped,) = pipe.annotate([[h]], lp[None], torch.tensor([T]), [len(x) / sr])[0]  # no audio given
    assert unsnapped.words == frames_only
    monkeypatch.setattr(pipe, "word_timing", WordTiming(snap_s=None))
    assert [(w.word, w.start, w.end) for w in pipe.transcribe(x, sample_rate=sr).words] == frames_only


def test_eval_snaps_word_times_as_transcribe_does_also_from_the_log_prob_cache(pipe, monkeypatch, tmp_path):
    """The audio and posteriors of the test above, through ``speechkit.eval.evaluate``: its predictions hold
    the words ``transcribe`` gives (snapped), whether the log-probs come from the model or from the cache
    (which keeps each utterance's energy levels beside them)."""
    import soundfile as sf

    from speechkit.eval import evaluate

    sr = pipe.model.frontend.cfg.sample_rate
    x, _ = bursts_with_late_posteriors(pipe, monkeypatch)
    sf.write(tmp_path / "u.wav", x, sr, subtype="FLOAT")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"audio_filepath": "u.wav", "text": "ab c", "duration": 2.0}) + "\n"
    )
    want = [w.to_dict() for w in pipe.transcribe(x, sample_rate=sr).words]
    assert [v for w in want for v in (w["start"], w["end"])] == pytest.approx([1.0, 1.35, 1.6, 1.9], abs=0.01)
    kwargs = dict(progress=False, cache_dir=tmp_path / "cache", checkpoint=tmp_path / "u.wav")  # any file
    for expected_cache in ("miss", "hit"):
        metrics, (row,) = evaluate(pipe, tmp_path / "m.jsonl", **kwargs)
        assert metrics["logprob_cache"] == expected_cache
        assert row["words"] == want


def test_the_alignment_is_the_best_path_spelling_the_tokens_by_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(60):
        T, V = int(rng.integers(1, 7)), 3
        lp = np.log(rng.dirichlet(np.ones(V), size=T)).astype(np.float32)
        tokens = [int(t) for t in rng.integers(1, V, size=int(rng.integers(0, 4)))]
        best, best_score = None, -math.inf
        for path in itertools.product(range(V), repeat=T):  # every alignment, collapsed
            labels = [t for i, t in enumerate(path) if t and (i == 0 or path[i - 1] != t)]
            score = float(sum(lp[i, t] for i, t in enumerate(path)))
            if labels == tokens and score > best_score:
                best, best_score = path, score
        got = align_tokens(lp, tokens)
        if best is None:
            assert got is None, trial
            continue
        runs = [i for i, t in enumerate(best) if t and (i == 0 or best[i - 1] != t)]
        ends = [i for i, t in enumerate(best) if t and (i == T - 1 or best[i + 1] != t)]
        assert got == (runs, ends), (trial, best, tokens)


# ----------------------------------------------------------------------------- confidence


def test_confidence_is_the_mean_token_posterior_the_mean_token_of_a_word_the_mean_word(pipe):
    """Tokens of "ab c" with posteriors a: 0.9, 0.7 (two frames), b: 0.6, c: 0.95 → a 0.8, b 0.6;
    words ab = (0.8 + 0.6) / 2 = 0.7, c = 0.95; the utterance (0.7 + 0.95) / 2."""
    ids = {s: i for i, s in enumerate(pipe.tokenizer.tokens)}
    spikes = {
        5: (ids["a"], 0.9),
        6: (ids["a"], 0.7),
        10: (ids["b"], 0.6),
        15: (ids[" "], 0.9),
        20: (ids["c"], 0.95),
    }
    lp = posterior(30, len(ids), spikes)
    greedy = build("decoder", "greedy", tokens=pipe.tokenizer.tokens, frame_shift_s=0.02)
    (h,) = pipe.annotate(greedy(lp[None], torch.tensor([30])), lp[None], torch.tensor([30]))[0]
    assert h.word_confidences == pytest.approx([0.7, 0.95], abs=1e-6)
    assert h.confidence == pytest.approx((0.7 + 0.95) / 2, abs=1e-6)
    tokens = confidence.token_confidences(lp.numpy(), h.tokens, [5, 10, 15, 20], [6, 10, 15, 20])
    assert tokens == pytest.approx([0.8, 0.6, 0.9, 0.95], abs=1e-6)
    silent = posterior(10, len(ids), {}, blank=0.75)  # nothing said: how sure it is of the blanks
    (e,) = pipe.annotate(greedy(silent[None], torch.tensor([10])), silent[None], torch.tensor([10]))[0]
    assert e.text == "" and e.words == [] and e.confidence == pytest.approx(0.75, abs=1e-6)


# ----------------------------------------------------------------------------- rows


def test_a_manifest_in_gives_its_rows_out_with_pred_text_words_and_confidence(pipe, tiny_run):
    manifest = tiny_run / "test.jsonl"
    rows_in = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = [t.to_dict() for t in pipe.transcribe(manifest)]
    for r_in, r in zip(rows_in, rows, strict=True):
        assert {k: r[k] for k in r_in} == r_in  # every field kept: text is still the reference
        assert list(r)[len(r_in) :] == ["pred_text", "confidence", "score", "words"]
        assert 0 <= r["confidence"] <= 1 and r["pred_text"] == " ".join(w["word"] for w in r["words"])
        for w in r["words"]:
            assert list(w) == ["word", "start", "end", "confidence"] and 0 <= w["confidence"] <= 1
            assert w["start"] == round(w["start"], 3) and 0 <= w["start"] <= w["end"] <= r["duration"] + 1e-9


def test_eval_rows_keep_the_reference_as_text_beside_pred_text_and_the_error_rates(pipe, tiny_run):
    metrics, preds = evaluate(pipe, tiny_run / "test.jsonl", progress=False)
    refs = [r["text"] for r in sample_rows("test", 4)]
    assert [p["text"] for p in preds] == refs and all(p["hyp"] == p["pred_text"] for p in preds)
    assert {"ref", "wer", "cer", "words", "confidence", "path", "audio_filepath", "duration"} <= set(preds[0])
    words = sum(len(p["ref"].split()) for p in preds)
    assert sum(p["wer"] * len(p["ref"].split()) for p in preds) / words == pytest.approx(metrics["wer"])


def test_a_folder_run_reads_m4a_reports_what_it_leaves_out_and_the_real_time_factor(tiny_run, tmp_path):
    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    flac = sample_rows("test", 2)
    shutil.copy(flac[0]["audio_filepath"], folder / "a.flac")
    import soundfile as sf

    x, rate = sf.read(flac[1]["audio_filepath"], dtype="float32")
    encode_audio(folder / "sub" / "b.m4a", x, rate)
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "preds.jsonl"
    p = run_cli("speechkit-transcribe", f"checkpoint={tiny_run / 'run/checkpoints/best.pt'}", f"input={folder}",
                f"output={out}", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["audio_filepath"] for r in rows] == [str(folder / "a.flac"), str(folder / "sub" / "b.m4a")]
    assert all(r["duration"] > 1 and "pred_text" in r and "text" not in r and r["words"] for r in rows)
    assert f"left out 1 file(s) of {folder}" in p.stderr and "notes.txt" in p.stderr
    assert "file/s" in p.stderr and "real-time factor" in p.stderr  # the bar, then the speed
    assert f"transcribed 2 file(s): {out}" in p.stdout
