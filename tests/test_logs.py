"""One logging style: every script sets logging up through sftlab.logs, library modules log through their own logger."""

import logging
import re
from pathlib import Path

import pytest

from sftlab.logs import setup_logging

ROOT = Path(__file__).resolve().parents[1]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


@pytest.fixture
def root_logger():
    """The root logger's handlers and level as pytest left them, restored after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("rank, lines", [
    (None, [("INFO", "read 3 rows"), ("WARNING", "skipped a.jsonl:2: not JSON")]),
    ("0", [("INFO", "read 3 rows"), ("WARNING", "skipped a.jsonl:2: not JSON")]),
    ("1", [("WARNING", "skipped a.jsonl:2: not JSON")]),  # process 0 speaks for all
])
def test_one_line_format_and_process_zero_informs(tmp_path, monkeypatch, root_logger, rank, lines):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    setup_logging(tmp_path / "job.log")
    log = logging.getLogger("sftlab.data.loaders")
    log.info("read %d rows", 3)
    log.warning("skipped %s: %s", "a.jsonl:2", "not JSON")
    logging.getLogger("sftlab.data.loaders").debug("not shown")
    written = (tmp_path / "job.log").read_text().splitlines()
    assert len(written) == len(lines)
    for line, (level, message) in zip(written, lines):
        assert re.fullmatch(f"{STAMP} {level} sftlab\\.data\\.loaders: {re.escape(message)}", line), line


def test_every_script_sets_logging_up_once_through_the_helper_and_the_library_never_prints():
    for script in sorted((ROOT / "scripts").glob("*.py")):
        text = script.read_text()
        assert text.count("setup_logging(") == 1 and "basicConfig" not in text, script.name
    for module in sorted((ROOT / "src" / "sftlab").rglob("*.py")):
        text = module.read_text()
        assert not re.search(r"\bprint\(|log=print|basicConfig", text) or module.name == "logs.py", module
