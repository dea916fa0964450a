"""core.data.download against a loopback HTTP server: resume, size/checksum checks, zip slip, no network."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest

from core.data import DownloadError, download_inaturalist, fetch, safe_extract


def _dataset_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for split in ("train", "val"):
            for cls in ("Aves", "Fungi"):
                for i in range(3):  # incompressible payload so the zip is large enough to cut in half
                    zf.writestr(f"inaturalist_12K/{split}/{cls}/{i}.jpg", hashlib.sha512(f"{split}{cls}{i}".encode())
                                .digest() * 64)
        zf.writestr("__MACOSX/inaturalist_12K/._junk", b"resource fork")
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload``; honours Range unless told not to; can cut the first transfer short and
    leave out Content-Length (then a cut transfer and a whole one look alike to the client)."""

    timeout = 5  # a stuck client never holds the test

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        if self.path != "/nature_12K.zip":
            self.send_error(404, "no such file")
            return
        data, start = srv.payload, 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):  # asked for the bytes after the end
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if srv.send_length:  # else the body ends when the connection closes (HTTP/1.0, as this handler speaks)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_next:
            srv.cut_next = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.payload, srv.requests, srv.honour_range, srv.cut_next = _dataset_zip(), [], True, False
    srv.send_length = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/nature_12K.zip"


def test_download_extract_and_reuse(server, tmp_path):
    root = download_inaturalist(tmp_path / "data", url=_url(server),
                                sha256=hashlib.sha256(server.payload).hexdigest())
    assert root == tmp_path / "data" / "inaturalist_12K"
    assert sorted(p.name for p in (root / "train").iterdir()) == ["Aves", "Fungi"]
    assert len(list(root.rglob("*.jpg"))) == 12
    assert not (tmp_path / "data" / "__MACOSX").exists(), "macOS resource forks must not be extracted"
    assert (tmp_path / "data" / "nature_12K.zip").read_bytes() == server.payload
    before = len(server.requests)
    assert download_inaturalist(tmp_path / "data", url=_url(server)) == root
    assert len(server.requests) == before, "an extracted dataset must not be fetched again"


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.cut_next = True
    dest = tmp_path / "nature_12K.zip"
    with pytest.raises(DownloadError, match="incomplete.*run the same command again to resume"):
        fetch(_url(server), dest, timeout=5)
    part = dest.with_name("nature_12K.zip.part")
    half = part.stat().st_size
    assert 0 < half < len(server.payload), f"partial file has {half} bytes"
    fetch(_url(server), dest, timeout=5, sha256=hashlib.sha256(server.payload).hexdigest())
    assert server.requests == [None, f"bytes={half}-"], f"second request must resume: {server.requests}"
    assert dest.read_bytes() == server.payload and not part.exists()


def test_cut_without_content_length_is_continued_with_range_never_promoted(server, tmp_path):
    server.send_length, server.cut_next = False, True
    dest = tmp_path / "nature_12K.zip"
    fetch(_url(server), dest, timeout=5, sha256=hashlib.sha256(server.payload).hexdigest())
    half = (len(server.payload)) // 2
    assert server.requests[:2] == [None, f"bytes={half}-"], f"the cut must be followed by a Range: {server.requests}"
    assert server.requests[2:] == [f"bytes={len(server.payload)}-"], "then a probe past the end (answered 416)"
    assert dest.read_bytes() == server.payload, "the file is whole: the first half and the resumed rest"


def test_cut_without_content_length_or_range_is_detected_by_the_zip_directory(server, tmp_path):
    server.send_length, server.cut_next, server.honour_range = False, True, False
    dest = tmp_path / "nature_12K.zip"
    with pytest.raises(DownloadError, match="without a zip directory.*run the same command again to resume"):
        fetch(_url(server), dest, timeout=5)
    part = dest.with_name("nature_12K.zip.part")
    assert not dest.exists(), "a cut download must never be promoted to the zip"
    assert part.stat().st_size == len(server.payload) // 2, "the partial file is kept for the next try"
    with pytest.raises(zipfile.BadZipFile):  # the oracle: Python's own zip reader refuses the cut file
        zipfile.ZipFile(part)
    fetch(_url(server), dest, timeout=5)  # next try: the server sends the whole file (no cut this time)
    assert dest.read_bytes() == server.payload and not part.exists()


def test_a_cut_zip_left_by_an_older_version_is_resumed_not_trusted(server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    half = len(server.payload) // 2
    (data / "nature_12K.zip").write_bytes(server.payload[:half])
    root = download_inaturalist(data, url=_url(server), timeout=5)
    assert server.requests[0] == f"bytes={half}-", f"resumed from the cut zip's size: {server.requests}"
    assert (data / "nature_12K.zip").read_bytes() == server.payload and (root / "train" / "Aves").is_dir()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "nature_12K.zip"
    dest.with_name(dest.name + ".part").write_bytes(b"stale bytes from another file")
    fetch(_url(server), dest, timeout=5)
    assert dest.read_bytes() == server.payload, "a 200 reply to a Range request must overwrite the .part"


def test_checksum_mismatch_deletes_the_file(server, tmp_path):
    dest = tmp_path / "nature_12K.zip"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(_url(server), dest, timeout=5, sha256="0" * 64)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(_url(server).replace("nature_12K", "missing"), tmp_path / "x.zip", timeout=5)


def test_no_network_fails_fast_with_manual_instructions(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_inaturalist(tmp_path / "data", url=f"http://127.0.0.1:{port}/nature_12K.zip", timeout=2)
    assert time.monotonic() - start < 5, "an unreachable server must fail within seconds"
    message = str(info.value)
    assert "by hand" in message and "inaturalist_12K/train/<Class>" in message, message
    assert str(tmp_path / "data" / "nature_12K.zip") in message


@pytest.mark.parametrize("name, why", [("../evil.txt", "'..'"), ("/abs/evil.txt", "absolute"),
                                       ("ok/../../evil.txt", "'..'"), ("C:/evil.txt", "absolute")])
def test_zip_slip_is_refused_before_writing_anything(tmp_path, name, why):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inaturalist_12K/train/a.jpg", b"fine")
        zf.writestr(name, b"pwned")
    dest = tmp_path / "out" / "deeper"
    with pytest.raises(ValueError, match=f"refusing to extract.*{why}"):
        safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.iterdir()), "nothing may be written from a malicious archive"
    assert not list(tmp_path.rglob("evil.txt"))


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("inaturalist_12K/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def test_archive_without_dataset_layout_is_explained(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("something/else.txt", b"x")
    server.payload = buf.getvalue()
    with pytest.raises(DownloadError, match="did not contain a train/ \\+ val/ folder"):
        download_inaturalist(tmp_path / "d", url=_url(server), timeout=5)


def test_existing_zip_is_checked_and_extracted_without_fetching(server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Path(data / "nature_12K.zip").write_bytes(server.payload)
    with pytest.raises(DownloadError, match="expected 00"):
        download_inaturalist(data, url=_url(server), sha256="0" * 64)
    root = download_inaturalist(data, url=_url(server))
    assert (root / "val" / "Fungi" / "2.jpg").is_file() and server.requests == []
