"""ensure_file against a real local HTTP server: checksums, atomic writes, offline message."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest

from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.fetch import ensure_file

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
WRONG_MD5 = "0" * 32


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/archive.tar.gz":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.tar.gz":
            # Promise the full payload, send a tenth of it, then hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 10])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_with_good_checksum(server, tmp_path):
    dest = tmp_path / "res"
    path = ensure_file("a.tar.gz", f"{server}/archive.tar.gz", PAYLOAD_MD5, dest, True)
    assert path == (dest / "a.tar.gz").resolve()
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["a.tar.gz"]  # no temporary file left


def test_download_with_bad_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        ensure_file("a.tar.gz", f"{server}/archive.tar.gz", WRONG_MD5, tmp_path, True)
    msg = str(err.value)
    assert "a.tar.gz" in msg and WRONG_MD5 in msg and PAYLOAD_MD5 in msg
    assert "verify_checksums" in msg
    assert list(tmp_path.iterdir()) == []


def test_bad_checksum_accepted_when_verification_off(server, tmp_path):
    path = ensure_file("a.tar.gz", f"{server}/archive.tar.gz", WRONG_MD5, tmp_path, False)
    assert path.read_bytes() == PAYLOAD


def test_truncated_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(DatasetUnavailable, match="a.tar.gz"):
        ensure_file("a.tar.gz", f"{server}/truncated.tar.gz", PAYLOAD_MD5, tmp_path, True)
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(server, tmp_path):
    with pytest.raises(DatasetUnavailable, match="404"):
        ensure_file("a.tar.gz", f"{server}/missing", PAYLOAD_MD5, tmp_path, True)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_names_file_folder_and_url(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/x"
    dest = tmp_path / "offline"
    with pytest.raises(DatasetUnavailable) as err:
        ensure_file("cifar-100-python.tar.gz", url, PAYLOAD_MD5, dest, True)
    msg = str(err.value)
    assert "cifar-100-python.tar.gz" in msg
    assert str(dest.resolve()) in msg
    assert url in msg
    assert list(dest.iterdir()) == []


def test_present_file_is_checked_not_downloaded(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/x"  # would fail if contacted
    (tmp_path / "a.tar.gz").write_bytes(PAYLOAD)
    assert ensure_file("a.tar.gz", url, PAYLOAD_MD5, tmp_path, True).read_bytes() == PAYLOAD


def test_present_file_with_wrong_checksum(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/x"
    (tmp_path / "a.tar.gz").write_bytes(PAYLOAD[:-1])
    with pytest.raises(DatasetUnavailable) as err:
        ensure_file("a.tar.gz", url, PAYLOAD_MD5, tmp_path, True)
    msg = str(err.value)
    assert "a.tar.gz" in msg and PAYLOAD_MD5 in msg and hashlib.md5(PAYLOAD[:-1]).hexdigest() in msg
    assert "verify_checksums" in msg
    # With verification off the (private-mirror) file is used as it is.
    assert ensure_file("a.tar.gz", url, PAYLOAD_MD5, tmp_path, False).read_bytes() == PAYLOAD[:-1]
