"""Model cards: what a checkpoint is, what it learnt from, how and where it was trained, how well it does;
and ``speechkit-info checkpoint=PATH|URL [format=text|json]``, which prints one.

A checkpoint carries its card under ``"card"`` (plain data, checksummed with the rest): the trainer writes
it with every checkpoint (:func:`training_card`), and ``speechkit-eval … update_card=true`` adds the test
metrics it measured (:func:`record_test_result`, which rewrites the file through
:func:`speechkit.checkpoint.update_card`). A checkpoint written before cards shows the card its config and
metrics allow (:func:`card_of`; ``card_version`` null). The fields, version 1::

    card_version  1
    name, recipe  the run's run_name and the recipe it chose (null: none)
    description, licence   the training config's ``card.description`` and ``card.licence`` (null: not stated)
    written       when this checkpoint was written (UTC, ISO 8601)
    model         frontend, encoder, tokenizer, vocabulary (tokens, blank included), weights (numbers)
    data          train / dev: manifest, utterances, hours (null where the manifest has no durations);
                  test: the manifest the config names
    training      minutes (spent in training steps, dev evaluation excluded, summed over resumed attempts),
                  steps, epochs (completed), device, gpu and cuda (on CUDA), cpu (model), cpus, threads,
                  processes
    software      speechkit, torch, python (the versions that wrote it)
    dev           the dev metrics at this checkpoint: wer, cer, loss, train_loss, step, epoch
    test          one entry per (manifest, decoder) evaluated with update_card=true: manifest, utterances,
                  hours, decoder, wer, cer (per for a phone model), sentence_error_rate, evaluated, speechkit

Nothing at module level imports torch: ``speechkit-info --help`` answers at once.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speechkit.cli import UsageError, parse_key_values, run

CARD_VERSION = 1  # bump when a field changes meaning; readers show any version they find

CLI_USAGE = "speechkit-info checkpoint=PATH|URL [format=text|json]"
CLI_HELP = f"""\
usage: {CLI_USAGE}

Print a checkpoint's model card: its name and recipe, licence, model, training and test data (utterances,
hours), training time and hardware, software versions, dev metrics, and the test metrics recorded by
speechkit-eval … update_card=true. Its checksums are verified first.

  checkpoint=PATH|URL   a checkpoint file, an https:// URL (#sha256=HEX pins its digest) or
                        hf://OWNER/REPO/PATH/FILE.pt[@REVISION] (needs: pip install speechkit[hub]);
                        downloads are kept in $XDG_CACHE_HOME/speechkit/hub
  format=text|json      text for people (default), json for programs

example: speechkit-info checkpoint=runs/demo/2025-01-01_12-00-00/checkpoints/best.pt"""

#: the command's keys and their defaults (None: required)
CLI_KEYS: dict[str, str | None] = {"checkpoint": None, "format": "text"}


# ----------------------------------------------------------------------------- building cards


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_summary(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model a checkpoint holds, from its config, vocabulary and weights."""
    config = ckpt.get("config") or {}

    def name(kind: str) -> Any:
        node = config.get(kind)
        return node.get("name") if isinstance(node, dict) else node

    encoder = config.get("encoder") if isinstance(config.get("encoder"), dict) else {}
    weights = ckpt.get("model") or {}
    aligner = config.get("aligner") if isinstance(config.get("aligner"), dict) else {}
    return {
        "frontend": name("frontend"),
        "encoder": name("encoder"),
        "hidden_size": encoder.get("hidden_size"),
        "num_layers": encoder.get("num_layers"),
        "tokenizer": name("tokenizer"),
        "vocabulary": len(ckpt.get("tokens") or []),
        "weights": sum(t.numel() for t in weights.values() if hasattr(t, "numel")),
        # the short-sighted head word times are read off (speechkit/aligner.py): its ms of context each side
        "aligner_context_ms": aligner.get("context_ms") if (aligner.get("weight") or 0) > 0 else None,
    }


