"""Model cards (speechkit/info.py): written by training, extended by speechkit-eval update_card=true,
printed by speechkit-info; checkpoints written before cards still load and show what they can."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import speechkit
from speechkit import load_checkpoint
from speechkit.checkpoint import CheckpointError, model_payload, read_checkpoint, save_checkpoint
from speechkit.info import card_of, eval_result, main, record_test_result, training_card
from tests.conftest import REPO, copy_of_tiny_run, run_cli, sample_rows

pytestmark = pytest.mark.slow  # the shared tiny training run


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    return copy_of_tiny_run(tiny_run, tmp_path_factory, "card")


@pytest.fixture
def best(run, tmp_path):
    """A private copy of the tiny run's best.pt, to rewrite."""
    return shutil.copy(run / "run/checkpoints/best.pt", tmp_path / "best.pt")


def test_training_writes_a_card_with_data_sizes_hardware_versions_and_dev_metrics(run):
    ckpt = read_checkpoint(run / "run/checkpoints/best.pt")
    card = ckpt["card"]
    assert card["card_version"] == 1 and card["name"] == "demo" and card["recipe"] == "demo"
    assert card["licence"] is None and card["description"] is None
    hours = sum(r["duration"] for r in sample_rows("train", 16)) / 3600
    assert card["data"]["train"]["utterances"] == 16 and card["data"]["train"]["hours"] == pytest.approx(hours, abs=1e-4)
    assert card["data"]["train"]["manifest"].endswith("train.jsonl")  # as the run's config names it
    assert card["data"]["dev"]["utterances"] == 4
    t = card["training"]
    assert t["steps"] == ckpt["metrics"]["step"] == card["dev"]["step"]  # where the best dev WER was
    assert read_checkpoint(run / "run/checkpoints/last.pt")["card"]["training"]["steps"] == 3
    assert t["device"] == "cpu" and t["processes"] == 1 and t["threads"] >= 1 and t["cpu"]
    assert 0 <= t["minutes"] < 10
    assert card["software"]["speechkit"] == speechkit.__version__ and card["software"]["torch"] == torch.__version__
    assert card["dev"]["wer"] == ckpt["metrics"]["dev_wer"]
    assert card["model"]["encoder"] == "blstm" and card["model"]["hidden_size"] == 32
    assert card["model"]["weights"] == sum(v.numel() for v in ckpt["model"].values())
    assert card["test"] == []


def test_the_card_takes_licence_and_description_from_the_training_config():
    from hydra import compose, initialize_config_dir

    from speechkit.config import CONF_DIR, store_schemas
    from speechkit.pipeline import CTCModel

    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1",
                                           "card.licence=CC-BY-4.0", "card.description=digits"])
    tokens = ["<blank>", " ", "a", "b"]
    payload = model_payload(cfg, tokens, CTCModel.from_config(cfg, len(tokens)), {"dev_wer": 0.5, "step": 7})
    state = SimpleNamespace(step=7, epoch=2, train_seconds=90.0)
    card = training_card(payload, train=[SimpleNamespace(duration=1800.0)] * 3, dev=[], state=state, device="cpu")
    assert card["licence"] == "CC-BY-4.0" and card["description"] == "digits"
    assert card["data"]["train"]["hours"] == 1.5 and card["training"]["minutes"] == 1.5
    assert card["dev"] == {"wer": 0.5, "step": 7} and card["training"]["epochs"] == 2


def test_eval_update_card_writes_the_test_metrics_into_the_checkpoint(run, best, tmp_path):
    before = read_checkpoint(best)["card"]
    p = run_cli("speechkit-eval", f"checkpoint={best}", f"data.test_manifest={run / 'test.jsonl'}",
                f"hydra.run.dir={tmp_path / 'eval'}", "progress=false", "update_card=true")
    assert "model card: test metrics written" in p.stdout
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    ckpt = read_checkpoint(best)  # every checksum fresh: reading verifies them
    (entry,) = ckpt["card"]["test"]
    assert entry["wer"] == metrics["wer"] and entry["cer"] == metrics["cer"] and entry["utterances"] == 4
    assert entry["manifest"] == str((run / "test.jsonl").resolve()) and entry["decoder"]["name"] == "greedy"
    assert entry["hours"] == pytest.approx(sum(r["duration"] for r in sample_rows("test", 4)) / 3600, abs=1e-4)
    assert {k: v for k, v in ckpt["card"].items() if k != "test"} == {k: v for k, v in before.items() if k != "test"}
    assert sorted(p.name for p in best.parent.iterdir()) == [".best.pt.lock", "best.pt", "eval"]  # no temporary file
    # the same manifest and decoder again: replaced, not repeated; another decoder: added
    again = {**entry, "wer": 0.25}
    record_test_result(best, again)
    record_test_result(best, {**entry, "decoder": {"name": "beam", "beam_size": 4}})
    tests = read_checkpoint(best)["card"]["test"]
    assert [(t["decoder"]["name"], t["wer"]) for t in tests] == [("greedy", 0.25), ("beam", entry["wer"])]


