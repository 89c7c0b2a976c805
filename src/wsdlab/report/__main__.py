"""`python -m wsdlab.report STUDY_DIR [--title T]`, or `--demo DIR` for a report of synthetic tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsdlab.report.html import build_report


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m wsdlab.report", description=__doc__)
    parser.add_argument("study_dir", type=Path, help="study folder holding tables/*.csv")
    parser.add_argument("--title", default=None, help="page title (default: from study.yaml)")
    parser.add_argument("--demo", action="store_true", help="first write synthetic tables into STUDY_DIR")
    args = parser.parse_args(argv)
    if args.demo:
        from wsdlab.report.synthetic import write_synthetic_study

        write_synthetic_study(args.study_dir)
    path = build_report(args.study_dir, args.title, progress=True)
    print(path)
    return path


if __name__ == "__main__":
    main()
