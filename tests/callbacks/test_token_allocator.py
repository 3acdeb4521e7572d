"""TokenAllocator in a real `adaptok test` run of experiments/demo/eval_recon.yaml."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from modules.cli import run_cli
from tests.conftest import EXPERIMENTS, TINY_SCORER, working_directory

EVAL_OVERRIDES = [
    a
    for a in TINY_SCORER
    if a.startswith("--model.init_args.scorer") or a.startswith("--data.") or "progress_bar" in a
]


@pytest.fixture(scope="module")
def eval_run(workspace: Path, scorer_ckpt: Path) -> tuple[Path, list[dict[str, str]]]:
    with working_directory(workspace):
        cli = run_cli(
            [
                "test",
                "--config",
                str(EXPERIMENTS / "demo" / "eval_recon.yaml"),
                *EVAL_OVERRIDES,
                "--trainer.limit_test_batches=2",
                f"--ckpt_path={scorer_ckpt}",
            ]
        )
        report = (Path(cli.trainer.log_dir) / "allocation_report.csv").resolve()
    assert report.is_file()
    with report.open() as handle:
        return report, list(csv.DictReader(handle))


def test_report_has_every_budget_and_policy(eval_run: tuple[Path, list[dict[str, str]]]) -> None:
    report, rows = eval_run
    pairs = {(float(r["budget"]), r["policy"]) for r in rows}
    assert pairs == {(b, p) for b in (0.25, 0.5, 0.75) for p in ("scorer", "uniform", "oracle")}
    assert report.with_suffix(".md").read_text().startswith("# Token allocation")


def test_budget_is_met_and_quality_rises_with_budget(
    eval_run: tuple[Path, list[dict[str, str]]],
) -> None:
    _, rows = eval_run
    for row in rows:
        # tiny tokenizer: 8 tokens per block, equality budgets at 2, 4, 6 tokens per block
        assert float(row["mean_tokens_per_block"]) == pytest.approx(8 * float(row["budget"]))
    oracle = sorted((float(r["budget"]), float(r["psnr"])) for r in rows if r["policy"] == "oracle")
    assert oracle[0][1] <= oracle[-1][1] + 1e-6


def test_oracle_is_not_worse_than_uniform(eval_run: tuple[Path, list[dict[str, str]]]) -> None:
    _, rows = eval_run
    by_key = {(r["budget"], r["policy"]): r for r in rows}
    for budget in ("0.25", "0.5", "0.75"):
        # The oracle minimises measured LPIPS-Alex block by block (streaming, causal); the report
        # scores LPIPS-VGG on whole clips, so allow a small slack instead of strict dominance.
        oracle = float(by_key[(budget, "oracle")]["lpips"])
        uniform = float(by_key[(budget, "uniform")]["lpips"])
        assert oracle <= uniform + 5e-3
