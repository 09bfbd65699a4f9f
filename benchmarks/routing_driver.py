"""Requests per second of the routing check's driver against a gateway URL, beside `wrk` on the
same URL in the same run (a C load generator: the ceiling the URL allows at that concurrency).

    python -m benchmarks.routing_driver --url http://127.77.0.1:80 --model google/gemma-2b-it

Both send the same non-streamed /v1/completions body. The driver's figure counts every answer;
its outcome classes are printed so that a fast run of errors is not mistaken for throughput.
Without wrk on PATH the wrk half is skipped with a message (Debian: apt-get install wrk).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from llmd_conformance.mixes import COMPLETIONS, RequestSpec
from llmd_conformance.traffic import TrafficDriver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.77.0.1:80")
    parser.add_argument("--model", required=True, help="model id to name in every request")
    parser.add_argument("--requests", type=int, default=2000, help="driver requests (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests / connections in flight (default 8)")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each request (default 8)")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="duration of the wrk run (default 10)")
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "max_tokens", "wrk_seconds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def request_spec(args: argparse.Namespace) -> RequestSpec:
    return RequestSpec(model=args.model, endpoint=COMPLETIONS, stream=False, prompt="Say hello.",
                       max_tokens=args.max_tokens, temperature=0.0, known=True)


async def driver_rate(args: argparse.Namespace) -> tuple[float, Counter]:
    spec = request_spec(args)
    async with TrafficDriver(args.url, concurrency=args.concurrency) as driver:
        await driver.send_all([spec] * args.concurrency)  # open the keep-alive connections first
        started = time.perf_counter()
        results = await driver.send_all([spec] * args.requests)
        elapsed = time.perf_counter() - started
    return args.requests / elapsed, Counter(r.outcome.value for r in results)


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""


def wrk_rate(args: argparse.Namespace) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk: not installed, skipped (Debian: apt-get install wrk)")
        return None
    body = json.dumps(request_spec(args).body())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(body)))
    try:
        run = subprocess.run([wrk, "-t", "1", "-c", str(args.concurrency), "-d", f"{args.wrk_seconds}s",
                              "-s", script.name, args.url.rstrip("/") + COMPLETIONS],
                             capture_output=True, text=True, check=False)
    finally:
        Path(script.name).unlink()
    match = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    if run.returncode != 0 or match is None:
        print(f"wrk: failed (exit {run.returncode}): {(run.stderr or run.stdout).strip()[:300]}")
        return None
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", run.stdout)
    print(f"wrk: {float(match.group(1)):.0f} requests/s over {args.wrk_seconds} s"
          + (f" ({non_2xx.group(1)} non-2xx answers)" if non_2xx else ""))
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rate, outcomes = asyncio.run(driver_rate(args))
    print(f"driver: {rate:.0f} requests/s ({args.requests} requests, concurrency {args.concurrency}; "
          f"answers: {', '.join(f'{k} {n}' for k, n in sorted(outcomes.items()))})")
    reference = wrk_rate(args)
    if reference:
        print(f"driver / wrk: {rate / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
