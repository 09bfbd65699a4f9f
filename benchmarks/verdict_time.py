"""Requests and seconds the routing check needs to reach its verdict on a gateway URL.

    python -m benchmarks.verdict_time --url http://127.77.0.1:80 \
        --model google/gemma-2b-it --model microsoft/Phi-3-mini-4k-instruct --runs 3

Each run draws a fresh mix (seed printed) over the given models (equal weights) plus the unknown
share, sends it batch by batch like the suite and stops at the same sequential verdict. A healthy
deployment shows the full request count; a misrouting one how early it is caught.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys

from llmd_conformance.mixes import draw_mix
from llmd_conformance.traffic import TrafficDriver
from llmd_conformance.verdict import METHODS, WILSON, Criteria, RoutingRun, SequentialTest, batch_size_for, measure_routing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.77.0.1:80")
    parser.add_argument("--model", action="append", required=True,
                        help="a served model id (repeat for each model)")
    parser.add_argument("--requests", type=int, default=300, help="planned requests (default 300)")
    parser.add_argument("--threshold", type=float, default=0.98, help="accuracy lower bound to reach (default 0.98)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence (default 0.95)")
    parser.add_argument("--max-misroutes", type=int, default=0, help="misroutes allowed (default 0)")
    parser.add_argument("--bound", choices=METHODS, default=WILSON, help="confidence bound (default wilson)")
    parser.add_argument("--unknown-share", type=float, default=0.05,
                        help="share of requests naming no served model (default 0.05)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument("--runs", type=int, default=1, help="independent runs (default 1)")
    parser.add_argument("--mix-seed", type=int, default=None, help="seed of the first run's mix (default random)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be >= 1")
    if not 0 <= args.unknown_share < 1:
        parser.error(f"--unknown-share must be in [0, 1), got {args.unknown_share}")
    try:
        args.criteria = Criteria(args.requests, args.max_misroutes, args.threshold, args.confidence, args.bound)
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def one_run(args: argparse.Namespace, mix_seed: int) -> RoutingRun:
    mix = draw_mix({model: 1.0 for model in args.model}, args.unknown_share, args.requests, mix_seed)
    batch = batch_size_for(args.concurrency)
    async with TrafficDriver(args.url, concurrency=args.concurrency, timeout=args.timeout) as driver:
        return await measure_routing(driver, mix, SequentialTest(args.criteria, batch), batch_size=batch)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    first_seed = args.mix_seed if args.mix_seed is not None else random.SystemRandom().randrange(2**32)
    sent, seconds = [], []
    for i in range(args.runs):
        seed = first_seed + i
        run = asyncio.run(one_run(args, seed))
        sent.append(run.decision.tally.trials)
        seconds.append(run.seconds)
        print(f"run {i + 1} (mix seed {seed}): {run.decision.tally.trials} requests, {run.seconds:.2f} s -> "
              f"{run.decision.headline()}")
    if args.runs > 1:
        print(f"median: {statistics.median(sent):g} requests, {statistics.median(seconds):.2f} s to a verdict "
              f"over {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
