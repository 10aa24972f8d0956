"""Command line: `python -m jaxkeops demo` and `python -m jaxkeops doctor`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxkeops")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Gaussian kernel sum and 10-NN on 100,000 points, "
                          "against blocked and dense JAX (about 30 s; --full: 15 min)")
    demo.add_argument("--full", action="store_true",
                      help="also time blocked JAX at 100,000 points, and the speed-up at 50,000")
    demo.add_argument("--n", type=int, default=100_000, help="number of points (default 1e5)")
    sub.add_parser("doctor", help="compiler, cache folder and CPU features")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo  # the demo pulls in jax: only load it when asked

        return run_demo(full=args.full, n=args.n)
    from ._doctor import run_doctor

    return run_doctor()


if __name__ == "__main__":
    sys.exit(main())