def dev_metrics(row: dict[str, Any] | None) -> dict[str, Any]:
    """A trainer history row (``dev_wer``, ``dev_cer``, ``dev_loss``, ``train_loss``, ``step``, ``epoch``)
    as the card's ``dev`` section (``wer``, ``cer``, ``loss``, …)."""
    row = row or {}
    out = {k.removeprefix("dev_"): v for k, v in row.items() if k.startswith("dev_")}
    out.update({k: row[k] for k in ("train_loss", "step", "epoch") if k in row})
    return out


def card_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's card; for one written before cards, what its config and metrics tell
    (``card_version`` None, no data sizes, hardware or test metrics)."""
    card = ckpt.get("card")
    if isinstance(card, dict) and card:
        return card
    config = ckpt.get("config") or {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    settings = config.get("card") if isinstance(config.get("card"), dict) else {}
    return {
        "card_version": None,
        "name": config.get("run_name"),
        "recipe": None,
        "description": settings.get("description"),
        "licence": settings.get("licence"),
        "written": None,
        "model": model_summary(ckpt),
        "data": {s: {"manifest": data[f"{s}_manifest"]} for s in ("train", "dev", "test") if data.get(f"{s}_manifest")},
        "training": {},
        "software": {"speechkit": ckpt.get("speechkit_version")},
        "dev": dev_metrics(ckpt.get("metrics")),
        "test": [],
    }


def data_summary(manifest: Any, examples: Sequence[Any]) -> dict[str, Any]:
    """``{manifest, utterances, hours}`` of a manifest's examples; hours over those with a ``duration``
    (``without_duration`` counts the rest; hours null when none has one: images)."""
    durations = [ex.duration for ex in examples if getattr(ex, "duration", None) is not None]
    from speechkit.data.manifest import manifest_list

    names = manifest_list(manifest)
    out: dict[str, Any] = {"manifest": names[0] if len(names) == 1 else names or str(manifest), "utterances": len(examples),
                           "hours": round(sum(durations) / 3600, 4) if durations else None}
    if durations and len(durations) < len(examples):
        out["without_duration"] = len(examples) - len(durations)
    return out


def _cpu_model() -> str:
    try:  # Linux names the model here; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: Any, processes: int = 1) -> dict[str, Any]:
    """Where training ran: device type, GPU name (on CUDA), CPU model and count, torch threads, processes."""
    import torch

    device = torch.device(device)
    out: dict[str, Any] = {"device": device.type}
    if device.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    out.update(cpu=_cpu_model(), cpus=os.cpu_count(), threads=torch.get_num_threads(), processes=processes)
    return out


def software() -> dict[str, Any]:
    import torch

    import speechkit

    return {"speechkit": speechkit.__version__, "torch": str(torch.__version__),  # a str subclass: not plain data
            "python": platform.python_version()}


def _recipe_choice() -> str | None:
    """The recipe chosen on the command line (``recipe=NAME``), when run under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("recipe")
    return None if choice in (None, "null") else str(choice)


def training_card(payload: dict[str, Any], *, train: Sequence[Any], dev: Sequence[Any], state: Any,
                  device: Any, processes: int = 1, precision: str | None = None,
                  weights: str | None = None) -> dict[str, Any]:
    """The card the trainer writes into ``payload`` (:func:`speechkit.checkpoint.model_payload`'s):
    ``train``/``dev`` the examples read from the manifests, ``state`` the trainer's (``step``, ``epoch``,
    ``train_seconds``), ``processes`` the world size, ``precision`` the one trained in (fp32, bf16, fp16),
    ``weights`` what the checkpoint's weights are when not simply the trained ones (a moving average)."""
    card = card_of({k: v for k, v in payload.items() if k != "card"})
    data = payload["config"].get("data") or {}
    card.update(card_version=CARD_VERSION, recipe=_recipe_choice(), written=_now(), software=software())
    card["data"] = {"train": data_summary(data.get("train_manifest"), train)}
    if data.get("dev_manifest"):
        card["data"]["dev"] = data_summary(data["dev_manifest"], dev)
    if data.get("test_manifest"):
        card["data"]["test"] = {"manifest": str(data["test_manifest"])}
    card["training"] = {"minutes": round(state.train_seconds / 60, 2), "steps": state.step,
                        "epochs": state.epoch, **hardware(device, processes)}
    if precision:
        card["training"]["precision"] = precision
    if weights:
        card["training"]["weights"] = weights
    trainer = payload["config"].get("trainer") or {}
    if trainer.get("init_from"):  # fine-tuned: the checkpoint it started from (its own card holds that model's data)
        card["training"]["init_from"] = str(trainer["init_from"])
        if trainer.get("init_exclude"):  # the weights it did not take (a new head: a new vocabulary)
            card["training"]["init_exclude"] = [str(x) for x in trainer["init_exclude"]]
    return card


