"""benchmarks/bench_step.py keeps running and reports what its README says it reports."""

import json

import pytest

from benchmarks import bench_step


def test_paired_ratios_are_per_round_quotients():
    # rounds: 2/1, 4/2, 9/3 -> quotients 2, 2, 3: median 2, quartiles 2 and 2.5
    assert bench_step.paired_ratios([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == {
        "median": 2.0,
        "q25": 2.0,
        "q75": 2.5,
        "pairs": 3,
    }


def test_paired_ratios_need_two_pairs():
    assert bench_step.paired_ratios([1.0], [1.0]) is None
    # an implementation with fewer repeats than torch (the loop) pairs its own rounds only
    assert bench_step.paired_ratios([3.0, 6.0], [1.0, 2.0, 9.0])["pairs"] == 2


@pytest.mark.slow  # builds torch and runs the loop implementation (~5 s)
def test_benchmark_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench_step.main(
        [
            "--sizes",
            "6",
            "--dtypes",
            "float64",
            "--repeats",
            "3",
            "--impls",
            "reference,torch,loop",
            "--loop-repeats",
            "2",
            "--warmup",
            "1",
            "--settle",
            "0",
            "--data",
            "synthetic",
            "--no-memory",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    rows = {r["impl"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"reference", "torch", "loop"}
    assert rows["torch"]["ratio_to_torch"] == 1.0
    assert rows["reference"]["first_step_loss_rel_diff"] <= 1e-9
    assert rows["loop"]["paired_ratio_to_torch"]["pairs"] == 2
    paired = rows["reference"]["paired_ratio_to_torch"]
    assert paired["q25"] <= paired["median"] <= paired["q75"]
    assert "paired" in capsys.readouterr().out


def test_benchmark_uses_the_suites_learning_rate():
    from reference.update import SUITE_LR

    assert bench_step.LR == SUITE_LR
