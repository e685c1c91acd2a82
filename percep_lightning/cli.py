"""The ``percep-lightning`` command line: manage the pretrained weights cache.

Examples::

    percep-lightning weights list
    percep-lightning weights download vgg19 inception_fid
    percep-lightning weights download --all
    percep-lightning evaluate PRED_DIR TARGET --preset lpips
    percep-lightning stats DIR -o stats.npz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from percep_lightning.backbones.weights import WEIGHTS, WeightsUnavailableError, fetch


def _list() -> int:
    rows = [
        (spec.name, "yes" if spec.cache_path.is_file() else "no", str(spec.cache_path), spec.description)
        for spec in WEIGHTS.values()
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'name':<{width}}  cached  path")
    for name, cached, path, description in rows:
        print(f"{name:<{width}}  {cached:<6}  {path}\n{'':<{width}}          {description}")
    return 0


def _download(names: Sequence[str], everything: bool) -> int:
    if everything:
        names = list(WEIGHTS)
    if not names:
        print(
            "Name the weights to download, or pass --all. Known names: " + ", ".join(WEIGHTS), file=sys.stderr
        )
        return 2
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        print(f"Unknown weights {unknown}; known names: {', '.join(WEIGHTS)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            print(f"{name}: {fetch(name)}")
        except WeightsUnavailableError as err:
            print(str(err), file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``percep-lightning``."""
    parser = argparse.ArgumentParser(prog="percep-lightning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    weights = commands.add_parser("weights", help="list or pre-fetch the pretrained weights")
    actions = weights.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="show every known weights file, its cache path and whether it is present")
    download = actions.add_parser("download", help="download weights into the torch hub cache (TORCH_HOME)")
    download.add_argument("names", nargs="*", help=f"weights to fetch: {', '.join(WEIGHTS)}")
    download.add_argument("--all", action="store_true", help="fetch every known weights file")
    _add_evaluation_commands(commands)
    return parser


def _add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    from percep_lightning.evaluation.command import add_evaluate_parser, add_stats_parser

    add_evaluate_parser(commands)
    add_stats_parser(commands)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``percep-lightning`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in ("evaluate", "stats"):
        from percep_lightning.evaluation import command

        return command.run_evaluate(args) if args.command == "evaluate" else command.run_stats(args)
    if args.action == "list":
        return _list()
    return _download(args.names, args.all)


if __name__ == "__main__":
    sys.exit(main())
