"""`python -m bench raft [options]`: see `bench.raft_http` for what is measured."""

from __future__ import annotations

import argparse
import sys

from bench import raft_http


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    raft = sub.add_parser(
        "raft", help="3-node stack vs 3-member etcd: writes over HTTP, start-up, failover"
    )
    raft_http.add_arguments(raft)
    args = parser.parse_args(argv)
    if args.bench == "raft":
        return raft_http.main(args)
    parser.error(f"unknown benchmark {args.bench}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
