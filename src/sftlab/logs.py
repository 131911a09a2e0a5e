"""One logging set-up for every job, so that every rule's log file reads alike.

Library modules log through ``logging.getLogger(__name__)``; each script calls ``setup_logging()`` once, first thing
in its ``main``. Rules send a script's stderr to their ``log:`` file (``2> {log}``).
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(path: str | os.PathLike | None = None) -> None:
    """INFO and above to stderr, or to the file ``path``. Under several processes (``accelerate launch`` sets
    ``RANK``) process 0 speaks for all: the others log only warnings and errors.

    Stderr gives way to handlers a host already installed (pytest's capture, a notebook's); a file asked for by
    name replaces them, so that it gets the lines wherever the script runs."""
    level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
    target = {"filename": os.fspath(path), "force": True} if path is not None else {"stream": sys.stderr}
    logging.basicConfig(level=level, format=FORMAT, **target)
