"""`python -m llmd_conformance.local down|status`: remove or show the local target of this instance
(LLMD_INSTANCE) that `--keep-target` left up, or anything a killed run left."""
from __future__ import annotations

import sys

from llmd_conformance.local import keeper


def down() -> int:
    """Stop the keeper (it tears its target down), then, under the instance lock, undo what any
    killed run recorded and remove its processes, network and state."""
    from llmd_conformance.local.cluster import ClusterError
    from llmd_conformance.local.target import LocalTargetError, remove_leftovers

    kept = keeper.find()
    if kept is not None:
        kept.stop(print)
    try:
        remove_leftovers(print)
    except (ClusterError, LocalTargetError) as exc:
        print(f"local target: nothing more removed: {exc}", file=sys.stderr)
        return 1
    print(f"local target of instance {keeper.INDEX}: down")
    return 0


def status() -> int:
    kept = keeper.find()
    print(kept.describe() + f"; process logs in {kept.logs_dir}" if kept else
          f"no kept local target for instance {keeper.INDEX}")
    return 0


def main(argv: list[str]) -> int:
    commands = {"down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m llmd_conformance.local {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
