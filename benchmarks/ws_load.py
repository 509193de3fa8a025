"""Command-center WebSocket load: N clients on loopback for T seconds; frame latency, drops, loop pace.

By default it starts `citysignal serve SCENARIO --controller maxpressure --speed SPEED --port 0` itself
(development tokens, a temporary SQLite audit store), lets the twin warm up, then connects the clients
so the stream is measured while the heaviest bundled city runs at the required pace. `--url` (and
`--token`) measure an already running service instead.

Latency of a frame = time it arrived at the client - `sent_at` the server stamped when it built it
(same machine, same clock). Clients read `seq` and `sent_at` from the frame's head and parse the whole
frame only every 10th time: 100 browsers parse in parallel, one load-generator process would not,
and its own parsing queue (0.26 ms per 14 KiB frame x 100) would be measured as latency. A drop is
a gap in a client's frame sequence numbers; a failed or closed connection is counted separately.
Only loopback URLs are accepted. The result replaces the section "## Command-center WebSocket load"
of BENCHMARKS.md.

    .venv/bin/python benchmarks/ws_load.py [--clients 100] [--seconds 60] [--scenario manhattan_28x7] [--speed 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from websockets.asyncio.client import connect

from citysignal.bench.report import update_section

SECTION = "## Command-center WebSocket load"
SERVED = re.compile(r"serving \S+ with \S+ at x\S+ at (http://\S+?)/ ")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HEAD = re.compile(r'\{"seq":(\d+),"sent_at":([0-9.e+-]+),')
FULL_PARSE_EVERY = 10
SLOW_TICK_MS = 50.0


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    frames: int = 0
    drops: int = 0
    bytes: int = 0
    error: str | None = None


async def client(url: str, token: str, until: float, result: ClientResult) -> None:
    ws_url = url.replace("http://", "ws://") + "/api/ws"
    try:
        async with connect(ws_url, max_size=2**24, open_timeout=30) as ws:
            await ws.send(json.dumps({"token": token}))
            hello = json.loads(await ws.recv())
            if hello.get("type") != "hello":
                raise RuntimeError(f"no hello: {hello}")
            last_seq = None
            while time.time() < until:
                try:
                    text = await asyncio.wait_for(ws.recv(), timeout=max(0.1, until - time.time()))
                except TimeoutError:
                    break
                arrived = time.time()
                head = HEAD.match(text)
                if head is None:
                    raise RuntimeError(f"frame without seq/sent_at head: {text[:80]}")
                seq, sent_at = int(head.group(1)), float(head.group(2))
                if result.frames % FULL_PARSE_EVERY == 0:  # check the whole frame now and then
                    frame = json.loads(text)
                    if frame["type"] != "state" or frame["seq"] != seq or not frame["signals"]:
                        raise RuntimeError(f"bad frame {seq}")
                result.latencies.append(arrived - sent_at)
                result.seqs.append(seq)
                result.frames += 1
                result.bytes += len(text)
                if last_seq is not None and seq > last_seq + 1:
                    result.drops += seq - last_seq - 1
                last_seq = seq
    except Exception as exc:  # a benchmark reports failures, it does not stop at the first
        result.error = f"{type(exc).__name__}: {exc}"


async def watch_pace(url: str, token: str, until: float, paces: list[float], times: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        while time.time() < until:
            await asyncio.sleep(5)
            state = (await http.get("/api/state")).json()
            paces.append(float(state.get("pace", 0.0)))
            times.append(float(state.get("time", 0.0)))


async def load(
    url: str, token: str, clients: int, seconds: float
) -> tuple[list[ClientResult], list[float], list[float]]:
    until = time.time() + seconds
    results = [ClientResult() for _ in range(clients)]
    paces: list[float] = []
    times: list[float] = []
    await asyncio.gather(*(client(url, token, until, r) for r in results), watch_pace(url, token, until, paces, times))
    return results, paces, times


def start_service(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / "serve.log"
    cmd = [sys.executable, "-m", "citysignal", "serve", args.scenario, "--controller", args.controller,
           "--speed", str(args.speed), "--port", "0", "--db", f"sqlite:///{workdir / 'audit.db'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSIGNAL_")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited: {log.read_text()}")
        match = SERVED.search(log.read_text())
        if match:
            try:
                if httpx.get(match.group(1) + "/api/health", timeout=2).status_code == 200:
                    return proc, match.group(1)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"service did not start: {log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scenario", default="manhattan_28x7")
    parser.add_argument("--controller", default="maxpressure")
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=30.0, help="Seconds the twin runs before clients connect.")
    parser.add_argument("--url", help="A running service (loopback only); default: start one.")
    parser.add_argument("--token", default="dev-viewer-token")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()

    proc = None
    with tempfile.TemporaryDirectory(prefix="citysignal-wsload-") as tmp:
        if args.url:
            if urlparse(args.url).hostname not in LOOPBACK:
                raise SystemExit("--url must be a loopback address (127.0.0.1, localhost, ::1)")
            url = args.url.rstrip("/")
        else:
            proc, url = start_service(args, Path(tmp))
            time.sleep(args.warmup)
        try:
            started = time.time()
            results, paces, sim_times = asyncio.run(load(url, args.token, args.clients, args.seconds))
            wall = time.time() - started
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    lat = np.array([v for r in results for v in r.latencies]) * 1000.0
    frames = sum(r.frames for r in results)
    drops = sum(r.drops for r in results)
    failed = [r.error for r in results if r.error]
    p50, p95, p99, worst = (np.percentile(lat, [50, 95, 99, 100]) if lat.size else [float("nan")] * 4)
    by_tick: dict[int, list[float]] = {}
    for r in results:
        for seq, value in zip(r.seqs, r.latencies, strict=True):
            by_tick.setdefault(seq, []).append(value * 1000.0)
    tick_medians = [float(np.median(v)) for v in by_tick.values()]
    slow_ticks = sum(m > SLOW_TICK_MS for m in tick_medians)
    mean_kb = sum(r.bytes for r in results) / max(1, frames) / 1024
    pace = f"min x{min(paces):.1f}, mean x{np.mean(paces):.1f}" if paces else "n/a"
    sim_span = f"{sim_times[0]:.0f}-{sim_times[-1]:.0f} s" if sim_times else "n/a"
    command = "python benchmarks/ws_load.py " + " ".join(sys.argv[1:])
    target = args.url or f"citysignal serve {args.scenario} --controller {args.controller} --speed {args.speed:g}"
    body = (
        f"{SECTION}\n\n"
        f"- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average before the run "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (other jobs share the machine)\n"
        f"- command: `{command.strip()}`\n"
        f"- service: `{target}` on loopback, {args.clients} WebSocket clients in one asyncio process for "
        f"{wall:.0f} s, after {0 if args.url else args.warmup:g} s of warm-up; goal p99 < 100 ms, 0 drops\n\n"
        "| clients | frames received | frame size | latency p50 | p95 | p99 | max | dropped frames "
        "| failed connections | loop pace during the load | simulated span |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.clients} | {frames} | {mean_kb:.1f} KiB | {p50:.1f} ms | {p95:.1f} ms | {p99:.1f} ms "
        f"| {worst:.1f} ms | {drops} | {len(failed)} | {pace} (target x{args.speed:g}) | {sim_span} |\n\n"
        "Latency is client arrival minus the server's build time of the frame (one JSON text per second for all "
        "clients: signal state of every intersection, queue level of every observed lane), so it includes the "
        "fan-out to all clients; clients read `seq`/`sent_at` from the frame head and fully parse every "
        f"{FULL_PARSE_EVERY}th frame. Load generator, service and its twin process share the machine's cores.\n\n"
        f"Ticks whose median client latency exceeded {SLOW_TICK_MS:g} ms (the frame left late for everyone, "
        f"i.e. the service process waited for a CPU): {slow_ticks} of {len(tick_medians)}; the slowest tick's "
        f"median: {max(tick_medians, default=float('nan')):.1f} ms.\n"
    )
    update_section(args.out, SECTION, body)
    print(body)
    if failed:
        print("failures:", *sorted(set(failed))[:5], sep="\n  ")


if __name__ == "__main__":
    main()
