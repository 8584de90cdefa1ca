"""Checkpoints from URLs and hf:// paths (speechkit/hub.py), against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
import time
from collections import Counter

import pytest

from speechkit import load_checkpoint
from speechkit.checkpoint import CheckpointError, model_payload, read_checkpoint, save_checkpoint
from speechkit.hub import HfPath, HubError, cache_dir, fetch, parse_hf, url_cache_path
from speechkit.info import main as info_main


class Server:
    """Serves ``files`` (URL path → bytes) with the headers a Hugging Face Hub resolve URL sends too,
    counts GET requests per path, and waits ``delay`` seconds before answering one."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gets: Counter[str] = Counter()
        self.delay = 0.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                data = server.files.get(self.path)
                if body:
                    server.gets[self.path] += 1
                    time.sleep(server.delay)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", "c" * 40)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def _server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory) -> bytes:
    from hydra import compose, initialize_config_dir

    from speechkit.config import CONF_DIR, store_schemas
    from speechkit.pipeline import CTCModel

    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1", "run_name=hubtest"])
    tokens = ["<blank>", " ", "a", "b"]
    path = tmp_path_factory.mktemp("hub") / "model.pt"
    payload = model_payload(cfg, tokens, CTCModel.from_config(cfg, len(tokens)))
    save_checkpoint(path, {**payload, "card": {"card_version": 1, "name": "hubtest"}})
    return path.read_bytes()


@pytest.fixture
def server(_server, ckpt_bytes, tmp_path, monkeypatch):
    """The server with ``/models/model.pt`` and a fresh, private download cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _server.files.clear()
    _server.gets.clear()
    _server.delay = 0.0
    _server.files["/models/model.pt"] = ckpt_bytes
    return _server


def test_a_url_loads_and_a_second_load_reads_the_cached_copy_without_a_request(server, ckpt_bytes):
    url = f"{server.url}/models/model.pt"
    pipe = load_checkpoint(url)
    assert pipe.tokenizer.tokens == ["<blank>", " ", "a", "b"]
    cached = url_cache_path(url)
    assert cached.parent.parent == cache_dir() / "url" and cached.name == "model.pt"
    assert cached.read_bytes() == ckpt_bytes
    load_checkpoint(url)
    assert read_checkpoint(url)["card"]["name"] == "hubtest"
    assert server.gets["/models/model.pt"] == 1
    assert sorted(p.name for p in cached.parent.iterdir()) == ["model.pt", "model.pt.lock"]  # no .part left


def test_two_fetches_of_one_url_at_once_download_it_once(server, ckpt_bytes):
    """Threads here; the lock is the OS's (flock on an open file), so separate processes alike."""
    server.delay = 0.5  # both ask while the first download is under way
    url = f"{server.url}/models/model.pt"
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(fetch(url).read_bytes())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [ckpt_bytes, ckpt_bytes] and server.gets["/models/model.pt"] == 1


def test_a_pinned_digest_is_checked_and_a_mismatch_refused_and_deleted(server, ckpt_bytes):
    good = hashlib.sha256(ckpt_bytes).hexdigest()
    url = f"{server.url}/models/model.pt"
    assert load_checkpoint(f"{url}#sha256={good.upper()}").tokenizer.tokens[2] == "a"
    bad = "0" * 64
    url_cache_path(url).unlink()
    with pytest.raises(CheckpointError, match=f"SHA-256 is {good}, not the {bad} its #sha256= pins"):
        read_checkpoint(f"{url}#sha256={bad}")
    assert not url_cache_path(url).exists()
    assert [p.name for p in url_cache_path(url).parent.iterdir()] == ["model.pt.lock"]  # nor a .part file
    with pytest.raises(CheckpointError, match="not #sha256=<64 hex digits>"):
        read_checkpoint(f"{url}#md5=abc")


def test_a_cached_copy_that_does_not_match_a_new_pin_is_fetched_again(server, ckpt_bytes):
    url = f"{server.url}/models/model.pt"
    fetch(url)
    server.files["/models/model.pt"] = changed = ckpt_bytes + b"\0"  # the file at the URL was replaced
    assert fetch(f"{url}#sha256={hashlib.sha256(changed).hexdigest()}").read_bytes() == changed
    assert server.gets["/models/model.pt"] == 2


