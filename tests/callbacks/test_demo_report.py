"""adaptok-report: targets checked from the CSVs the evaluation writes, one REPORT.md."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from callbacks.demo_report import BEYOND, PAPER, check_targets, main, make_target, target_tables


def write(path: Path, rows: list[dict[str, object]], delimiter: str = ",") -> None:
    with path.open("w", newline="") as handle:
        fields = list(dict.fromkeys(k for row in rows for k in row))  # empty where a row lacks one
        writer = csv.DictWriter(handle, fieldnames=fields, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


REPORT = [
    {"mode": "-", "policy": "uniform", "mean_tokens_per_block": 4, "psnr": 18.0},
    {"mode": "-", "policy": "uniform", "mean_tokens_per_block": 32, "psnr": 22.5},
]
SUMMARY = [
    {
        "mode": "batch",
        "budget": 0.25,
        "metric": "psnr_pooled",
        "oracle_gain": 0.8,
        "token_savings": 1.2,
        "oracle_token_savings": 1.35,
        "captured_gain": 0.7,
        "captured_gain_low": 0.55,
        "captured_gain_high": 0.81,
        "complexity_spearman": 0.6,
        "oracle_complexity_spearman": 0.72,
    },
    {
        "mode": "batch",
        "budget": 0.5,
        "metric": "psnr_pooled",
        "oracle_gain": 0.3,
        "token_savings": 1.1,
        "captured_gain": 0.5,
        "complexity_spearman": 0.4,
    },
    {
        "mode": "per_clip",
        "budget": 0.25,
        "metric": "lpips",
        "oracle_gain": 0.01,
        "token_savings": 1.6,
        "captured_gain": 0.2,
        "complexity_spearman": 0.1,
        "complexity_spearman_within_clip": 0.55,
        "oracle_complexity_spearman_within_clip": 0.7,
    },
    {  # no within-clip figure (a CSV from before that column): the pooled one
        "mode": "per_clip",
        "budget": 0.5,
        "metric": "lpips",
        "oracle_gain": 0.01,
        "captured_gain": 0.2,
        "complexity_spearman": 0.3,
    },
]
ACCURACY = [
    {"tokens": 4, "spearman": 0.9, "mae": 0.01},
    {"tokens": 32, "spearman": 0.7, "mae": 0.01},
    {"tokens": "all", "spearman": 0.95, "mae": 0.01},
]


def test_targets_are_judged_from_the_csv_rows() -> None:
    as_text = [
        [{k: str(v) for k, v in r.items()} for r in rows] for rows in (REPORT, SUMMARY, ACCURACY)
    ]
    targets = {t["target"]: t for t in check_targets(*as_text)}
    met = {name: (t["value"], t["met"]) for name, t in targets.items()}
    assert met["uniform PSNR, largest - smallest candidate (dB)"] == (4.5, True)
    # each mode judged in the metric its allocation optimises (the summary's metric column)
    assert met["batch: oracle - uniform at 25 % (psnr_pooled)"] == (0.8, True)
    assert met["per_clip: oracle - uniform at 25 % (lpips)"] == (0.01, True)  # no dB goal
    assert met["batch: token savings at 25 %"] == (1.2, False)
    assert met["per_clip: token savings at 25 %"] == (1.6, True)
    assert met["batch: captured gain at 25 %"] == (0.7, True)
    assert met["batch: captured gain at 50 %"] == (0.5, False)
    assert met["batch: Spearman(complexity, tokens) at 50 %"] == (0.4, False)
    assert met["batch: Spearman(complexity, tokens) at 25 %"] == (0.6, True)
    # per-clip allocation is judged within clips (it cannot move tokens between them)
    name = "per_clip: Spearman(complexity, tokens) within clips at 25 % (pooled over clips: 0.10)"
    assert met[name] == (0.55, True)
    assert (targets[name]["exact"], targets[name]["exact_met"]) == (0.7, True)  # within clips too
    assert met["per_clip: Spearman(complexity, tokens) at 50 %"] == (0.3, False)
    assert met["scorer Spearman, worst candidate"] == (0.7, False)  # 'all' is not a candidate
    # the paper's allocation (batch mode) vs the suite's further checks (per clip, savings)
    settings = {name: t["setting"] for name, t in targets.items()}
    assert settings["batch: captured gain at 50 %"] == PAPER
    assert settings["scorer Spearman, worst candidate"] == PAPER
    assert settings["batch: token savings at 25 %"] == BEYOND
    assert settings["per_clip: captured gain at 25 %"] == BEYOND
    assert settings["per_clip: oracle - uniform at 25 % (lpips)"] == BEYOND
    # a captured gain carries its bootstrap interval when the summary has one
    assert targets["batch: captured gain at 25 %"]["interval"] == (0.55, 0.81)
    assert all(math.isnan(x) for x in targets["batch: captured gain at 50 %"]["interval"])
    # what exact costs reach for the same figure, and whether that meets the goal
    savings = targets["batch: token savings at 25 %"]
    assert (savings["exact"], savings["exact_met"]) == (1.35, False)
    assert targets["per_clip: token savings at 25 %"]["exact_met"] is None  # no oracle column
    assert targets["batch: Spearman(complexity, tokens) at 25 %"]["exact_met"] is True  # 0.72
    assert targets["batch: oracle - uniform at 25 % (psnr_pooled)"]["exact"] == 0.8
    assert targets["batch: captured gain at 25 %"]["exact_met"] is None


def test_target_tables_split_the_settings_and_name_misses_exact_costs_share() -> None:
    targets = [
        make_target("a", 1.0, ">= 0.5", lambda v: v >= 0.5),
        make_target("b", 1.2, ">= 1.5", lambda v: v >= 1.5, BEYOND, 1.35),
        make_target("c", 0.1, ">= 0.5", lambda v: v >= 0.5, BEYOND, 0.7),
        make_target("d", 0.2, ">= 0.5", lambda v: v >= 0.5, BEYOND),
        make_target("e", 2.0, ">= 1.5", lambda v: v >= 1.5, BEYOND, 1.0),  # met; oracle misses
        make_target("f", 0.7, ">= 0.6", lambda v: v >= 0.6, interval=(0.52, 0.81)),
    ]
    text = "\n".join(target_tables(targets))
    paper, beyond = text.split("### Further checks")
    assert "| a | 1 | >= 0.5 | yes | - |" in paper and "| b |" not in paper
    assert "| f | 0.7 (95 % interval 0.52 to 0.81) | >= 0.6 | yes | - |" in paper
    assert "| b | 1.2 | >= 1.5 | NO | 1.35 (misses) |" in beyond
    assert "| c | 0.1 | >= 0.5 | NO | 0.7 (meets) |" in beyond
    assert "2 of 2 met." in paper
    # only the misses are counted against exact costs: e's oracle misses, but e is met
    assert "1 of 4 met; exact costs miss 1 of these 3 too." in beyond
    assert text.endswith("3 of 6 targets met.")


def _allocation_outputs(
    root: Path, version: int = 0, markdown: str = "# Token allocation\n"
) -> None:
    """The allocation evaluator's files of one eval_recon run under ``root``."""
    folder = root / "eval_recon" / f"version_{version}"
    folder.mkdir(parents=True)
    (folder / "allocation_report.md").write_text(markdown)
    write(folder / "allocation_report.csv", REPORT)
    write(folder / "allocation_summary.csv", SUMMARY)
    write(folder / "allocation_scorer_accuracy.csv", ACCURACY)


