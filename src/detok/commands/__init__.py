"""The `detok` subcommands, one module per command group, each holding its parser and its handlers side by side.

A group module defines `add_parser(sub)`, which adds its top-level command(s) to the `detok` subparsers `sub` and sets
each leaf parser's `fn` to its handler. A handler takes the parsed arguments, builds a typed config and calls the
library; it returns the exit code and raises for unusable input (`detok.cli` turns that into one error line).
Heavy imports stay inside the handlers, so `detok --help` stays fast.

Adding a group = adding a module here + one entry in `detok.cli.GROUPS` (whose order is the order of `detok --help`).
Helpers shared by several groups live in `_common`.
"""
