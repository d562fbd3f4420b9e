"""How many requests `gpt-spam serve` answers, with and without batching.

    python benchmarks/serve.py                         (a gpt2-small classifier, random weights)
    python benchmarks/serve.py --run-dir runs/20261125-101500 --clients 1,8,64

The server runs as a user starts it (``gpt-spam serve --port 0``), twice: as it is, where
requests that arrive together are classified together, and with ``--max-batch 1``, one
request at a time. For each number of clients, that many clients send one-message
requests (SMS-like messages), each waiting for its answer before sending the next, until
``--requests`` are answered (at least 4 per client); the figures are requests per
second, the median (p50) and 99th-percentile (p99) latency, how many forward passes the
model made for them (a figure no other load on the machine changes), the 503s (none
expected: the queue holds 64 requests) and failures, the machine's load average (other
work slows every figure but the passes), and at the end each server's peak memory (its
resident set's high-water mark, from /proc). The clients run in this process, on the
same CPUs as the server: on a small machine they take a share of it.

Without ``--run-dir``, a gpt2-small classifier with random weights is written (a lean
run, its base rebuilt from its seed when loaded): it classifies as fast as a trained one.
Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script: benchmarks/ is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, gpt_spam, load_average, say

MESSAGES = [
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward!",
    "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
    "URGENT! Your mobile number has been awarded a 2000 bonus caller prize. Call 09061701461",
    "Sorry, I'll call later",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121",
    "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight",
    "Lunch at 1?",
    "Had your mobile 11 months or more? U R entitled to Update to the latest colour mobiles",
]
START_SECONDS = 300  # loading PyTorch and gpt2-small on a busy machine


def random_run(folder: Path) -> Path:
    """A lean gpt2-small classifier run from random weights (seed 123), last block trained."""
    from ch06_classification.finetuning.model import build_classifier, trained_parameter_names
    from ch06_classification.storage.base_weights import describe_random
    from ch06_classification.storage.checkpoint import ClassifierInfo, save_checkpoint_folder

    model = build_classifier("gpt2-small", weights="random", seed=123)
    trained = trained_parameter_names(model, "last_block")
    info = ClassifierInfo(
        config=model.cfg,
        max_length=120,  # about the longest SMS of the collection, as training would cut
        weights="random",
        stored="trained",
        base=describe_random("gpt2-small", 123, model, trained),
    )
    return save_checkpoint_folder(model, info, folder)


class Server:
    """`gpt-spam serve ARGS --port 0` in a process of its own, until ``stop``."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            gpt_spam("serve", "--port", "0", *args),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stderr:
                self.lines.append(line)
                if " at http://" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_SECONDS):
            self.stop()
            raise SystemExit("the server did not start:\n" + "".join(self.lines))
        self.url = re.search(r"at (http://\S+/)", "".join(self.lines))[1]

    def peak_memory(self) -> int | None:
        """The server's peak resident memory in bytes (Linux: VmHWM), while it runs."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(found[1]) * 1024 if found else None

    def stop(self) -> None:
        self.process.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def measure(url: str, clients: int, requests: int) -> dict[str, float]:
    """``requests`` one-message requests from ``clients`` clients at once."""
    import httpx

    latencies: list[float] = []
    busy = failed = sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:

        async def one_client(number: int) -> None:
            nonlocal busy, failed, sent
            while sent < requests:
                sent += 1
                text = MESSAGES[(number + sent) % len(MESSAGES)]
                start = time.perf_counter()
                try:
                    response = await client.post("classify", json={"texts": [text]})
                except httpx.HTTPError:  # counted, and the server's log shown at the end
                    failed += 1
                    continue
                if response.status_code == 503:
                    busy += 1
                elif response.status_code != 200:
                    failed += 1
                else:
                    latencies.append(time.perf_counter() - start)

        for _ in range(2):  # warm up: the first batches allocate what the later ones reuse
            await client.post("classify", json={"texts": MESSAGES[:1]})
        batches = (await client.get("health")).json()["batches"]
        start = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        seconds = time.perf_counter() - start
        batches = (await client.get("health")).json()["batches"] - batches
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "busy": busy,
        "failed": failed,
        "batches": batches,  # forward passes: the model's calls, whatever the machine
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a trained run (default: gpt2-small, random)")
    parser.add_argument("--clients", default="1,8,64", help="numbers of clients (default: 1,8,64)")
    parser.add_argument("--requests", type=int, default=64, help="per measurement, at least")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or random_run(Path(scratch) / "run")
        say(f"gpt-spam serve on {run_dir}; load average {load_average()}, {os.cpu_count()} CPUs")
        say(
            f"{'clients':>7}  {'mode':<14} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'passes':>6} {'503s':>5} {'failed':>6} {'load':>5}"
        )
        for mode, extra in (("batched", []), ("one at a time", ["--max-batch", "1"])):
            server = Server("--run-dir", str(run_dir), "--device", args.device, *extra)
            try:
                for clients in counts:
                    requests = max(args.requests, 4 * clients)
                    figures = asyncio.run(measure(server.url, clients, requests))
                    say(
                        f"{clients:>7}  {mode:<14} {figures['rps']:>7.1f} "
                        f"{1000 * figures['p50']:>8.1f} {1000 * figures['p99']:>8.1f} "
                        f"{figures['batches']:>6} {figures['busy']:>5} {figures['failed']:>6} "
                        f"{load_average():>5}"
                    )
                    if figures["failed"]:
                        say("".join(server.lines[-20:]))
                peak = server.peak_memory()
            finally:
                server.stop()
            if peak is not None:
                say(f"         peak memory of the server ({mode}): {peak / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
