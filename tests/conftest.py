"""Session hooks: all.yaml's rehearsal through Slurm (tests/_rehearsal_run.py) starts as soon as its test is collected,
so that it runs beside the rest of the suite; its test, last, waits for it."""

from __future__ import annotations

import pytest

import _rehearsal_run

E2E_TEST = "test_rehearsal_runs_end_to_end_through_the_slurm_profile"


def _e2e_items(items):
    return [item for item in items if item.originalname == E2E_TEST]


def pytest_collection_modifyitems(config, items):
    """The end-to-end checks run last: by then their rehearsals have had the whole suite's time."""
    e2e = _e2e_items(items)
    items[:] = [item for item in items if item not in e2e] + e2e


def pytest_collection_finish(session):
    if session.config.option.collectonly or not _e2e_items(session.items) or not _rehearsal_run.slurm_up():
        return
    factory = session.config._tmp_path_factory
    for item in _e2e_items(session.items):
        paper = item.callspec.params["paper_rehearsal"]
        if paper not in _rehearsal_run.STARTED:
            workdir = factory.mktemp(f"rehearsal-{paper}")
            _rehearsal_run.STARTED[paper] = _rehearsal_run.RehearsalRun(paper, workdir).start()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """An interrupted or failed session stops the rehearsals it started (and their Slurm jobs)."""
    for run in _rehearsal_run.STARTED.values():
        run.stop()