def eval_result(metrics: dict[str, Any], preds: Sequence[dict[str, Any]], manifest: Any, decoder: Any) -> dict[str, Any]:
    """One ``test`` entry of a card from speechkit-eval's ``metrics`` and ``predictions`` rows."""
    import speechkit

    durations = [p["duration"] for p in preds if isinstance(p.get("duration"), int | float)]
    entry = {"manifest": str(Path(manifest).resolve()), "utterances": int(metrics.get("num_utterances", len(preds))),
             "hours": round(sum(durations) / 3600, 4) if durations else None, "decoder": decoder}
    # plain floats: a NumPy scalar would make the checkpoint unloadable with weights_only
    entry.update({k: float(metrics[k]) for k in ("wer", "cer", "per", "sentence_error_rate") if k in metrics})
    entry.update(evaluated=_now(), speechkit=speechkit.__version__)
    return entry


def with_test_result(card: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``card`` with ``entry`` among its test results, replacing the one of the same manifest and decoder."""
    same = (entry["manifest"], json.dumps(entry["decoder"], sort_keys=True))
    kept = [t for t in card.get("test") or [] if (t.get("manifest"), json.dumps(t.get("decoder"), sort_keys=True)) != same]
    return {**card, "test": [*kept, entry]}


def record_test_result(checkpoint: str | Path, entry: dict[str, Any], weights: dict | None = None) -> dict[str, Any]:
    """Write a test result into the card of the checkpoint file (rewritten atomically, fresh checksums);
    ``weights``: the evaluated model's state dict, refused if the file no longer holds it."""
    from speechkit.checkpoint import update_card

    return update_card(checkpoint, lambda ckpt: with_test_result(card_of(ckpt), entry), weights)


# ----------------------------------------------------------------------------- showing cards


def _rates(d: dict[str, Any]) -> str:
    parts = [f"{k.upper()} {100 * d[k]:.2f} %" for k in ("wer", "cer", "per") if _number(d.get(k))]
    if _number(d.get("loss")):
        parts.append(f"loss {d['loss']:.3f}")
    return "  ".join(parts) or "—"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _minutes(m: float) -> str:
    """A duration for people: seconds under a minute, minutes under two hours, then hours."""
    return f"{60 * m:.0f} s" if m < 1 else f"{m:.1f} min" if m < 120 else f"{m / 60:.1f} h"


def _plural(n: Any, word: str) -> str:
    many = word + ("es" if word.endswith("s") else "s")
    return f"{n:,} {word if n == 1 else many}" if isinstance(n, int) else f"{n} {many}"


def _size(d: dict[str, Any]) -> str:
    parts = []
    if d.get("utterances") is not None:
        parts.append(_plural(d["utterances"], "utterance"))
    if _number(d.get("hours")):
        parts.append(_minutes(60 * d["hours"]))
    return ", ".join(parts)


def _names(manifest: Any) -> str:
    """A manifest, or several joined (``a + b``)."""
    return " + ".join(map(str, manifest)) if isinstance(manifest, list) else str(manifest)


def _decoder_name(decoder: Any) -> str:
    if not isinstance(decoder, dict):
        return str(decoder)
    lm = decoder.get("lm")
    extra = f" + {lm['name']} LM" if isinstance(lm, dict) and lm.get("name") else ""
    return f"{decoder.get('name')}{extra}"


def format_card(card: dict[str, Any], source: str) -> str:
    """The card as text for people, one field a line."""
    rows: list[tuple[str, str]] = []
    name = card.get("name") or "—"
    rows.append(("name", name + (f" (recipe {card['recipe']})" if card.get("recipe") else "")))
    rows.append(("description", card.get("description") or "—"))
    rows.append(("licence", card.get("licence") or "not stated (train with card.licence=…)"))
    m = card.get("model") or {}
    if m:
        shape = f" ({m['num_layers']} × {m['hidden_size']})" if m.get("num_layers") and m.get("hidden_size") else ""
        weights = f"; {m['weights']:,} weights" if m.get("weights") else ""
        aligner = f"; aligner ±{m['aligner_context_ms']:g} ms (word times)" if m.get("aligner_context_ms") else ""
        rows.append(("model", f"{m.get('frontend')} → {m.get('encoder')}{shape} → {m.get('vocabulary')} tokens "
                              f"({m.get('tokenizer')}){weights}{aligner}"))
    for i, (split, d) in enumerate((card.get("data") or {}).items()):
        size = _size(d)
        rows.append(("data" if i == 0 else "", f"{split:<5}  {_names(d.get('manifest'))}" + (f"  ({size})" if size else "")))
    t = card.get("training") or {}
    if t:
        where = t.get("gpu") or t.get("cpu") or ""
        took = _minutes(t["minutes"]) if _number(t.get("minutes")) else "?"
        rows.append(("training", f"{_plural(t.get('steps'), 'step')}, {_plural(t.get('epochs'), 'epoch')} done, "
                                 f"{took} on {t.get('device')}" + (f" ({where})" if where else "")))
        rows.append(("", f"{_plural(t.get('processes'), 'process')} of {_plural(t.get('threads'), 'thread')}, "
                         f"{_plural(t.get('cpus'), 'CPU')} on the machine"
                         + (f", {t['precision']}" if t.get("precision") else "")))
        if t.get("init_from"):
            rows.append(("", f"fine-tuned from {t['init_from']}"
                             + (f", all but {', '.join(t['init_exclude'])}" if t.get("init_exclude") else "")))
    sw = card.get("software") or {}
    rows.append(("software", ", ".join(f"{k} {v}" for k, v in sw.items() if v) or "—"))
    dev = card.get("dev") or {}
    at = f"  (step {dev['step']})" if dev.get("step") is not None else ""
    rows.append(("dev", _rates(dev) + at if dev else "—"))
    tests = card.get("test") or []
    for i, r in enumerate(tests):
        size = _size(r)
        rows.append(("test" if i == 0 else "", f"{_rates(r)}  {r.get('manifest')}" + (f", {size}" if size else "")
                     + f", decoder {_decoder_name(r.get('decoder'))}" + (f"  ({r['evaluated']})" if r.get("evaluated") else "")))
    if not tests:
        rows.append(("test", "not recorded (speechkit-eval checkpoint=… update_card=true)"))
    head = f"model card of {source}"
    if card.get("card_version") is None:
        head += "\n(written before model cards: shown from its config and metrics)"
    elif card.get("written"):
        head += f"\n(written {card['written']}, card version {card['card_version']})"
    return head + "\n" + "\n".join(f"  {k:<12}{v}" for k, v in rows)


def _json_safe(obj: Any) -> Any:
    """NaN and infinities as null: strict JSON readers refuse them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- the command


def read_card(source: str) -> dict[str, Any]:
    """The card of the checkpoint at ``source`` (a path, URL or hf:// path), its checksums verified; the
    plugins it names need not be installed. Raises :class:`~speechkit.checkpoint.CheckpointError`."""
    from speechkit.checkpoint import FORMAT, CheckpointError, load_plain

    ckpt = load_plain(source)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(source, "not a speechkit checkpoint", "pass a file written by speechkit-train")
    return card_of(ckpt)


def _work(argv: list[str]) -> None:
    from speechkit.checkpoint import CheckpointError

    a = parse_key_values(argv, CLI_KEYS, "speechkit-info")
    if a["format"] not in ("text", "json"):
        raise UsageError(f"format={a['format']}: give text or json")
    try:
        card = read_card(a["checkpoint"])
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    if a["format"] == "json":
        print(json.dumps(_json_safe(card), indent=2, ensure_ascii=False))
    else:
        print(format_card(card, a["checkpoint"]))


def main(argv: Sequence[str] | None = None) -> None:
    """``speechkit-info checkpoint=PATH|URL [format=text|json]``: print a checkpoint's model card."""
    run(_work, CLI_USAGE, CLI_HELP, argv)


if __name__ == "__main__":
    main()
