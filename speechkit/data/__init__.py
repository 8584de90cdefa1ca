"""Manifests, datasets and collation shared by every modality, and the tokenizers."""

from speechkit.data.dataset import Batch, ManifestDataset, collate
from speechkit.data.errors import DataError
from speechkit.data.manifest import Example, ManifestError, read_manifest
from speechkit.data.tokenizer import CharTokenizer

__all__ = ["Batch", "CharTokenizer", "DataError", "Example", "ManifestDataset", "ManifestError", "collate", "read_manifest"]
