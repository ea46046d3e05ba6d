"""The command-line arguments of our tools (bin/zeopack, and the
control script's stats, check and convert-py3): argparse, with every
mistake reported in one line.  Standard library only.
"""

import argparse
import shlex
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse, reporting a usage error in one line (not usage + error)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def parse_command(parser, arg):
    """(options, None), or (None, exit status) once argparse has printed
    help (0) or a usage error (2)."""
    try:
        return parser.parse_args(shlex.split(arg)), None
    except ValueError as e:  # unbalanced quotes
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return None, 2
    except SystemExit as e:
        return None, e.code

