"""data.format=lhotse: a CutSet (cut manifest or Shar folder) trains and evaluates without conversion."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechkit.data.dataset import ManifestDataset
from speechkit.data.errors import DataError
from speechkit.data.lhotse_cuts import cut_audio, read_examples
from tests.conftest import SAMPLES, sample_rows

lhotse = pytest.importorskip("lhotse")


@pytest.fixture(scope="module")
def cutset(tmp_path_factory):
    """Eight samples/grid utterances as a lhotse CutSet: recordings by reference, one supervision each."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    tmp = tmp_path_factory.mktemp("cuts")
    rows = sample_rows("train", 8)
    recs = [Recording.from_file(SAMPLES / r["audio_filepath"], recording_id=f"utt{i}") for i, r in enumerate(rows)]
    sups = [SupervisionSegment(id=f"utt{i}", recording_id=f"utt{i}", start=0.0, duration=rec.duration,
                               text=r["text"], speaker=r["speaker"], language="English")
            for i, (r, rec) in enumerate(zip(rows, recs))]
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups))
    cuts.to_file(tmp / "cuts.jsonl.gz")
    return tmp / "cuts.jsonl.gz", rows, cuts


def test_a_cut_manifest_reads_as_examples_with_text_duration_and_speaker(cutset):
    path, rows, _ = cutset
    examples = read_examples(path, "audio", "lhotse")
    assert [ex.text for ex in examples] == [r["text"] for r in rows]
    assert [dict(ex.fields)["speaker"] for ex in examples] == [r["speaker"] for r in rows]
    for ex, r in zip(examples, rows):
        assert abs(ex.duration - sf.info(SAMPLES / r["audio_filepath"]).duration) < 1e-3


def test_a_cut_loads_only_its_own_span(cutset):
    _, rows, cuts = cutset
    cut = next(iter(cuts)).truncate(offset=0.5, duration=1.0)  # a segment of a longer recording
    full, rate = sf.read(SAMPLES / rows[0]["audio_filepath"], dtype="float32")
    got = cut_audio(cut, rate)
    assert got.shape == (rate,) and np.allclose(got.numpy(), full[rate // 2: rate // 2 + rate], atol=1e-6)
    assert cut_audio(cut, 8000).shape == (8000,)  # resampled by lhotse to the frontend's rate


def test_the_dataset_loads_cuts_through_its_source_loader(cutset):
    path, rows, _ = cutset
    examples = read_examples(path, "audio", "lhotse")
    ds = ManifestDataset(examples, load=lambda p: pytest.fail("a cut must not be read as a file"),
                         load_source=lambda cut: cut_audio(cut, 16000))
    item = ds[0]
    expected, _ = sf.read(SAMPLES / rows[0]["audio_filepath"], dtype="float32")
    assert torch.allclose(item.raw, torch.from_numpy(expected), atol=1e-6)


def test_a_shar_folder_reads_like_its_cut_manifest(cutset, tmp_path):
    path, rows, cuts = cutset
    (tmp_path / "shar").mkdir()
    cuts.to_shar(tmp_path / "shar", fields={"recording": "flac"}, shard_size=4)
    examples = read_examples(tmp_path / "shar", "audio", "lhotse")
    assert [ex.text for ex in examples] == [r["text"] for r in rows]
    assert cut_audio(examples[0].source, 16000).shape[0] == pytest.approx(examples[0].duration * 16000, abs=2)


def test_bad_cut_sets_are_one_clear_error(cutset, tmp_path):
    with pytest.raises(DataError, match="cut manifest not found"):
        read_examples(tmp_path / "nope.jsonl.gz", "audio", "lhotse")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="not a lhotse Shar folder"):
        read_examples(tmp_path / "empty_dir", "audio", "lhotse")
    (tmp_path / "junk.jsonl").write_text(json.dumps({"not": "a cut"}) + "\n")
    with pytest.raises(DataError, match="lhotse could not read it"):
        read_examples(tmp_path / "junk.jsonl", "audio", "lhotse")
    with pytest.raises(DataError, match="holds audio cuts"):
        read_examples(cutset[0], "image", "lhotse")
    with pytest.raises(DataError, match="data.format='csv'"):
        read_examples(cutset[0], "audio", "csv")


def test_training_runs_from_a_cutset_for_three_steps(cutset, tmp_path):
    from hydra import compose, initialize_config_dir

    from speechkit.config import CONF_DIR, store_schemas
    from speechkit.trainer import Trainer

    path = cutset[0]
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data.format=lhotse", f"data.train_manifest={path}", f"data.dev_manifest={path}",
            "data.num_workers=0", "data.batch_size=4", "encoder.num_layers=1", "encoder.hidden_size=16",
            "trainer.max_steps=3", "trainer.device=cpu", "augment=none"])
    metrics = Trainer(cfg, tmp_path / "run").fit()
    assert metrics["step"] == 3 and np.isfinite(metrics["train_loss"]) and 0 <= metrics["dev_cer"]
