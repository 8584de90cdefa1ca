"""Checkpoints from anywhere: an ``https://`` (or ``http://``) URL or an ``hf://`` Hugging Face Hub path is
fetched once into a local cache and read from there; a local path is itself.

    fetch("https://example.org/grid.pt#sha256=9f2c…")  # → ~/.cache/speechkit/hub/url/<key>/grid.pt
    fetch("hf://owner/repo/models/grid.pt@v1")          # → through huggingface_hub

URLs go to ``$XDG_CACHE_HOME/speechkit/hub/url/<16 hex digits of the URL's SHA-256>/<its file name>``
(``~/.cache/…`` without XDG_CACHE_HOME), once: a later fetch of the same URL reads that copy without asking
the server, so a file that changes needs a new URL (or :func:`forget`). The download goes to a temporary
file in the same folder, fsynced and renamed, under a file lock (``filelock``): two processes fetching one
URL download it once, and nobody ever reads half a file. A fragment ``#sha256=<64 hex digits>`` pins the
file's digest: a download (or a cached copy) that differs is deleted, and a fresh download that differs
is refused. On a Hydra command line quote such a URL, since ``#`` and ``=`` end an unquoted value:
``speechkit-eval 'checkpoint="https://…/grid.pt#sha256=…"'``.

``hf://owner/repo/path/in/repo.pt`` with ``@revision`` at the end (a branch, tag or commit; also
``hf://owner/repo@revision/path``, the form of huggingface_hub's file system, and ``hf://datasets/…`` or
``hf://spaces/…`` for those repository types) goes through ``huggingface_hub.hf_hub_download``, an optional
dependency (``pip install speechkit[hub]``), into ``$XDG_CACHE_HOME/speechkit/hub/huggingface`` in that
library's own layout, with its own locking and revision handling; its token (``HF_TOKEN``) opens private
repositories, and ``HF_ENDPOINT`` (a mirror) is read at each fetch. ``#sha256=`` pins an hf:// file too.

What a file holds is checked by its reader: a checkpoint's own SHA-256 checks run at every load, and a
downloaded copy that fails them is removed by speechkit/checkpoint.py (:func:`forget`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

SCHEMES = ("https://", "http://", "hf://")
TIMEOUT_S = 30  # seconds the server may stay silent (connecting, or between bytes) before we give up
CHUNK_BYTES = 1 << 20  # read and hashed 1 MiB at a time
PROGRESS_MIN_BYTES = 10 << 20  # downloads of 10 MiB and more show a progress bar (on stderr)
HUB_FIX = "pip install speechkit[hub]"


class HubError(RuntimeError):
    """A file that cannot be fetched; the message names the source, the problem and what to do."""

    def __init__(self, source: str, problem: str, fix: str = "") -> None:
        self.source, self.problem, self.fix = source, problem, fix
        super().__init__(f"{source}: {problem}" + (f" — {fix}" if fix else ""))


def is_remote(source: object) -> bool:
    """Whether ``source`` is a URL or an hf:// path (a string; a ``Path`` is always local)."""
    return isinstance(source, str) and source.lower().startswith(SCHEMES)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/speechkit/hub`` (``~/.cache/speechkit/hub`` when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "speechkit" / "hub"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def split_digest(source: str) -> tuple[str, str | None]:
    """``(source without its fragment, the pinned SHA-256 or None)``; any other fragment is an error."""
    base, hash_sign, fragment = source.partition("#")
    if not hash_sign:
        return source, None
    m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    if not m:
        raise HubError(source, f"the fragment #{fragment} is not #sha256=<64 hex digits>",
                       "pin the file with #sha256=<its SHA-256>, or leave the fragment out")
    return base, m.group(1).lower()


@dataclass(frozen=True)
class HfPath:
    """A file in a Hugging Face Hub repository: ``hf://[datasets/|spaces/]owner/repo/path[@revision]``."""

    repo_id: str  # owner/repo
    filename: str  # the path inside the repository
    revision: str | None = None  # a branch, tag or commit; None: the default branch
    repo_type: str | None = None  # None (a model), "dataset" or "space"


def parse_hf(source: str) -> HfPath:
    """Read an ``hf://`` path (its ``#sha256=`` fragment already removed); :class:`HubError` if malformed."""
    rest = source[len("hf://"):] if source.lower().startswith("hf://") else source
    parts = rest.split("/")
    kinds = {"datasets": "dataset", "spaces": "space", "models": None}  # hf://datasets/owner/repo/…
    repo_type = kinds[parts.pop(0)] if parts[0] in kinds else None
    if len(parts) < 3 or not all(parts):
        raise HubError(source, "not an hf:// file path",
                       "write hf://OWNER/REPO/PATH/TO/FILE.pt, optionally ending @REVISION")
    owner, repo, path = parts[0], parts[1], "/".join(parts[2:])
    revision = None
    if "@" in repo:  # hf://owner/repo@rev/path
        repo, revision = repo.split("@", 1)
    elif "@" in path:  # hf://owner/repo/path@rev
        path, revision = path.rsplit("@", 1)
    if not repo or not path or revision == "":
        raise HubError(source, "not an hf:// file path",
                       "write hf://OWNER/REPO/PATH/TO/FILE.pt, optionally ending @REVISION")
    return HfPath(f"{owner}/{repo}", path, revision, repo_type)


def url_cache_path(url: str) -> Path:
    """Where the URL's file is kept: ``url/<16 hex digits of the URL>/<its file name>`` under :func:`cache_dir`."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]))
    return cache_dir() / "url" / key / (name.lstrip(".") or "download")


def fetch(source: str | Path, progress: bool = True) -> Path:
    """The local file ``source`` names: a local path as it is; a URL or hf:// path downloaded (once) into
    the cache. Raises :class:`HubError` for a download that fails or does not match its ``#sha256=``."""
    if not is_remote(source):
        return Path(source)
    base, expected = split_digest(str(source))
    if base.lower().startswith("hf://"):
        path = _fetch_hf(str(source), parse_hf(base))
        if expected and file_sha256(path) != expected:
            raise HubError(str(source), f"the file's SHA-256 is {file_sha256(path)}, not the {expected} "
                           "its #sha256= pins", "check the digest and the revision (pin a commit: @COMMIT)")
        return path
    return _fetch_url(str(source), base, expected, progress)


def forget(source: str) -> None:
    """Delete the cached copy of a URL or hf:// file (nothing happens for a local path or an absent copy)."""
    if not is_remote(source):
        return
    base, _ = split_digest(source)
    if base.lower().startswith("hf://"):
        try:
            link = Path(_fetch_hf(source, parse_hf(base), local_only=True))
        except HubError:
            return
        blob = link.resolve()
        link.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
    else:
        url_cache_path(base).unlink(missing_ok=True)


def _fetch_url(source: str, url: str, expected: str | None, progress: bool) -> Path:
    from filelock import FileLock

    dest = url_cache_path(url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HubError(source, f"cannot create the download cache {dest.parent} ({e.strerror or e})",
                       "set XDG_CACHE_HOME to a writable folder") from None
    with FileLock(str(dest.with_name(dest.name + ".lock"))):  # one download per URL, whoever asks
        if dest.is_file():
            if expected is None or file_sha256(dest) == expected:
                return dest
            dest.unlink()  # fetched before the pin (or under another one): fetch again, then check
        _download(source, url, dest, expected, progress)
    return dest


def _download(source: str, url: str, dest: Path, expected: str | None, progress: bool) -> None:
    """``url`` → ``dest`` through a temporary file, its SHA-256 checked against ``expected`` before the rename."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    from speechkit import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"speechkit/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        fix = "check the URL: there is no file at that address" if e.code in (404, 410) else "check the URL"
        raise HubError(source, f"download failed: HTTP {e.code} {e.reason}", fix) from None
    except (urllib.error.URLError, OSError, ValueError) as e:  # refused, no route, no such host, timed out
        reason = getattr(e, "reason", None) or e
        raise HubError(source, f"cannot reach {urlsplit(url).netloc or url} ({reason})",
                       "check the URL and the network connection") from None
    size = response.headers.get("Content-Length")
    size = int(size) if size and size.isdigit() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest, got = hashlib.sha256(), 0
    try:
        with response, os.fdopen(fd, "wb") as f, tqdm(
            total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {dest.name}",
            disable=not progress or (size is not None and size < PROGRESS_MIN_BYTES), mininterval=1.0,
        ) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except OSError as e:  # reset, timed out mid-file
                raise HubError(source, f"the download broke off after {got:,} bytes ({e})", "try again") from None
            f.flush()
            os.fsync(f.fileno())
        if size is not None and got != size:
            raise HubError(source, f"the download ended after {got:,} of {size:,} bytes", "try again")
        if expected is not None and digest.hexdigest() != expected:
            raise HubError(source, f"the downloaded file's SHA-256 is {digest.hexdigest()}, not the {expected} "
                           "its #sha256= pins; the download was deleted",
                           "check the digest, or the URL: the file there is not the one pinned")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fetch_hf(source: str, where: HfPath, local_only: bool = False) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError
    except ImportError:
        raise HubError(source, "hf:// paths need the huggingface_hub package, which is not installed",
                       HUB_FIX) from None
    from speechkit import __version__

    try:
        path = hf_hub_download(
            where.repo_id, where.filename, revision=where.revision, repo_type=where.repo_type,
            cache_dir=cache_dir() / "huggingface", library_name="speechkit", library_version=__version__,
            local_files_only=local_only, endpoint=os.environ.get("HF_ENDPOINT") or None,  # read now, not at import
        )
    except (OSError, ValueError, EntryNotFoundError) as e:  # no such repo, file or revision; offline; bad id
        detail = " ".join(str(e).split())
        raise HubError(source, f"download failed ({type(e).__name__}: {detail[:300]})",
                       "check the repository, the path in it and the revision (and HF_TOKEN for a private one)"
                       ) from None
    return Path(path)
