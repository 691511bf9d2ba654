"""`dataengine report OUT`: (re)write OUT/report.html from a finished run's output folder."""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = "dataengine report out/demo\n  dataengine report out/demo --gallery 4"
HELP = ("Write OUT/report.html: one self-contained page (plots and media embedded, no network) with inputs and "
        "rejects, stats against thresholds, dedup clusters, tokens before/after the mixture, sequence lengths, "
        "tokenizer fidelity with originals beside reconstructions, and lineage from file to shard.")


def _cmd_report(args) -> int:
    from dataengine.report.build import build_report

    path = build_report(Path(args.out), gallery_per_kind=args.gallery)
    print(f"report:    {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def add_report_command(subparsers) -> argparse.ArgumentParser:
    """Register `report` on the `dataengine` subparsers (same style as the other subcommands)."""
    sp = subparsers.add_parser("report", help=HELP.split(":")[0] + ".", description=HELP,
                               epilog="example:\n  " + EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.set_defaults(fn=_cmd_report)
    sp.add_argument("out", help="output folder of `dataengine run`")
    sp.add_argument("--gallery", type=int, default=2, metavar="N",
                    help="originals shown beside their reconstructions, per kind (default 2)")
    return sp
