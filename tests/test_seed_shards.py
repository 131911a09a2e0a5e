"""The seed_shards composition, added as one class and its schema branch: K shards × seeds, each shard's seeds
averaged, then the shard averages merged; it plans on the tiny config with no workflow file changed."""

import subprocess
import sys
from pathlib import Path

from sftlab.compose.members import member_names, member_shard, member_training, merge_group_sizes, member_pattern
from sftlab.report.dtm import describe_run

ROOT = Path(__file__).resolve().parents[1]
COMP = {"name": "seed_shards", "k": 2, "seeds": [1, 2], "split": "random", "merge": {"method": "average",
                                                                                     "merge_space": "delta"}}


def test_members_are_shards_by_seeds_grouped_by_shard():
    import re

    members = member_names(COMP)
    assert members == ["shards/shard-0/seeds/seed-1", "shards/shard-0/seeds/seed-2",
                       "shards/shard-1/seeds/seed-1", "shards/shard-1/seeds/seed-2"]
    assert all(re.fullmatch(member_pattern(), m) for m in members)
    assert merge_group_sizes(COMP) == [2, 2]
    assert [member_shard(COMP, m) for m in members] == ["shard-0", "shard-0", "shard-1", "shard-1"]
    recipe = {"composition": COMP, "training": {"seed": 0, "learning_rate": 1e-4}, "objective": {"name": "ntp"}}
    assert member_training(recipe, "shards/shard-1/seeds/seed-2") == {"seed": 2, "learning_rate": 1e-4}


def test_the_dtm_report_describes_it():
    row = describe_run("m", "d", "r", {"composition": COMP, "objective": {"name": "ntp"}})
    assert (row["role"], row["k"], row["seeds"]) == ("dtm", 2, 2)
    assert row["label"] == "DTM (K=2, random, 2 seeds a shard averaged, average)"


def test_it_plans_on_the_tiny_config():
    """4 members (2 shards × 2 seeds), their shards, one merge and its scoring beside tiny's own jobs."""
    overlay = ROOT / "tests/fixtures/compositions/seed_shards.yaml"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", "configs/tiny.yaml",
                           str(overlay)], cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for s in (1, 2):
        for k in (0, 1):
            assert f"runs/seed_shards/shards/shard-{k}/seeds/seed-{s}/model" in out
    assert "runs/seed_shards/shards/ids/shard-1.ids" in out
    assert "--groups '[2, 2]'" in out
