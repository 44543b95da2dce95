"""API load test: `geostrata api` on 127.0.0.1, a steady phase within its limits, then a burst.

Starts the server as a subprocess (so its memory is its own), waits until /v1/models answers,
then sends chat completions with a base64 PNG: first `--requests` at `concurrency + queue_size`
in flight (nothing should be refused: requests/s, p50/p95 latency), then `--burst` at three times
that (the excess must get 429s, at once, and every answer must still be 200 or 429). Bounded: it
stops submitting after `--max-seconds` per phase and always stops the server. Reports the
server's peak RSS (VmHWM). Writes bench/results/api.json.

    .venv/bin/python bench/bench_api.py [--checkpoint DIR] [--requests 60] [--burst 300]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def png_data_url(side: int, seed: int = 0) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def start_server(model: Path, port: int, concurrency: int, queue_size: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "geostrata.cli", "api", str(model), "--host", HOST,
        "--port", str(port), "--concurrency", str(concurrency), "--queue-size", str(queue_size),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, server: subprocess.Popen, seconds: float = 180) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {seconds:.0f} s")


def peak_rss_mb(pid: int) -> float | None:
    """The process's high-water resident set (VmHWM), in MiB; None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def phase(url: str, body: bytes, count: int, parallel: int, max_seconds: float) -> dict:
    """`count` requests, `parallel` in flight; later ones are skipped once time runs out.

    The body is encoded once and connections are reused, so the client (on the same cores)
    takes as little CPU from the server as it can.
    """
    stop_at = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    headers = {"content-type": "application/json"}

    with httpx.Client(limits=limits, timeout=60) as http:

        def one(_: int) -> tuple[int, float] | None:
            if time.perf_counter() > stop_at:
                return None
            t0 = time.perf_counter()
            status = http.post(f"{url}/chat/completions", content=body, headers=headers)
            return status.status_code, time.perf_counter() - t0

        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            done = [r for r in pool.map(one, range(count)) if r is not None]
        wall = time.perf_counter() - start
    ok = sorted(t for status, t in done if status == 200)
    refused = sorted(t for status, t in done if status == 429)
    return {
        "sent": len(done),
        "parallel": parallel,
        "status": dict(Counter(str(status) for status, _ in done)),
        "wall_s": round(wall, 3),
        "ok_per_s": round(len(ok) / wall, 2) if wall else 0.0,
        **percentiles("ok", ok),
        "refused_429": len(refused),
        **percentiles("refused", refused),
    }


def percentiles(name: str, seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {f"{name}_p50_s": None, f"{name}_p95_s": None}
    return {
        f"{name}_p50_s": round(statistics.median(seconds), 4),
        f"{name}_p95_s": round(seconds[int(0.95 * (len(seconds) - 1))], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--image-side", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--out", type=Path, default=Path("bench/results/api.json"))
    args = parser.parse_args()

    from rich.console import Console

    from geostrata.atomic import write_text_atomic
    from geostrata.chat import ensure_checkpoint

    model = ensure_checkpoint(args.checkpoint, Console())
    load_at_start = os.getloadavg()[0]
    port = free_port()
    url = f"http://{HOST}:{port}/v1"
    request = {
        "model": "geostrata",
        "max_tokens": args.max_tokens,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Is there a ship?"},
                    {"type": "image_url", "image_url": {"url": png_data_url(args.image_side)}},
                ],
            }
        ],
    }
    body = json.dumps(request).encode()
    capacity = args.concurrency + args.queue_size
    server = start_server(model, port, args.concurrency, args.queue_size)
    try:
        ready_s = wait_ready(url, server)
        phase(url, body, 3, 1, args.max_seconds)  # warm-up: lazy initialisation
        steady = phase(url, body, args.requests, capacity, args.max_seconds)
        burst = phase(url, body, args.burst, 3 * capacity, args.max_seconds)
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    result = {
        "model": str(model),
        "host": HOST,
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": round(load_at_start, 2),  # other work on the same cores
        "concurrency": args.concurrency,
        "queue_size": args.queue_size,
        "image": f"{args.image_side}x{args.image_side} PNG as a base64 data URL",
        "body_bytes": len(body),
        "max_tokens": args.max_tokens,
        "server_ready_s": round(ready_s, 2),
        "server_peak_rss_mb": rss,
        "steady": steady,
        "burst": burst,
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
