"""AllocationEvaluator in a real `adaptok test` run of experiments/demo/eval_recon.yaml."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from adaptok.metrics.allocation_gain import optimised_metric, uniform_tokens_to_match
from modules.cli import run_cli
from tests.helpers import EXPERIMENTS, REPO, tiny_args, working_directory

MODES = next(
    callback["init_args"]["modes"]
    for callback in yaml.safe_load((EXPERIMENTS / "demo" / "eval_recon.yaml").read_text())[
        "trainer"
    ]["callbacks"]
    if callback["class_path"] == "callbacks.AllocationEvaluator"
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def eval_run(workspace: Path, scorer_ckpt: Path) -> Path:
    """One evaluation on the scorer checkpoint alone: the model section comes from it."""
    with working_directory(workspace):
        cli = run_cli(
            [
                "test",
                *tiny_args("demo/eval_recon.yaml"),
                f"--ckpt_path={scorer_ckpt}",
            ]
        )
        folder = Path(cli.trainer.log_dir).resolve()
    assert (folder / "allocation_report.csv").is_file()
    # TokenHealth runs beside it in the demo config: codes per block and baselines
    health = dict(row for row in csv.reader((folder / "token_health.csv").open()))
    assert 1 <= float(health["distinct_codes_per_block"]) <= float(health["tokens_per_block"])
    assert float(health["clips"]) > 0
    return folder


def test_report_has_every_mode_budget_and_policy(eval_run: Path) -> None:
    rows = read_csv(eval_run / "allocation_report.csv")
    keys = {(r["mode"], r["policy"], float(r["mean_tokens_per_block"])) for r in rows}
    # tiny tokenizer: 8 tokens per block, budgets 2, 4, 6; scorer candidates 2, 4, 6, 8
    for mean in (2.0, 4.0, 6.0):
        for mode in MODES:
            assert (mode, "scorer", mean) in keys
            assert (mode, "oracle", mean) in keys
    assert {m for mode, p, m in keys if p == "uniform" and mode == "-"} == {2.0, 4.0, 6.0, 8.0}
    report = (eval_run / "allocation_report.md").read_text()
    assert report.startswith("# Token allocation")
    assert "- data: data/demo/synthetic/val-*.tar" in report
    assert "solver: mip (python-mip CBC)" in report
    assert report.count("same optimum") == 3  # the fast solver checked at every budget
    for name in ("rate_distortion", "lengths", "scorer_scatter", "frames"):
        assert (eval_run / f"allocation_{name}.png").stat().st_size > 1000


def test_budget_is_met_exactly(eval_run: Path) -> None:
    for row in read_csv(eval_run / "allocation_report.csv"):
        assert float(row["tokens_per_clip"]) == pytest.approx(
            4 * float(row["mean_tokens_per_block"])
        )


def test_summary_derives_from_the_table(eval_run: Path, scorer_ckpt: Path) -> None:
    """Each mode is judged in the metric its allocation optimises (the scorer's label metric:
    e.g. MSE costs give the pooled PSNR when the budget is shared over the batch, the per-clip
    PSNR in per_clip), gains signed so that positive is better, per-clip PSNR beside."""
    cost = torch.load(scorer_ckpt, map_location="cpu", weights_only=False)["hyper_parameters"][
        "metric"
    ]
    rows = read_csv(eval_run / "allocation_report.csv")
    table = {(r["mode"], r["policy"], float(r["mean_tokens_per_block"])): r for r in rows}
    summary = read_csv(eval_run / "allocation_summary.csv")
    assert {r["mode"] for r in summary} == set(MODES)
    for row in summary:
        metric, higher = optimised_metric(cost, row["mode"])
        sign = 1.0 if higher else -1.0
        assert row["metric"] == metric
        mean = float(row["mean_tokens_per_block"])
        scorer, oracle = table[(row["mode"], "scorer", mean)], table[(row["mode"], "oracle", mean)]
        uniform = table[("-", "uniform", mean)]
        s, o, u = (float(r[metric]) for r in (scorer, oracle, uniform))
        assert float(row["regret"]) == pytest.approx(sign * (o - s), abs=1e-6)
        assert float(row["oracle_gain"]) == pytest.approx(sign * (o - u), abs=1e-6)
        assert float(row["psnr_oracle"]) == pytest.approx(float(oracle["psnr"]), abs=1e-6)
        # the oracle's savings: its quality read off the uniform curve, over its tokens
        curve = sorted(
            (float(r["mean_tokens_per_block"]), sign * float(r[metric]))
            for r in rows
            if r["policy"] == "uniform" and r[metric]
        )
        needed = uniform_tokens_to_match(sign * o, *zip(*curve, strict=True))
        assert float(row["oracle_token_savings"]) == pytest.approx(needed / mean, rel=1e-6)
        # a Spearman for both allocations (NaN where one gives every block the same length)
        spearmans = ("complexity_spearman", "oracle_complexity_spearman")
        for name in (*spearmans, *(f"{s}_within_clip" for s in spearmans)):
            assert math.isnan(float(row[name])) or -1.0 <= float(row[name]) <= 1.0
        for r in (scorer, oracle, uniform):  # -log is convex: PSNR of the mean MSE <= mean PSNR
            assert float(r["psnr_pooled"]) <= float(r["psnr"]) + 1e-4
        # the captured gain's bootstrap interval over the clips: both bounds or neither
        low, high = float(row["captured_gain_low"]), float(row["captured_gain_high"])
        assert math.isnan(low) == math.isnan(high)
        assert math.isnan(low) or low <= high
    # the synthetic val clips record a complexity: the oracle's varied lengths get a value
    for name in ("oracle_complexity_spearman", "oracle_complexity_spearman_within_clip"):
        assert any(math.isfinite(float(r[name])) for r in summary), name


def test_oracle_lpips_is_not_worse_than_uniform(eval_run: Path) -> None:
    rows = read_csv(eval_run / "allocation_report.csv")
    # the extra points of the uniform curve measure PSNR/SSIM only (empty LPIPS cells)
    lpips = {
        (r["mode"], r["policy"], r["mean_tokens_per_block"]): float(r["lpips"])
        for r in rows
        if r["lpips"]
    }
    for (mode, policy, mean), value in lpips.items():
        if policy == "oracle" and mode != "streaming":
            # The oracle minimises the same LPIPS backbone the report measures (with earlier
            # blocks at full length while it chooses), so it is at least as good up to that
            # context difference.
            assert value <= lpips[("-", "uniform", mean)] + 2e-3


def test_report_is_the_same_on_two_ranks_with_uneven_shards(
    workspace: Path, scorer_ckpt: Path, tmp_path: Path
) -> None:
    """2 gloo ranks, 3 val shards (rank 0 gets 2, rank 1 gets 1): same report as one process."""
    (tmp_path / "data").symlink_to(workspace / "data")
    folder = workspace / "data" / "demo" / "synthetic"
    shards = sorted(folder.glob("val-*.tar")) + sorted(folder.glob("train-*.tar"))
    assert len(shards) >= 3, shards
    urls = "[" + ", ".join(str(s) for s in shards[:3]) + "]"
    reports, summaries = {}, {}
    for devices in (1, 2):
        args = [
            sys.executable,
            "-m",
            "modules.cli",
            "test",
            *tiny_args("demo/eval_recon.yaml"),
            f"--data.init_args.test_urls={urls}",
            "--data.init_args.batch_size=1",
            "--trainer.accelerator=cpu",
            f"--trainer.devices={devices}",
            f"--trainer.logger.init_args.save_dir=runs/ddp{devices}",
            '--trainer.callbacks=[{"class_path": "callbacks.AllocationEvaluator", "init_args": '
            '{"modes": ["per_clip"], "budgets": [0.25, 0.5], "fvd": false}}]',
            f"--ckpt_path={scorer_ckpt}",
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-4000:]
        found = list((tmp_path / f"runs/ddp{devices}").rglob("allocation_report.csv"))
        assert len(found) == 1, found  # written once, by rank 0
        reports[devices] = read_csv(found[0])
        summaries[devices] = read_csv(found[0].with_name("allocation_summary.csv"))
    # the bootstrap interval does not depend on the order the ranks gathered the clips in
    for one, two in zip(summaries[1], summaries[2], strict=True):
        for name in ("captured_gain", "captured_gain_low", "captured_gain_high"):
            assert float(two[name]) == pytest.approx(float(one[name]), rel=1e-4, nan_ok=True)
    single, double = reports[1], reports[2]
    assert [r["policy"] for r in single] == [r["policy"] for r in double]
    for one, two in zip(single, double, strict=True):
        assert two["num_samples"] == one["num_samples"]
        for name in ("mean_tokens_per_block", "tokens_per_clip", "psnr", "ssim", "lpips"):
            assert (one[name] == "") == (two[name] == ""), name
            if one[name]:
                assert float(two[name]) == pytest.approx(float(one[name]), rel=1e-4), name


def test_causal_table_mode_runs_the_official_procedure(workspace: Path, scorer_ckpt: Path) -> None:
    """causal_table rows: each block's total over the batch is the table target x
    B rounded down onto the grid; every row names its mode and asked budget; the summary pairs
    rows by the asked budget although causal_table spends a different amount."""
    import numpy as np

    from adaptok.alloc import block_targets
    from adaptok.alloc.block_table import floor_block_total
    from adaptok.alloc.feasibility import TokenGrid

    callbacks = (
        '[{"class_path": "callbacks.AllocationEvaluator", "init_args": {"modes": ["causal_table", '
        '"per_clip"], "budgets": [0.25, 0.5], "fvd": false, "lpips": false, '
        '"uniform_curve": false}}]'
    )
    with working_directory(workspace):
        cli = run_cli(
            [
                "test",
                *tiny_args("demo/eval_recon.yaml"),
                "--data.init_args.batch_size=64",  # all 4 val clips in one batch
                f"--trainer.callbacks={callbacks}",
                "--trainer.logger.init_args.name=eval_table",
                f"--ckpt_path={scorer_ckpt}",
            ]
        )
        folder = Path(cli.trainer.log_dir).resolve()
    rows = read_csv(folder / "allocation_report.csv")
    grid = TokenGrid.from_lengths(np.array([2, 4, 6, 8]))
    table_rows = [r for r in rows if r["mode"] == "causal_table"]
    assert {(r["policy"], float(r["budget"])) for r in table_rows} == {
        (p, b) for p in ("scorer", "oracle") for b in (0.25, 0.5)
    }
    for row in rows:
        assert row["mode"] in ("causal_table", "per_clip", "-") and row["budget"]
    for row in table_rows:
        clips = int(float(row["num_samples"]))
        targets = block_targets(float(row["budget"]), 8, 4)
        expected = sum(floor_block_total(t, clips, grid) for t in targets) / clips
        assert float(row["tokens_per_clip"]) == pytest.approx(expected)
    summary = read_csv(folder / "allocation_summary.csv")
    assert {r["mode"] for r in summary} == {"causal_table", "per_clip"}
    for row in summary:
        assert np.isfinite(float(row["psnr_scorer"])) and np.isfinite(float(row["psnr_oracle"]))
    notes = (folder / "allocation_report.md").read_text()
    assert "causal_table at 0.5: block targets [7.125, 3.781, 2.688, 2.344]" in notes


def test_report_names_the_data_the_datamodule_reads(tmp_path: Path) -> None:
    """The report's data lines come from the shard settings the datamodule really keeps (its
    ``urls`` mapping, no ``test_urls`` attribute) and from the shards it resolved."""
    import io
    import math
    import tarfile
    from types import SimpleNamespace

    import torch

    from callbacks.allocation_evaluator import AllocationEvaluator
    from datamodules import VideoShardsDataModule

    for name in ("test-000000.tar", "test-000001.tar"):
        with tarfile.open(tmp_path / name, "w") as archive:
            member = tarfile.TarInfo("clip.txt")
            member.size = 1
            archive.addfile(member, io.BytesIO(b"x"))
    pattern = str(tmp_path / "test-*.tar")
    datamodule = VideoShardsDataModule(test_urls=[pattern])
    assert not hasattr(datamodule, "test_urls")  # what the report once read
    datamodule.setup("test")
    evaluator = AllocationEvaluator(modes=["per_clip"], fvd=False, lpips=False)
    evaluator._keys, evaluator._frames, evaluator._cost = [], {}, "mse"
    (tmp_path / "out").mkdir()  # the run's log folder, which Lightning creates
    rows = [
        {"mode": "-", "policy": "uniform", "mean_tokens_per_block": float(m), "psnr": 20.0 + m}
        for m in (2, 4)
    ]
    evaluator._write(
        SimpleNamespace(datamodule=datamodule, global_step=0),
        tmp_path / "out",
        "test",
        rows,
        [],
        [],
        [],
        {},
        torch.full((1, 4), math.nan),
        8,
        torch.zeros(0),
        torch.zeros(0),
    )
    report = (tmp_path / "out" / "allocation_report.md").read_text()
    assert f"- data: {pattern}\n" in report
    assert "- data shards: 2 (all ranks together)\n" in report


def test_a_uniform_budget_of_no_token_is_refused_when_evaluation_starts(
    tokenizer_ckpt: Path,
) -> None:
    """0.05 x 8 tokens rounds to 0: refused before any batch, saying so (it once failed mid-batch
    inside TokenBudget); the row keys hold the TokenBudget itself."""
    from types import SimpleNamespace

    from adaptok.alloc import TokenBudget
    from callbacks.allocation_evaluator import AllocationEvaluator
    from modules.loading import load_frozen_tokenizer

    tokenizer = load_frozen_tokenizer(tokenizer_ckpt)  # 4 blocks x 8 tokens
    quality = SimpleNamespace(metric="mse")  # the cost the report judges the modes in
    stage = SimpleNamespace(tokenizer=tokenizer, scorer=None, quality=quality, device="cpu")
    trainer = SimpleNamespace(current_epoch=0, sanity_checking=False)
    refused = AllocationEvaluator(budgets=[0.05], policies=["uniform"], fvd=False, lpips=False)
    with pytest.raises(ValueError, match=r"keeps round\(0.4\) = 0 tokens per block"):
        refused.on_split_start("test", trainer, stage)
    evaluator = AllocationEvaluator(budgets=[0.3], policies=["uniform"], fvd=False, lpips=False)
    evaluator.on_split_start("test", trainer, stage)
    assert evaluator._keys[0] == ("uniform", "-", TokenBudget(2, 8))  # round(2.4) tokens
    assert [key[2].mean_tokens for key in evaluator._keys[1:]] == [1, 3, 4, 5, 6, 7, 8]


def test_a_scorer_below_uniform_is_named_in_the_notes() -> None:
    from callbacks.allocation_evaluator import worse_than_uniform

    row = {"mode": "per_clip", "budget": 0.75, "metric": "psnr", "scorer_gain": -0.0212}
    better = {**row, "budget": 0.25, "scorer_gain": 0.11}
    unknown = {**row, "budget": 0.5, "scorer_gain": math.nan}
    assert worse_than_uniform([better, unknown]) == []
    (note,) = worse_than_uniform([better, unknown, row])  # -0.02 dB: under MIN_GAIN's 0.05
    assert "within the noise floor (MIN_GAIN), at: per_clip at 75% (psnr -0.0212)" in note
    loss = {**row, "mode": "batch", "metric": "psnr_pooled", "scorer_gain": -0.3}
    worse, noise = worse_than_uniform([loss, row])
    assert "WORSE than uniform at: batch at 75% (psnr_pooled -0.3)" in worse
    assert "per_clip at 75%" in noise and "batch" not in noise


def test_an_empty_split_gives_nan_complexity_figures() -> None:
    from adaptok.alloc import TokenBudget
    from callbacks import AllocationEvaluator

    evaluator = AllocationEvaluator(fvd=False, lpips=False)
    chosen = {("scorer", "per_clip", TokenBudget(12, 48)): torch.zeros((0, 4), dtype=torch.long)}
    (pooled, within), *_ = evaluator._complexity_spearman(chosen, torch.zeros((0, 0))).values()
    assert math.isnan(pooled) and math.isnan(within)
