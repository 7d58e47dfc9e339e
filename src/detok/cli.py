"""The `detok` command line: the parser, and one error path for every subcommand (in `detok.commands`)."""

from __future__ import annotations

import argparse
import os
import sys

from detok import __version__
from detok.commands import bench, convert, generator, hub, latents, presets, report, teacher, text, tokenizer
from detok.commands import eval as eval_  # the `detok eval` group; the name `eval` stays the builtin's

# The command groups in the order `detok --help` lists them; each adds its commands with `add_parser(sub)`.
GROUPS = (presets, tokenizer, teacher, text, latents, eval_, generator, bench, report, convert, hub)


class UsageError(ValueError):
    """The command line does not parse: an unknown command or choice, a missing or ill-typed option."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser (and its subcommands'), but a usage error is the one `detok: error:` line of every other
    unusable input (exit 2), naming the option and where its help is, instead of the whole usage."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="detok", description=__doc__)
    parser.add_argument("--version", action="version", version=f"detok {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


# Exit codes: 2 = the input (a setting, file or data set) is unusable, 3 = training diverged (non-finite loss or
# gradient norm). Both print one line; any other exception is a bug in detok and shows its traceback.
EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
USER_ERRORS = (KeyError, ValueError, TypeError, OSError, RuntimeError, ImportError)


def error_line(e: BaseException) -> str:
    """The one-line message of a user-facing error (a KeyError's message without repr quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
    return " ".join(text.split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one `detok` command; failures of the user's input print one line and return 2 (set DETOK_DEBUG=1 for
    the traceback)."""
    from detok.runtime import TrainingDivergedError, forget_process_threads

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # the command as given, for records (not sys.argv: main may be called from Python)
        return args.fn(args)
    except USER_ERRORS as e:
        if os.environ.get("DETOK_DEBUG"):
            raise
        print(f"detok: error: {error_line(e)}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(e, TrainingDivergedError) else EXIT_BAD_INPUT
    finally:
        forget_process_threads()  # a command's --threads holds for that command, not for what the caller runs next


if __name__ == "__main__":
    sys.exit(main())