def test_update_card_refuses_a_file_whose_weights_are_not_the_ones_evaluated(best):
    weights = {k: v.clone() for k, v in read_checkpoint(best)["model"].items()}
    next(iter(weights.values())).add_(1.0)
    untouched = best.read_bytes()
    entry = eval_result({"wer": 0.1, "cer": 0.05, "num_utterances": 1}, [], "test.jsonl", {"name": "greedy"})
    with pytest.raises(CheckpointError, match="no longer the ones just evaluated"):
        record_test_result(best, entry, weights=weights)
    assert best.read_bytes() == untouched


def test_update_card_never_reseals_a_damaged_file(best):
    data = torch.load(best, weights_only=True)
    next(iter(data["model"].values())).add_(1.0)  # changed without new checksums
    torch.save(data, best)
    with pytest.raises(CheckpointError, match="damaged"):
        record_test_result(best, {"manifest": "t", "decoder": None})


def test_info_prints_the_card_for_people_and_as_json(best, capsys):
    main([f"checkpoint={best}"])
    text = capsys.readouterr().out
    assert text.startswith(f"model card of {best}") and "demo (recipe demo)" in text
    steps = read_checkpoint(best)["card"]["training"]["steps"]
    assert "train  " in text and "16 utterances" in text and f"  training    {steps} steps, 1 epoch done, " in text
    assert "on cpu (" in text and "1 process of " in text
    assert "not recorded (speechkit-eval checkpoint=… update_card=true)" in text
    main([f"checkpoint={best}", "format=json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "demo" and shown["data"]["train"]["utterances"] == 16
    assert shown["training"] == read_checkpoint(best)["card"]["training"]


def test_info_mistakes_are_one_error_line(tmp_path, capsys):
    for argv, expected in (([f"checkpoint={tmp_path / 'nope.pt'}"], "nope.pt: checkpoint not found"),
                           (["checkpoint=x.pt", "format=xml"], "format=xml: give text or json"),
                           ([], "missing checkpoint=…")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 2 and err[0].startswith("usage: speechkit-info") and expected in err[1]


def test_info_help_answers_without_importing_torch():
    code = "import sys; from speechkit.info import main; main(['--help']); assert 'torch' not in sys.modules"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: speechkit-info checkpoint=PATH|URL")


@pytest.mark.parametrize("version", [1, 2])
def test_a_checkpoint_written_before_cards_loads_and_shows_what_it_can(best, version, capsys):
    data = torch.load(best, weights_only=True)
    del data["card"]
    if version == 1:  # the first format: no checksums either
        del data["checksums"]
        data["format_version"] = 1
        torch.save(data, best)
    else:
        save_checkpoint(best, {k: v for k, v in data.items() if k != "checksums"})
    assert load_checkpoint(best).transcribe([sample_rows("test", 1)[0]["audio_filepath"]])
    card = card_of(read_checkpoint(best))
    assert card["card_version"] is None and card["name"] == "demo" and card["dev"]["wer"] == data["metrics"]["dev_wer"]
    main([f"checkpoint={best}"])
    assert "written before model cards" in capsys.readouterr().out
    record_test_result(best, {"manifest": "t.jsonl", "decoder": {"name": "greedy"}, "wer": 0.5})
    upgraded = read_checkpoint(best)  # now with checksums (format 2) and a card
    assert upgraded["format_version"] == 2 and upgraded["card"]["test"][0]["wer"] == 0.5


def test_a_card_written_on_a_gpu_names_it_and_the_cuda_version(monkeypatch):
    from speechkit.info import hardware

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    h = hardware(torch.device("cuda:0"), processes=8)
    assert h["device"] == "cuda" and h["gpu"] == "NVIDIA H200" and h["cuda"] == "12.4" and h["processes"] == 8
    assert "gpu" not in hardware("cpu") and "cuda" not in hardware("cpu")
