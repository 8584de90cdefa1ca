"""The compiled beam search's disk cache (speechkit/decoders/__init__.py): where it lives, what is said
before a compile, and that compile time stays out of speechkit-eval's decode_seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from speechkit import eval as speechkit_eval
from speechkit import load_checkpoint
from speechkit.checkpoint import model_payload, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.decoders import beam, beam_compiled, ctc_score, numba_cache_dir
from speechkit.decoders.beam import BeamConfig, BeamDecoder
from speechkit.pipeline import CTCModel
from tests.conftest import REPO, sample_rows, write_manifest

TOKENS = ["<blank>", " ", *"abcdefghijklmnopqrstuvwxyz"]  # spells the grid sentences
BEAM = {"name": "beam", "engine": "native", "beam_size": 4, "nbest": 2}


@pytest.fixture(scope="module")
def model_and_manifest(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained tiny model's checkpoint, and a two-utterance manifest of the grid samples."""
    tmp = tmp_path_factory.mktemp("compile_cache")
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1"])
    torch.manual_seed(0)
    save_checkpoint(tmp / "model.pt", model_payload(cfg, TOKENS, CTCModel.from_config(cfg, len(TOKENS))))
    return tmp / "model.pt", write_manifest(tmp / "test.jsonl", sample_rows("test", 2))


def fixed_log_probs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return (3 * torch.randn(2, 30, len(TOKENS), generator=g)).log_softmax(-1), torch.tensor([30, 22])


def hypotheses(decoder) -> list[list[list]]:
    """What a decoder makes of :func:`fixed_log_probs`, as JSON would carry it."""
    nbests = decoder(*fixed_log_probs())
    return [[[h.text, h.score, h.tokens, h.token_frames] for h in nbest] for nbest in nbests]


def test_cache_dir_is_under_xdg_cache_home_unless_numba_cache_dir_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert numba_cache_dir() == tmp_path / "speechkit" / "numba"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: ignored
    assert numba_cache_dir() == Path.home() / ".cache" / "speechkit" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert numba_cache_dir() == Path.home() / ".cache" / "speechkit" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert numba_cache_dir() == tmp_path / "mine"


def test_compiled_functions_cache_outside_the_package():
    compiled = (beam_compiled._search_batch, ctc_score._rescore_batch)
    cache_dirs = {Path(f._cache.cache_path).parent for f in compiled}
    assert cache_dirs == {numba_cache_dir()}  # decorated on import, in this process' environment
    package = REPO / "speechkit" / "decoders"
    before = set(package.rglob("*.nb[ic]"))  # stale ones of an older speechkit are never read
    hypotheses(BeamDecoder(BeamConfig(engine="native"), TOKENS))
    assert set(package.rglob("*.nb[ic]")) == before


@pytest.mark.parametrize(
    ("state", "said"),
    [("cold", "compiling the beam search (once per machine, ~"), ("cached", "loading the compiled beam")],
)
def test_the_compile_is_announced_before_it_starts_once_per_process(monkeypatch, state, said):
    monkeypatch.setattr(beam, "_announced", False)
    monkeypatch.setattr(BeamDecoder, "compile_state", lambda self, device: state)
    events = []
    real_search = BeamDecoder.search
    monkeypatch.setattr(BeamDecoder, "search", lambda s, *a: events.append("search") or real_search(s, *a))
    decoder = BeamDecoder(BeamConfig(engine="native"), TOKENS)
    decoder.warm_up("cpu", announce=events.append)
    hypotheses(decoder)
    assert events[0].startswith(said) and events[1:] == ["search", "search"]  # warm-up's, then the decode's
    if state == "cold":
        assert f"~{beam_compiled.COMPILE_SECONDS} s" in events[0] and str(numba_cache_dir()) in events[0]