def test_report_links_the_stage_outputs(tmp_path: Path) -> None:
    _allocation_outputs(tmp_path, 3, "# Token allocation\n\n![rd](allocation_rd.png)\n")
    write(
        tmp_path / "timings.tsv",
        [
            {"stage": "tokenizer", "wall_s": 61.5, "peak_rss_kb": 1},
            {"stage": "scorer", "wall_s": 38.5, "peak_rss_kb": 7},
        ],
        "\t",
    )
    assert main([str(tmp_path), "--command", "make demo"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "![rd](eval_recon/version_3/allocation_rd.png)" in text
    assert "| tokenizer | 61.5 | 1 |" in text
    assert "| total (stages one after another) | 100.00 | 7 |" in text
    assert "7 of 14 targets met." in text
    assert "make demo" in text


def test_missing_evaluation_is_a_clear_error(tmp_path: Path, capsys) -> None:
    try:
        main([str(tmp_path)])
    except SystemExit as exit_info:
        assert exit_info.code == 1
    assert "eval_recon.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["tokenizer", "scorer"])
def test_report_says_where_a_stage_started(tmp_path: Path, stage: str) -> None:
    import json

    import yaml

    from callbacks.demo_report import stage_start

    run = tmp_path / "runs" / stage / "version_0"
    run.mkdir(parents=True)
    assert stage_start(tmp_path / "nothing", stage) is None
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 600}}))
    assert stage_start(tmp_path / "runs", stage) == (
        f"- {stage}: trained from scratch in this run (600 steps)"
    )
    export = tmp_path / "weights"
    export.mkdir()
    data = {"commit": "abc1234", "fingerprint": "f" * 64, "files": {"a.tar": "1", "b.tar": "2"}}
    (export / "spec.json").write_text(json.dumps({"info": {"training_data": data}}))
    (export / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 5000}}))
    config = {"trainer": {"max_steps": 200}, "model": {"init_args": {"init_weights": str(export)}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    line = stage_start(tmp_path / "runs", stage)
    assert line is not None
    assert f"fine-tuned for 200 steps from `{export}`" in line
    assert "trained from scratch for 5000 steps at commit abc1234" in line
    assert line.endswith("on 2 shards with fingerprint ffffffffffff")


def test_a_failed_stage_in_the_timings_leaves_the_total_to_the_timed_rows(tmp_path: Path) -> None:
    """GNU time writes "Command exited with non-zero status N" into the TSV of a failed stage."""
    _allocation_outputs(tmp_path)
    (tmp_path / "timings.tsv").write_text(
        "stage\twall_s\tpeak_rss_kb\ntokenizer\t10.5\t5\n"
        "Command exited with non-zero status 1\ngenerator\t2.5\t9\n"
    )
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "| Command exited with non-zero status 1 |" in text  # the failure stays visible
    assert "| total (stages one after another) | 13.00 | 9 |" in text
