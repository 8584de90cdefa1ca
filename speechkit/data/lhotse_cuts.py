"""``data.format=lhotse``: train and evaluate straight from a lhotse CutSet, no conversion.

A cut manifest (``cuts.jsonl`` or ``cuts.jsonl.gz``, as lhotse, icefall and NeMo's lhotse path write
them) or a Shar folder (``CutSet.to_shar``: ``cuts.*.jsonl.gz`` beside ``recording.*.tar``) becomes the
same :class:`~speechkit.data.manifest.Example` list a JSON-lines manifest gives; each example keeps
its cut as ``source``, and :func:`cut_audio` loads exactly the cut's span (offset, duration, channel)
through lhotse, resampled to the frontend's rate. Audio only. A Shar folder is read with its audio
in memory (lhotse's Shar reader carries each cut's bytes), so it suits sets that fit in RAM; convert
larger ones with ``speechkit-prepare`` or point at the cut manifest whose recordings are files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechkit.data.errors import DataError
from speechkit.data.manifest import Example, manifest_list, read_manifest

FORMATS = ("manifest", "lhotse")


def read_examples(path: Any, modality: str, fmt: str = "manifest") -> list[Example]:
    """The examples of ``path`` in ``data.format`` ``fmt``: a JSON-lines manifest, or a lhotse CutSet; a
    list of them, joined in order (each example still names its own file and line)."""
    if not isinstance(path, (str, Path)):
        return [ex for one in manifest_list(path) for ex in read_examples(one, modality, fmt)]
    if fmt == "manifest":
        return read_manifest(path, modality)
    if fmt != "lhotse":
        raise DataError(path, f"data.format={fmt!r} is not a format speechkit reads", f"use one of {', '.join(FORMATS)}")
    if modality != "audio":
        raise DataError(path, f"data.format=lhotse holds audio cuts; this model's frontend reads {modality}",
                        "use a JSON-lines manifest (data.format=manifest) for images and video")
    return read_cuts(path)


def _cutset(path: Path):
    try:
        from lhotse import CutSet
    except ImportError:
        raise DataError(path, "data.format=lhotse needs lhotse", "pip install speechkit[corpora]") from None
    if path.is_dir():
        shards = sorted(path.glob("cuts.*.jsonl*"))
        if not shards:
            raise DataError(path, "a folder, but not a lhotse Shar folder (no cuts.NNNNNN.jsonl.gz inside)",
                            "give a cut manifest (cuts.jsonl.gz) or the folder CutSet.to_shar wrote")
        return CutSet.from_shar(in_dir=path)
    if not path.is_file():
        raise DataError(path, "cut manifest not found", "check data.*_manifest (data.format=lhotse)")
    return CutSet.from_file(path)


def read_cuts(path: str | Path) -> list[Example]:
    """Every cut of a CutSet as an :class:`Example`: text = its supervisions' texts in time order;
    ``duration``, ``id``, ``speaker`` and ``language`` from the cut. A cut without text, or with more
    than one channel, is an error naming the cut (nothing is dropped silently)."""
    path = Path(path)
    try:
        cuts = list(_cutset(path))
    except DataError:
        raise
    except Exception as e:  # lhotse's own parse errors: one line naming the file
        raise DataError(path, f"lhotse could not read it ({type(e).__name__}: {' '.join(str(e).split())})",
                        "check it with lhotse (CutSet.from_file) or give a JSON-lines manifest") from None
    examples, problems = [], []
    for n, cut in enumerate(cuts, start=1):
        sups = sorted(cut.supervisions, key=lambda s: s.start)
        text = " ".join(s.text.strip() for s in sups if s.text and s.text.strip())
        if not text:
            problems.append(f"cut {cut.id}: no supervision with text")
            continue
        if getattr(cut, "num_channels", 1) > 1:
            problems.append(f"cut {cut.id}: {cut.num_channels} channels; give one channel per cut")
            continue
        first = sups[0]
        fields = tuple((k, v) for k, v in (("id", cut.id), ("speaker", first.speaker), ("language", first.language))
                       if v is not None)
        examples.append(Example(Path(f"{path}#{cut.id}"), text, path, n, float(cut.duration), fields, source=cut))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(path, f"{len(problems)} unusable cut(s): {shown}", "fix or remove these cuts")
    if not examples:
        raise DataError(path, "the CutSet has no cuts", "point data.*_manifest at a non-empty CutSet")
    return examples


def source_loader(frontend):
    """What a dataset calls on an example's ``source`` (a cut): :func:`cut_audio` at the frontend's rate."""
    rate = getattr(getattr(frontend, "cfg", None), "sample_rate", 16000)
    return lambda cut: cut_audio(cut, rate)


def cut_audio(cut, sample_rate: int) -> Tensor:
    """The cut's samples, mono float32 ``(samples,)`` at ``sample_rate``, loaded by lhotse (its span only)."""
    try:
        if cut.sampling_rate != sample_rate:
            cut = cut.resample(sample_rate)
        audio = np.asarray(cut.load_audio(), dtype=np.float32)
    except Exception as e:
        raise DataError(f"cut {cut.id}", f"lhotse could not load its audio ({' '.join(str(e).split())})",
                        "check the recording's path and format") from None
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    if audio.size == 0:
        raise DataError(f"cut {cut.id}", "no samples")
    return torch.from_numpy(np.ascontiguousarray(audio))
