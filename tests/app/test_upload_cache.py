"""Uploads do not pile up: swept while the server runs, the whole cache removed when it stops.

Before: every upload (and every preview image) stayed under /tmp/gradio, 232 MB after about
110 uploads, and all of it after shutdown.
"""

import os
import socket
import tempfile
import time

from geostrata.app import CACHE_PREFIX, AppLimits, build_app, launch_app, private_cache


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_uploads_are_swept_and_the_cache_removed_at_shutdown(tmp_path, monkeypatch):
    import httpx

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # caches go under tmp_path
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    stale = tmp_path / f"{CACHE_PREFIX}{_dead_pid()}-killed"  # a killed server's leftovers
    (stale / "abc").mkdir(parents=True)
    (stale / "abc" / "upload.png").write_bytes(b"x" * 1000)
    live = tmp_path / f"{CACHE_PREFIX}{os.getpid()}-running"  # a running server's: kept
    live.mkdir()
    limits = AppLimits(cache_age_s=1, cache_sweep_s=1)
    with private_cache() as folder:
        assert not stale.exists() and live.exists()
        assert os.environ["GRADIO_TEMP_DIR"] == str(folder)
        blocks = build_app(object(), [], limits, classes=[])
        port = _free_port()
        launch_app(blocks, limits, [], "127.0.0.1", port, block=False)
        try:
            files = [("files", (f"up{i}.png", bytes(2000), "image/png")) for i in range(3)]
            url = f"http://127.0.0.1:{port}/gradio_api/upload"
            reply = httpx.post(url, files=files, timeout=30)
            assert reply.status_code == 200, reply.text
            uploaded = [os.path.realpath(p) for p in reply.json()]
            assert len(uploaded) == 3
            root = os.path.realpath(folder)
            assert all(p.startswith(root) and os.path.isfile(p) for p in uploaded)
            deadline = time.monotonic() + 20
            while any(os.path.exists(p) for p in uploaded) and time.monotonic() < deadline:
                time.sleep(0.25)
            assert not any(os.path.exists(p) for p in uploaded)  # swept once older than 1 s
        finally:
            blocks.close()
    assert not folder.exists()  # nothing left after shutdown
    assert "GRADIO_TEMP_DIR" not in os.environ
