"""What every ``monodepth-*`` command shares: one exit-code table, the ``--help`` epilog that lists it, and an
argparse parser that shows every option's default and reports a bad argument as ONE line on stderr.

Exit codes (:data:`EXIT_CODES`):

- 0 success;
- 1 a run-time failure: the input was fine but the run failed (the depth node process died, a training
  diverged, an export missed its accuracy budget, TensorRT is unavailable);
- 2 bad input: arguments, files, bags, models or configs; one line ``PROG: error: ...`` on stderr says which;
- 130 interrupted (Ctrl-C).

``monodepth-train`` (LightningCLI) takes :func:`exit_codes_epilog` as its parser epilog and the constants below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_CODES", "exit_codes_epilog",
           "error_line", "fail", "run_guarded", "KeepIndentedLines", "HelpFormatter", "CliParser"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "run-time failure (e.g. the node process failed, a training diverged)"),
    (EXIT_BAD_INPUT, "bad input: arguments, files, bags, models, configs (one line on stderr)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def exit_codes_epilog(codes: tuple[tuple[int, str], ...] = EXIT_CODES) -> str:
    """An exit-code table (default: :data:`EXIT_CODES`) as a ``--help`` epilog, one indented line per code."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in codes)


def error_line(prog: str, message: object) -> str:
    """``PROG: error: MESSAGE`` on one line (inner whitespace, newlines included, collapsed to single spaces)."""
    return f"{prog}: error: {' '.join(str(message).split())}"


def fail(prog: str, message: object, code: int = EXIT_BAD_INPUT) -> int:
    """Print :func:`error_line` to stderr and return ``code``, for ``return fail(...)`` in a ``main``."""
    print(error_line(prog, message), file=sys.stderr)
    return code


def run_guarded(prog: str, body: Callable[[], int], *, bad_input: tuple[type[BaseException], ...],
                failure: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's ``body`` and return its exit code; the exceptions named become one stderr line and the
    table's code (``failure`` is tried first, so it may hold subclasses of a ``bad_input`` class), Ctrl-C 130."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except failure as e:
        return fail(prog, e, EXIT_FAILURE)
    except bad_input as e:
        return fail(prog, e, EXIT_BAD_INPUT)


class KeepIndentedLines:
    """Help-formatter mixin: indented lines of a description or epilog (the exit-code table) stay as they are;
    the others are filled as usual. Mixed into argparse's and jsonargparse's formatters alike."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text  # bound here: a bare super() cannot run inside the generator below
        return "\n".join(indent + line if line.startswith(" ") else fill(line, width, indent)
                         for line in text.splitlines())


class HelpFormatter(KeepIndentedLines, argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every option that takes a value and has one by default (what an unset option
    or a flag means is the help text's to say), and keeps the indented lines (the exit-code table) of the
    description and epilog as they are."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default is None or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


class CliParser(argparse.ArgumentParser):
    """argparse with the shared conventions: :class:`HelpFormatter`, the exit-code table as epilog, and a bad
    argument reported as one line ``PROG: error: ... (see PROG --help)``, exit code 2."""

    def __init__(self, prog: str, description: str, **kwargs):
        super().__init__(prog=prog, description=description, epilog=exit_codes_epilog(),
                         formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{error_line(self.prog, message)} (see {self.prog} --help)\n")
