"""The command line's one error type: a problem with the user's input.

``UsageError`` is raised by every up-front check (``_cli_checks``), by reading
``DATA`` (``_cli_data``) and by the commands (``cli``); ``sktransfer.cli.main``
reports it in one line on stderr and returns exit code 2. Standard library only.
"""

from __future__ import annotations


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""
