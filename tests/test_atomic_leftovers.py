"""A save killed mid-write (SIGKILL: no cleanup runs) leaves `.{name}.<random>.tmp` beside its output; the next write
of that output removes its own leftovers and nobody else's."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from sftlab.io import atomic_path, write_text

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    out = tmp_path / "model"
    # a real kill: a process stops inside atomic_path after writing part of the directory
    code = textwrap.dedent(f"""
        import os, signal
        from sftlab.io import atomic_path
        with atomic_path({str(out)!r}) as tmp:
            tmp.mkdir()
            (tmp / "model.safetensors").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.") and leftovers[0].endswith(".tmp")
    # others' temporaries beside it: another file's, one whose name only starts like ours
    others = [".model.csv.abcd1234.csv.tmp", ".other.abcd1234.tmp", ".modelx.abcd1234.tmp", "model.abcd1234.tmp"]
    for name in others:
        (tmp_path / name).write_text("x")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", *others])
    assert (out / "model.safetensors").read_bytes() == b"whole"


def test_a_file_write_removes_its_own_leftover_with_its_suffix(tmp_path):
    (tmp_path / ".log.csv.k3j_x9a0.csv.tmp").write_text("partial")
    (tmp_path / ".log.csv.k3j_x9a0.tmp").write_text("written without the suffix: not this writer's")
    with atomic_path(tmp_path / "log.csv", suffix=".csv") as tmp:
        tmp.write_text("a,b\n")
    write_text(tmp_path / "log.csv.bak", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".log.csv.k3j_x9a0.tmp", "log.csv", "log.csv.bak"]
