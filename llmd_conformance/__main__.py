"""`python -m llmd_conformance COMMAND`: what the harness offers outside a pytest run.

    discover   read a live deployment and print its topology (llmd_conformance/discover.py)
"""
from __future__ import annotations

import argparse
import sys

from llmd_conformance import discover


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmd_conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    discover.add_parser(commands)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
