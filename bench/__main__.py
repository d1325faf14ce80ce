"""``python -m bench NAME [--quick] [--json FILE]``: run benchmarks, print their tables.

Exits 0 whether or not targets are met (benchmarks print, tests assert); non-zero only
when a benchmark crashes.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
import traceback
from typing import Final

NAMES: Final = ("roundtrip", "fanout", "connections", "parsing", "notify", "bulk")
#: Benchmarks that run alone only: parts of one in NAMES (``defaults`` is in ``roundtrip``).
PARTS: Final = ("defaults",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of resofleet; each prints its own baselines from the same run.",
    )
    parser.add_argument("name", choices=[*NAMES, *PARTS, "all"], help="which benchmark (or all)")
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run (CI): small sizes, short windows")
    parser.add_argument("--json", metavar="FILE", help="also write the tables as JSON")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)

    from .node import raise_fd_limit

    raise_fd_limit()
    names = NAMES if args.name == "all" else (args.name,)
    tables = []
    failed = []
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        t0 = time.perf_counter()
        try:
            table = asyncio.run(module.run(quick=args.quick))
        except Exception:
            traceback.print_exc()
            print(f"bench {name}: crashed", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        table.notes.append(f"took {time.perf_counter() - t0:.1f} s")
        tables.append(table)
        print(table.markdown() if args.markdown else table.render(), flush=True)
        print(flush=True)
    print(f"bench: {len(tables)} benchmark(s) in {time.perf_counter() - started:.1f} s"
          + (f"; crashed: {', '.join(failed)}" if failed else ""), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"quick": args.quick, "tables": [t.as_dict() for t in tables]}, out, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