def test_a_first_decode_without_warm_up_logs_the_compile_before_it(monkeypatch, caplog):
    monkeypatch.setattr(beam, "_announced", False)
    monkeypatch.setattr(BeamDecoder, "compile_state", lambda self, device: "cold")
    logged_before_search = []
    real_search = BeamDecoder.search

    def search(self, *args):
        logged_before_search.append([r.getMessage() for r in caplog.records])
        return real_search(self, *args)

    monkeypatch.setattr(BeamDecoder, "search", search)
    decoder = BeamDecoder(BeamConfig(engine="native"), TOKENS)
    with caplog.at_level("INFO", logger="speechkit.decoders.beam"):
        hypotheses(decoder)
        hypotheses(decoder)
    (first, *_), second = logged_before_search
    assert first.startswith("compiling the beam search") and second == [first]  # one message per process


def test_eval_decode_seconds_leave_the_warm_up_out(monkeypatch, model_and_manifest):
    """A warm-up that takes 100 s on eval's clock (as a cold compile would) is not in decode_seconds."""
    clock = SimpleNamespace(offset=0.0)
    fake_time = SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock.offset)
    monkeypatch.setattr(speechkit_eval, "time", fake_time)
    real_warm_up = BeamDecoder.warm_up

    def slow_warm_up(self, *args, **kwargs):
        real_warm_up(self, *args, **kwargs)
        clock.offset += 100.0

    monkeypatch.setattr(BeamDecoder, "warm_up", slow_warm_up)
    checkpoint, manifest = model_and_manifest
    pipe = load_checkpoint(checkpoint, decoder=BEAM)
    metrics, preds = speechkit_eval.evaluate(pipe, manifest, progress=False)
    assert clock.offset == 100.0 and len(preds) == 2
    assert 0 < metrics["decode_seconds"] < 50


@pytest.mark.slow
def test_a_read_only_package_decodes_with_an_empty_cache_and_writes_nothing_in_it(
    tmp_path, model_and_manifest
):
    """A copy of the package, read-only, run with an empty cache: it compiles into the user's cache,
    decodes as this process does, writes nothing inside the package, and eval's decode_seconds is
    a small part of the run (the compile is not in it). One cold compile (COMPILE_SECONDS)."""
    checkpoint, manifest = model_and_manifest
    copy = tmp_path / "site-packages"
    shutil.copytree(REPO / "speechkit", copy / "speechkit", ignore=shutil.ignore_patterns("__pycache__"))

    def listing() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(copy)): (p.stat().st_size, p.stat().st_mtime_ns) for p in copy.rglob("*")}

    torch.save(fixed_log_probs(), tmp_path / "log_probs.pt")
    script = f"""
import json, sys, time
import torch
torch.set_num_threads(1)
import speechkit
from speechkit import load_checkpoint
from speechkit.eval import evaluate
said = []
pipe = load_checkpoint({str(checkpoint)!r}, decoder={BEAM!r})
t0 = time.perf_counter()
metrics, _ = evaluate(pipe, {str(manifest)!r}, progress=False, announce=said.append)
eval_seconds = time.perf_counter() - t0
nbests = pipe.decoder(*torch.load({str(tmp_path / "log_probs.pt")!r}))
json.dump({{"package": speechkit.__file__, "said": said, "decode_seconds": metrics["decode_seconds"],
           "eval_seconds": eval_seconds,
           "hypotheses": [[[h.text, h.score, h.tokens, h.token_frames] for h in nbest] for nbest in nbests]}},
          sys.stdout)
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=f"{copy}{os.pathsep}{REPO}", XDG_CACHE_HOME=str(tmp_path / "cache"),
               PYTHONDONTWRITEBYTECODE="1")
    before = listing()
    subprocess.run(["chmod", "-R", "a-w", str(copy)], check=True)
    try:  # as root the permission bits stop nothing: the listing is the check
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(copy)], check=True)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert Path(out["package"]).is_relative_to(copy)
    assert listing() == before
    cache = tmp_path / "cache" / "speechkit" / "numba"
    assert list(cache.glob("decoders_*/beam_compiled._search_batch-*.nbi"))
    assert len(out["said"]) == 1 and out["said"][0].startswith("compiling the beam search")
    assert out["decode_seconds"] < 0.5 * (out["eval_seconds"] - out["decode_seconds"])
    assert out["hypotheses"] == hypotheses(load_checkpoint(checkpoint, decoder=BEAM).decoder)
