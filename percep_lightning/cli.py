"""The ``percep-lightning`` command line.

Examples::

    percep-lightning --version
    percep-lightning weights list
    percep-lightning weights download vgg19 inception_fid
    percep-lightning weights download --all
    percep-lightning evaluate PRED_DIR TARGET --preset lpips
    percep-lightning stats DIR -o stats.npz

Building the parser imports nothing heavy: torch is imported by a command's handler only, so
``--help`` and ``--version`` answer at once. Each command group registers its subcommands in its own
``_add_<group>_commands`` function and sets ``handler`` on its parsers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from percep_lightning import __version__

DESCRIPTION = (
    "Perceptual losses and image metrics for PyTorch Lightning: manage the pretrained weights cache, "
    "evaluate folders of images."
)
EPILOG = """examples:
  percep-lightning weights list                          what is cached, and where
  percep-lightning weights download vgg19 inception_fid  fetch into the torch hub cache (TORCH_HOME)
  percep-lightning weights download --all                every known file
  percep-lightning evaluate results/ gt/ --preset lpips    metrics of image folders (evaluate --help)
  percep-lightning stats real/ -o real_stats.npz         FID statistics of a folder (pytorch-fid .npz)
"""


def _list(args: argparse.Namespace) -> int:
    from percep_lightning.backbones.weights import WEIGHTS

    rows = [
        (spec.name, "yes" if spec.cache_path.is_file() else "no", str(spec.cache_path), spec.description)
        for spec in WEIGHTS.values()
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'name':<{width}}  cached  path")
    for name, cached, path, description in rows:
        print(f"{name:<{width}}  {cached:<6}  {path}\n{'':<{width}}          {description}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from percep_lightning.backbones.weights import WEIGHTS, MissingWeightsError, fetch_all

    names: Sequence[str] = list(WEIGHTS) if args.all else args.names
    if not names:
        print(
            "Name the weights to download, or pass --all. Known names: " + ", ".join(WEIGHTS), file=sys.stderr
        )
        return 2
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        print(f"Unknown weights {unknown}; known names: {', '.join(WEIGHTS)}", file=sys.stderr)
        return 2
    try:
        fetch_all(names, command_line=True)
    except MissingWeightsError as err:
        failed = err.names
        message = str(err)
    else:
        failed, message = (), ""
    for name in dict.fromkeys(names):
        if name not in failed:
            print(f"{name}: {WEIGHTS[name].cache_path}")
    if failed:
        print(message, file=sys.stderr)
        return 1
    return 0


def _add_weights_commands(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser(
        "weights",
        help="list or pre-fetch the pretrained weights",
        description="List the official pretrained weight files or download them into the torch hub cache.",
    )
    actions = weights.add_subparsers(dest="action", required=True, metavar="{list,download}")
    listing = actions.add_parser(
        "list", help="show every known weights file, its cache path and whether it is present"
    )
    listing.set_defaults(handler=_list)
    download = actions.add_parser("download", help="download weights into the torch hub cache (TORCH_HOME)")
    download.add_argument("names", nargs="*", help="weights to fetch (the names shown by `weights list`)")
    download.add_argument("--all", action="store_true", help="fetch every known weights file")
    download.set_defaults(handler=_download)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``percep-lightning`` (building it imports neither torch nor Lightning).

    Example:
        >>> build_parser().parse_args(["weights", "download", "vgg19"]).names
        ['vgg19']
    """
    parser = argparse.ArgumentParser(
        prog="percep-lightning",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_weights_commands(commands)
    _add_evaluation_commands(commands)
    return parser


def _add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    from percep_lightning.evaluation.command import (
        add_evaluate_parser,
        add_stats_parser,
        run_evaluate,
        run_stats,
    )

    add_evaluate_parser(commands).set_defaults(handler=run_evaluate)
    add_stats_parser(commands).set_defaults(handler=run_stats)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``percep-lightning`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
