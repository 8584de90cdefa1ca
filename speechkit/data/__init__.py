"""Manifests, datasets and collation shared by every modality, and the tokenizers.

The names below load on first use (PEP 562), so ``speechkit.data.errors`` or ``.manifest`` can be
imported without torch: the commands' ``--help`` and their error lines stay fast.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Batch": "dataset", "ManifestDataset": "dataset", "collate": "dataset",
    "DataError": "errors",
    "Example": "manifest", "ManifestError": "manifest", "read_manifest": "manifest",
    "CharTokenizer": "tokenizer",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
