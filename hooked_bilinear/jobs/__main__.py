"""Command line: ``python -m hooked_bilinear.jobs KIND ...`` (or the same under ``torchrun ... -m``).

Exit status: 0 when every unit is finished, 1 when some failed (their errors are in DIR/index.parquet
and DIR/units/), 2 for bad input (the message says which).
"""

from __future__ import annotations

import argparse
import sys

from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs import KINDS, job_class, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooked_bilinear.jobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in KINDS:
        p = sub.add_parser(kind, help=f"the {kind} job")
        job_class(kind).add_arguments(p)
        p.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
        p.add_argument("--device", default="auto", help="'auto' (this rank's GPU if any, else CPU) or a device")
        p.add_argument("--no-progress", dest="progress", action="store_false")
        p.add_argument("--throttle", type=float, default=0.0, help="seconds to sleep after each unit")
    args = parser.parse_args(argv)
    try:
        job = job_class(args.kind).from_args(args)
        code = run(job, args.out, device=args.device, progress=args.progress, throttle=args.throttle)
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if code:
        print(f"some units failed: see {args.out}/index.parquet (rerun to retry them)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
