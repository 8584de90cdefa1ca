"""Hostile cases around training runs and checkpoints (issue 16): two runs on one directory, resume
with another config, damaged weights, checkpoint configs carrying interpolations or unknown
plugins, and the messages around them. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from speechkit import load_checkpoint
from speechkit.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from speechkit.rundir import OWNER_NAME, RunDirError, is_new, lock, undo_new
from tests.conftest import MODULES, REPO, error_line, run_cli, sample_rows, write_manifest

SMALL = ["recipe=demo", "encoder.hidden_size=16", "encoder.num_layers=1", "data.num_workers=0", "data.batch_size=8",
         "trainer.device=cpu", "trainer.threads=1", "trainer.max_minutes=0", "trainer.warmup_steps=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile_runs")
    return (write_manifest(tmp / "train.jsonl", sample_rows("train", 16)),
            write_manifest(tmp / "dev.jsonl", sample_rows("test", 2)))


def _train_args(corpus, run_dir, *extra):
    train, dev = corpus
    return [*SMALL, f"data.train_manifest={train}", f"data.dev_manifest={dev}", f"hydra.run.dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A finished run of two epochs, 2 steps each (16 utterances, batches of 8): last.pt and last.prev.pt."""
    run_dir = tmp_path_factory.mktemp("hostile_trained") / "run"
    run_cli("speechkit-train", *_train_args(corpus, run_dir, "trainer.max_steps=4", "trainer.max_epochs=2"))
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def _snapshot(run_dir):
    return {p: (run_dir / p).read_bytes() for p in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml")}


# ----------------------------------------------------------------------------- 1. one run per directory


def test_a_held_run_directory_refuses_a_second_holder_naming_pid_and_host(tmp_path):
    with lock(tmp_path):
        owner = json.loads((tmp_path / OWNER_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunDirError, match=rf"another training run .*PID {os.getpid()} on host"):
            with lock(tmp_path):
                pass
    with lock(tmp_path):  # released at the end of the block
        pass
    assert not (tmp_path / OWNER_NAME).exists()


@pytest.mark.slow
def test_a_second_training_run_on_a_busy_run_directory_fails_at_once_and_touches_nothing(corpus, tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", MODULES["speechkit-train"],
                              *_train_args(corpus, run_dir, "trainer.max_steps=100000", "trainer.max_epochs=100000")],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # config.yaml is written once the lock is held; Hydra's own files may come a moment apart
        while not all((run_dir / p).exists() for p in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml")):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        before = _snapshot(run_dir)
        log_before = (run_dir / "train.log").read_bytes()
        t0 = time.monotonic()
        second = run_cli("speechkit-train", *_train_args(corpus, run_dir, "trainer.max_steps=1"), check=False)
        assert second.returncode != 0
        assert f"PID {first.pid} on host {socket.gethostname()}" in second.stderr
        assert error_line(second.stderr) and "Traceback" not in second.stderr
        assert time.monotonic() - t0 < 60  # at once: it does not wait for the holder
        assert _snapshot(run_dir) == before
        assert (run_dir / "train.log").read_bytes().startswith(log_before)
        assert first.poll() is None  # the holder runs on
    finally:
        first.kill()
        first.wait()


# ----------------------------------------------------------------------------- 2. resume checks the config


@pytest.mark.slow
def test_resume_with_a_changed_model_is_refused_with_the_differences_and_writes_nothing(corpus, run_copy):
    before = _snapshot(run_copy)
    p = run_cli("speechkit-train", *_train_args(corpus, run_copy, "trainer.max_steps=6", "trainer.resume=true",
                                                 "frontend.hop_length_ms=20", "encoder.hidden_size=24"), check=False)
    assert p.returncode != 0 and error_line(p.stderr) and "Traceback" not in p.stderr
    assert "frontend.hop_length_ms: 10.0 in the checkpoint, 20.0 now" in p.stderr
    assert "encoder.hidden_size: 16 in the checkpoint, 24 now" in p.stderr and "trainer.resume_force=true" in p.stderr
    assert "trainer.max_steps" not in p.stderr.split("safe to change")[0]  # a longer run is a safe change
    assert _snapshot(run_copy) == before


@pytest.mark.slow
def test_forced_resume_over_weights_that_cannot_fit_is_a_one_line_error(corpus, run_copy):
    p = run_cli("speechkit-train", *_train_args(corpus, run_copy, "trainer.max_steps=6", "trainer.resume=true",
                                                 "trainer.resume_force=true", "encoder.hidden_size=24"), check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "error: " in p.stderr and "do not fit" in p.stderr and "last.pt" in p.stderr


@pytest.mark.slow
def test_fine_tuning_from_a_checkpoint_with_other_model_settings_is_a_one_line_error_before_any_write(
    corpus, trained, tmp_path
):
    best = trained / "checkpoints" / "best.pt"
    p = run_cli("speechkit-train", *_train_args(corpus, tmp_path / "tune", "trainer.max_steps=2",
                                                 f"trainer.init_from={best}", "encoder.hidden_size=24"), check=False)
    assert p.returncode != 0 and error_line(p.stderr) and "Traceback" not in p.stderr
    assert "encoder.hidden_size: 16 in the checkpoint, 24 now" in p.stderr and "config.yaml" in p.stderr
    assert not (tmp_path / "tune" / "config.yaml").exists() and not (tmp_path / "tune" / "checkpoints").exists()
    p = run_cli("speechkit-train", *_train_args(corpus, tmp_path / "gone", f"trainer.init_from={tmp_path}/no.pt"),
                check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert error_line(p.stderr).endswith("trainer.init_from: checkpoint not found — pass "
                                         "trainer.init_from=<run dir>/checkpoints/best.pt")


# ----------------------------------------------------------------------------- 3. checksums


def _flip_a_bit_inside(path, tensor):
    """Flip one bit in the stored bytes of ``tensor`` inside the checkpoint file (found by content)."""
    data = bytearray(path.read_bytes())
    needle = tensor.contiguous().numpy().tobytes()
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) < 0, "the tensor's bytes must be in the file once"
    data[at + len(needle) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_flipped_bit_in_a_weight_is_found_and_the_tensor_named(run_copy):
    best = run_copy / "checkpoints" / "best.pt"
    weight = read_checkpoint(best)["model"]["encoder.rnn.weight_hh_l0"]
    _flip_a_bit_inside(best, weight)
    with pytest.raises(CheckpointError, match=r"best.pt: damaged: tensor model/encoder.rnn.weight_hh_l0 does not"):
        load_checkpoint(best)
    p = run_cli("speechkit-transcribe", f"checkpoint={best}", f"input={sample_rows('test', 1)[0]['audio_filepath']}",
                check=False)
    assert p.returncode != 0 and error_line(p.stderr) and "encoder.rnn.weight_hh_l0" in p.stderr


@pytest.mark.slow
def test_resume_falls_back_to_the_previous_checkpoint_when_last_is_damaged_and_says_so(corpus, run_copy):
    ckpts = run_copy / "checkpoints"
    assert (ckpts / "last.prev.pt").exists()
    prev_step = read_checkpoint(ckpts / "last.prev.pt")["trainer"]["state"]["step"]
    _flip_a_bit_inside(ckpts / "last.pt", read_checkpoint(ckpts / "last.pt")["model"]["head.weight"])
    run_cli("speechkit-train", *_train_args(corpus, run_copy, "trainer.max_steps=6", "trainer.max_epochs=3",
                                             "trainer.resume=true"))
    log = (run_copy / "train.log").read_text()
    assert "tensor model/head.weight does not match its checksum" in log
    assert f"resuming from {ckpts / 'last.prev.pt'} at step {prev_step}" in log
    assert read_checkpoint(ckpts / "last.pt")["trainer"]["state"]["step"] == 6


def test_an_edited_config_inside_a_checkpoint_is_found(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": "speechkit-checkpoint", "format_version": 2, "config": {"a": 1},
                           "tokens": ["<blank>"], "model": {"w": torch.zeros(2)}})
    data = torch.load(path, weights_only=True)
    data["config"]["a"] = 2
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="damaged: its config, vocabulary or trainer state"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- 7. the config is data


def _edited(src, dst, edit):
    data = torch.load(src, weights_only=True)
    edit(data)
    save_checkpoint(dst, data)
    return dst


@pytest.mark.slow
def test_interpolations_inside_a_checkpoints_config_are_never_resolved(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHKIT_SECRET", "leaked")

    def edit(d):
        d["config"]["run_name"] = "${oc.env:SPEECHKIT_SECRET}"
        d["config"]["decoder"]["name"] = "${oc.env:SPEECHKIT_SECRET,greedy}"

    path = _edited(trained / "checkpoints" / "best.pt", tmp_path / "x.pt", edit)
    pipe = load_checkpoint(path, decoder={"name": "greedy"})
    assert pipe.config.run_name == "${oc.env:SPEECHKIT_SECRET}"
    with pytest.raises(CheckpointError, match=r"decoder plugin '\$\{oc.env:SPEECHKIT_SECRET,greedy\}'"):
        load_checkpoint(path)  # the saved decoder's name is text, not an instruction


@pytest.mark.slow
def test_a_checkpoint_naming_plugins_not_installed_says_which_and_transcribe_can_override_the_decoder(
        trained, tmp_path):
    best = trained / "checkpoints" / "best.pt"
    tok = _edited(best, tmp_path / "tok.pt", lambda d: d["config"]["tokenizer"].update(name="their_bpe"))
    with pytest.raises(CheckpointError, match=r"tok.pt: built with tokenizer plugin 'their_bpe', which is not installed"):
        read_checkpoint(tok)
    dec = _edited(best, tmp_path / "dec.pt", lambda d: d["config"]["decoder"].update(name="their_decoder"))
    with pytest.raises(CheckpointError, match=r"dec.pt: built with decoder plugin 'their_decoder'.*decoder=greedy"):
        load_checkpoint(dec)
    wav = sample_rows("test", 1)[0]["audio_filepath"]
    p = run_cli("speechkit-transcribe", f"checkpoint={dec}", f"input={wav}")  # transcribe's decoder: greedy
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- 10. messages


def test_disk_space_messages_round_what_is_needed_up_and_show_the_bytes(tmp_path, monkeypatch):
    import shutil as sh

    from speechkit.checkpoint import check_writable

    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage._replace(free=1_000_000))
    with pytest.raises(CheckpointError, match=r"0\.9 MiB \(1,000,000 bytes\) free, but .* need about "
                                              r"1\.1 MiB \(1,100,000 bytes\)"):
        check_writable(tmp_path, need_bytes=1_100_000)


def test_the_refusal_of_a_pickled_object_names_what_was_refused_whole(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "speechkit-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    detail = msg.split("plain data (", 1)[1].rsplit(")", 1)[0]
    # torch's sentence naming the refused global, whole — not its preamble cut at 200 characters
    assert "GLOBAL" in detail and "system" in detail and "PyTorch 2.6" not in msg, detail


def test_a_run_stopped_mid_epoch_says_which_epoch_it_stopped_in_numbered_from_one(tmp_path, caplog):
    from speechkit.trainer import Trainer
    from tests.test_trainer import _cfg

    # 8 utterances in batches of 2: 4 batches an epoch; 6 steps end in the second epoch, 2 batches in
    cfg = _cfg(tmp_path, 8, "encoder.hidden_size=8", "data.batch_size=2", "trainer.max_steps=6",
               "trainer.threads=1", "augment=none")
    with caplog.at_level("INFO", logger="speechkit"):
        Trainer(cfg, tmp_path / "run").fit()
    done = [r.getMessage().split(":")[0] for r in caplog.records if "epoch" in r.getMessage()[:40]]
    assert "epoch 1 done" in done and "epoch 2 stopped after 2 of 4 batches" in done, done
    assert "epoch 2 done" not in done


def test_a_skipped_non_finite_update_names_the_manifest_lines_of_its_batch(tmp_path, monkeypatch, caplog):
    from speechkit.trainer import Trainer
    from tests.test_trainer import _cfg

    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "data.batch_size=2", "trainer.max_steps=2",
               "trainer.threads=1", "augment=none", "trainer.eval_every_epochs=100",
               "trainer.max_nonfinite_in_row=2")
    trainer = Trainer(cfg, tmp_path / "run")
    real = trainer.loss_fn.forward
    monkeypatch.setattr(trainer.loss_fn, "forward", lambda *a: (real(*a)[0] * float("nan"), 0))
    with caplog.at_level("WARNING", logger="speechkit"), pytest.raises(FloatingPointError):
        trainer.fit()
    warned = [r.getMessage() for r in caplog.records if "update skipped" in r.getMessage()]
    assert len(warned) == 2
    named = warned[0].split("the batch: ")[1].split(", ")
    assert len(named) == 2 and all(n.startswith(str(tmp_path / "train.jsonl") + ":") for n in named), warned[0]


def test_undoing_a_failed_start_takes_away_only_what_it_made(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert is_new(run) == set()  # missing: new
    run.mkdir()
    (run / "train.log").touch()  # Hydra's log of this start, still empty
    before = is_new(run)
    assert before == {"train.log"}
    (run / "config.yaml").write_text("x\n")
    (run / ".hydra").mkdir()
    (run / "train.log").write_text("the attempt's lines\n")
    undo_new(run, before)
    assert not run.exists()
    run.mkdir()
    (run / "notes.txt").write_text("mine\n")
    assert is_new(run) is None  # a file of the user's: not new, nothing is undone there
    (run / "train.log").write_text("an earlier run's log\n")
    (run / "notes.txt").unlink()
    assert is_new(run) is None  # a log with lines in it is not Hydra's log of this start
    monkeypatch.chdir(run)  # the current folder itself is emptied of what was made, never removed
    (run / "train.log").unlink()
    assert is_new(run) == set()
    undo_new(run, set())
    assert run.is_dir()
