"""``focusq``: the command line, thin over pipeline, outputs, training and batch.

Exit status: 0 all went well, 1 some input failed, 2 bad usage, 130 interrupted.
Progress goes to stderr; stdout says where the outputs are. This module runs a command:
the parser is :mod:`napari_focusq.cli.parser`, each command has its own module.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Sequence

from napari_focusq.cli.demo import cmd_demo
from napari_focusq.cli.parser import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _check_optics,
    _err,
    build_parser,
)
from napari_focusq.cli.score import cmd_score
from napari_focusq.cli.sharpest import cmd_sharpest
from napari_focusq.cli.simulate import cmd_simulate


def _delegate(module: str, func: str, args) -> int:
    # imported when the command runs: `focusq score --help` need not import dask or torch
    rc = getattr(importlib.import_module(f"napari_focusq.{module}"), func)(args)
    return EXIT_OK if rc is None else int(rc)


def _evaluate(args) -> int:
    _check_optics(args)
    if args.pairs or args.pairs_csv:
        if args.data:
            raise UsageError("give either DATA (simulated defocus) or --pairs/--pairs-csv (real pairs), not both")
        return _delegate("cli.pair", "main_evaluate_pairs", args)
    if not args.data:
        raise UsageError("evaluate needs DATA (in-focus images) or --pairs IN:OUT / --pairs-csv CSV")
    return _delegate("cli.evaluate", "main_evaluate", args)


def _batch(args) -> int:
    _check_optics(args)
    return _delegate("batch", "main_batch", args)


COMMANDS = {
    "score": cmd_score,
    "batch": _batch,
    "train": lambda a: (_delegate("training.collection", "main_train_collection", a) if a.collection
                        else _delegate("cli.train", "main_train", a)),
    "evaluate": lambda a: _evaluate(a),
    "pair": lambda a: (_check_optics(a), _delegate("cli.pair", "main_pair", a))[1],
    "collect": lambda a: _delegate("review.collect", "main_collect", a),
    "simulate": cmd_simulate,
    "sharpest": cmd_sharpest,
    "demo": cmd_demo,
}


@contextlib.contextmanager
def _memory_budget(mb: float | None):
    """--max-memory for the command, in this process and in the child processes it starts
    (batch workers read the environment); both restored after, for callers of main()."""
    if mb is None:
        yield
        return
    import os

    from napari_focusq.io.budget import ENV_VAR, max_memory_mb

    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = repr(mb)
    try:
        with max_memory_mb(mb):
            yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``focusq`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) and usage errors (2)
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from napari_focusq.errors import FocusQError

    try:
        with _memory_budget(getattr(args, "max_memory", None)):
            return COMMANDS[args.command](args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        # outputs are written atomically, so nothing half-written is left behind
        print("", file=sys.stderr)
        _err("interrupted")
        return EXIT_INTERRUPTED
    except (FocusQError, ValueError, OSError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    except MemoryError as exc:
        from napari_focusq.io.budget import OPTION

        _err(f"out of memory{f' ({exc})' if str(exc) else ''}: this machine cannot hold what "
             f"'focusq {args.command}' needs here; lower the work or the budget ({OPTION})")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