def test_a_missing_file_is_one_clear_error(server, capsys):
    url = f"{server.url}/models/nope.pt"
    with pytest.raises(CheckpointError, match=r"nope.pt: download failed: HTTP 404 .* no file at that address"):
        load_checkpoint(url)
    with pytest.raises(SystemExit) as e:  # and on the command line, one error line
        info_main([f"checkpoint={url}"])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(err) == 2 and err[1].startswith(f"error: {url}: download failed: HTTP 404")
    assert not url_cache_path(url).exists()


def test_an_unreachable_host_is_one_clear_error(server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.pt"
    with pytest.raises(CheckpointError, match=f"cannot reach 127.0.0.1:{port} .*check the URL and the network"):
        load_checkpoint(url)


def test_a_damaged_download_is_deleted_so_the_next_load_fetches_it_again(server, ckpt_bytes):
    server.files["/models/model.pt"] = ckpt_bytes[: len(ckpt_bytes) // 2]
    url = f"{server.url}/models/model.pt"
    with pytest.raises(CheckpointError, match=f"^{url}: truncated or corrupt .*downloaded copy was deleted"):
        load_checkpoint(url)
    assert not url_cache_path(url).exists()
    server.files["/models/model.pt"] = ckpt_bytes
    load_checkpoint(url)
    assert server.gets["/models/model.pt"] == 2


def test_a_local_path_is_itself_and_never_fetched(tmp_path):
    assert fetch(str(tmp_path / "x.pt")) == tmp_path / "x.pt"
    assert fetch(tmp_path / "https:" / "x.pt") == tmp_path / "https:" / "x.pt"  # a Path is always local


def test_the_cache_lives_under_xdg_cache_home_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "speechkit" / "hub"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "speechkit" / "hub"


@pytest.mark.parametrize("source, expected", [
    ("hf://owner/repo/model.pt", HfPath("owner/repo", "model.pt")),
    ("hf://owner/repo/dir/sub/model.pt@v1.0", HfPath("owner/repo", "dir/sub/model.pt", "v1.0")),
    ("hf://owner/repo@" + "a" * 40 + "/model.pt", HfPath("owner/repo", "model.pt", "a" * 40)),
    ("hf://datasets/owner/corpus/lm.pt@main", HfPath("owner/corpus", "lm.pt", "main", "dataset")),
])
def test_hf_paths_parse_into_repository_file_and_revision(source, expected):
    assert parse_hf(source) == expected


@pytest.mark.parametrize("source", ["hf://owner/model.pt", "hf://owner/repo/", "hf://owner/repo/model.pt@"])
def test_an_hf_path_without_a_file_is_refused_saying_the_form(source):
    with pytest.raises(HubError, match="not an hf:// file path — write hf://OWNER/REPO/PATH/TO/FILE.pt"):
        parse_hf(source)


def test_hf_paths_without_huggingface_hub_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed: importing it fails
    with pytest.raises(CheckpointError, match=r"need the huggingface_hub package.*pip install speechkit\[hub\]"):
        load_checkpoint("hf://owner/repo/model.pt")


def test_hf_paths_download_through_huggingface_hub(server, ckpt_bytes, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_ENDPOINT", server.url)  # the local server plays the Hub
    server.files["/owner/repo/resolve/main/models/model.pt"] = ckpt_bytes
    server.files["/owner/repo/resolve/v2/models/model.pt"] = ckpt_bytes
    assert load_checkpoint("hf://owner/repo/models/model.pt").tokenizer.tokens[3] == "b"
    path = fetch("hf://owner/repo/models/model.pt@v2")
    assert path.read_bytes() == ckpt_bytes and (cache_dir() / "huggingface") in path.parents
    assert server.gets["/owner/repo/resolve/main/models/model.pt"] == 1  # v2 is the same file: not fetched again
    with pytest.raises(CheckpointError, match="hf://owner/repo/models/missing.pt: download failed"):
        load_checkpoint("hf://owner/repo/models/missing.pt")
    with pytest.raises(CheckpointError, match="not the 0{64} its #sha256= pins"):
        load_checkpoint("hf://owner/repo/models/model.pt#sha256=" + "0" * 64)
