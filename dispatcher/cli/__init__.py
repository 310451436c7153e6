"""The `maildispatch` command line, the demo and the local capture sink.

Owns: argument parsing, printing, exit codes, and the commands' glue. Never does: delivery
logic, SQL or config parsing of its own (it calls `engine`, `queues` and `config`).
"""

from dispatcher.cli.main import main

__all__ = ["main"]
