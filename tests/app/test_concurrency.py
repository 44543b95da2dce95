"""A bounded burst through the Gradio API: every request answered, server up, memory bounded."""

import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from geostrata.app import AppLimits, build_app, demo_samples, launch_app

BURST, PARALLEL = 16, 4
TURNS = 2  # one client session: its conversation about the one image keeps growing, bounded
RSS_GROWTH_LIMIT_MB = 400  # generous: the model is ~tens of MB; a leak per request would exceed it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(loaded, data_dir):
    samples = demo_samples(data_dir, count=2)
    limits = AppLimits(max_new_tokens=3, concurrency=2, queue_size=BURST, max_turns=TURNS)
    blocks = build_app(loaded, samples, limits)
    port = free_port()
    launch_app(blocks, limits, samples, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    blocks.close()


def test_burst_is_answered_and_server_survives(served, sample_png):
    import httpx
    import psutil
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=False)  # the drawn image stays a URL
    process = psutil.Process()

    def ask(i: int) -> tuple[float, tuple]:
        t0 = time.perf_counter()
        out = client.predict(
            handle_file(str(sample_png)), f"Is there a ship? ({i})", "", api_name="/ask"
        )
        return time.perf_counter() - t0, out

    ask(-1)  # warm-up: first request pays lazy initialisation
    rss_before = process.memory_info().rss / 2**20
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(ask, range(BURST)))
    rss_after = process.memory_info().rss / 2**20
    latencies = sorted(t for t, _ in results)
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\nburst {BURST} requests, {PARALLEL} at a time: p50 {p50:.2f}s p95 {p95:.2f}s; "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MB"
    )
    for i, (_, (chat, cues, _router, _classes, error, image, _boxes)) in enumerate(results):
        assert not error, error
        asked = chat[-2]["content"]  # the client's conversation ends with this turn
        assert [part["text"] for part in asked] == [f"Is there a ship? ({i})"]
        assert 2 <= len(chat) <= 2 * TURNS  # the session's turns, bounded
        assert cues["data"] and image  # answered, with cues and the image
    assert httpx.get(served, timeout=10).status_code == 200  # still serving
    client.predict(handle_file(str(sample_png)), api_name="/clear")  # the session starts over
    chat = ask(BURST)[1][0]
    assert [[part["text"] for part in m["content"]] for m in chat][0] == [
        f"Is there a ship? ({BURST})"
    ]
    assert len(chat) == 2
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MB
