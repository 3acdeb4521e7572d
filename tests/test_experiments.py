"""Every YAML in experiments/ parses against the code, and each is smoke-run through its tiny
overlay (tests/conf/<set>/<stage>.yaml, composed by tests.helpers.tiny_args). A stage that reads
video shards through VideoShardsDataModule is composed with its set's data.yaml first (the shard
URLs; tests/test_experiment_data.py checks that no other YAML restates them).

Where each config is smoke-run:

- demo tokenizer, scorer, annotate, generator: the session fixtures of tests/conftest.py
  (checked here); demo eval_gen and the tokenizer's and scorer's pretrain and finetune
  variants: here;
- demo eval_recon: tests/callbacks/test_allocation_evaluator.py;
- ucf101 tokenizer, scorer, eval_recon: here, on CPU;
- ucf101 and k600 annotate: tests/generator/test_annotation_configs.py;
- ucf101 and k600 generator and eval_gen: tests/generator/test_generator_configs.py (slow).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from modules.cli import run_cli
from tests.helpers import (
    CONF,
    EXPERIMENTS,
    overlay,
    stage_configs,
    tiny_args,
    tiny_overlay,
    working_directory,
)

# the stage YAMLs; each set's data.yaml only holds shard URLs and is composed with them
CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.name != "data.yaml")
DATA_CONFIGS = sorted(EXPERIMENTS.glob("*/data.yaml"))

# stage (file name up to the first dot) -> subcommand, model class, datamodule class
STAGES = {
    "tokenizer": ("fit", "modules.TokenizerModule", "datamodules.VideoShardsDataModule"),
    "scorer": ("fit", "modules.ScorerModule", "datamodules.VideoShardsDataModule"),
    "eval_recon": ("test", "modules.ScorerModule", "datamodules.VideoShardsDataModule"),
    "annotate": ("predict", "modules.AnnotatorModule", "datamodules.VideoWindowsDataModule"),
    "generator": ("fit", "modules.GeneratorModule", "datamodules.TokenShardsDataModule"),
    "eval_gen": ("test", "modules.GeneratorModule", "datamodules.TokenShardsDataModule"),
}
# evaluation configs take their model from a checkpoint: the fixture that trains one (on the
# demo stage YAML of the network's name) and the network it holds
MODEL_FROM = {"eval_recon": ("scorer_ckpt", "scorer"), "eval_gen": ("generator_ckpt", "generator")}


def stage(config: Path) -> str:
    return config.name.split(".")[0]


def config_id(config: Path) -> str:
    return str(config.relative_to(EXPERIMENTS))


def merged(base: Any, override: Any) -> Any:
    """``override`` over ``base`` as LightningCLI composes two --config files (a key ``name+``
    appends its list to ``name``'s, jsonargparse's list append)."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for key, value in override.items():
            if key.endswith("+") and isinstance(value, list):
                out[key[:-1]] = [*out.get(key[:-1], []), *value]
            else:
                out[key] = merged(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(override, list)
        and len(base) == len(override)
        and all(isinstance(b, Mapping) and "class_path" in b for b in base)
        and [b["class_path"] for b in base] == [o.get("class_path") for o in override]
    ):
        return [merged(b, o) for b, o in zip(base, override, strict=True)]
    return override


def assert_settings_kept(expected: Any, resolved: Any, where: str = "") -> None:
    """Every setting written in ``expected`` has the same value in ``resolved``."""
    if isinstance(expected, Mapping):
        assert isinstance(resolved, Mapping), f"{where}: {resolved!r} is not a mapping"
        for key, value in expected.items():
            assert key in resolved, f"{where}.{key} is missing from the resolved config"
            assert_settings_kept(value, resolved[key], f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(resolved, list):
        assert len(expected) == len(resolved), f"{where}: {resolved!r} != {expected!r}"
        for index, (value, got) in enumerate(zip(expected, resolved, strict=True)):
            assert_settings_kept(value, got, f"{where}[{index}]")
    else:
        assert resolved == expected, f"{where}: resolved {resolved!r}, the YAML says {expected!r}"


def test_there_are_configs_for_every_stage() -> None:
    names = {config_id(c) for c in CONFIGS}
    for name in ("tokenizer", "scorer", "eval_recon", "annotate", "generator", "eval_gen"):
        assert {f"demo/{name}.yaml", f"ucf101/{name}.yaml"} <= names
    assert {stage(c) for c in CONFIGS} <= set(STAGES)


def test_every_config_has_a_tiny_overlay_and_every_overlay_a_config() -> None:
    for config in [*CONFIGS, *DATA_CONFIGS]:
        assert tiny_overlay(config).is_file()
    stale = [p for p in CONF.rglob("*.yaml") if not (EXPERIMENTS / p.relative_to(CONF)).is_file()]
    assert stale == [], f"overlays of configs that do not exist: {stale}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_config_parses_against_the_code(config: Path, request: pytest.FixtureRequest) -> None:
    """The shipped file(s) alone, resolved: the stage's classes, every written setting kept."""
    subcommand, model_class, data_class = STAGES[stage(config)]
    files = stage_configs(config)
    args = [subcommand, *(a for f in files for a in ("--config", str(f))), "--print_config"]
    expected: dict[str, Any] = {}
    for path in files:
        expected = merged(expected, yaml.safe_load(path.read_text()))
    ckpt = network = None
    if stage(config) in MODEL_FROM:
        assert "model" not in expected  # the model comes from the checkpoint it names
        fixture, network = MODEL_FROM[stage(config)]
        ckpt = request.getfixturevalue(fixture)
        args.append(f"--ckpt_path={ckpt}")
        assert expected.pop("ckpt_path").endswith("checkpoints/last.ckpt")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        run_cli(args)
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(out.getvalue())
    assert resolved["model"]["class_path"] == model_class
    assert resolved["data"]["class_path"] == data_class
    assert_settings_kept(expected, resolved)
    if network is not None:
        assert resolved["ckpt_path"] == str(ckpt)
        # the model section is the checkpoint's: the tiny width its training overlay set
        trained = overlay(f"demo/{network}.yaml")["model"]["init_args"][network]["init_args"]
        assert resolved["model"]["init_args"][network]["init_args"]["width"] == trained["width"]


def test_typo_in_a_key_is_refused_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    config = EXPERIMENTS / "demo" / "tokenizer.yaml"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            [
                "fit",
                "--config",
                str(config),
                "--model.init_args.tokenizer.init_args.widht=64",
                "--print_config",
            ]
        )
    assert exit_info.value.code != 0
    assert "widht" in capsys.readouterr().err


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


# ---------------------------------------------------------------------------- demo set
def test_demo_chain_trains_every_stage_for_its_tiny_steps(
    tokenizer_ckpt: Path, scorer_ckpt: Path, demo_tokens: Path, generator_ckpt: Path
) -> None:
    """The session fixtures ran demo tokenizer -> scorer -> annotate -> generator."""
    for name, ckpt in (
        ("tokenizer", tokenizer_ckpt),
        ("scorer", scorer_ckpt),
        ("generator", generator_ckpt),
    ):
        steps = overlay(f"demo/{name}.yaml")["trainer"]["max_steps"]
        if name == "tokenizer":  # its max_steps counts the discriminator's steps too
            assert 0 < global_step(ckpt) <= steps
        else:
            assert global_step(ckpt) == steps, name
    summary = (demo_tokens / "annotation_summary.md").read_text()
    assert "- windows: 12" in summary  # one 8-frame window per 8-frame training clip


def test_demo_eval_gen_writes_a_report_per_budget_level(
    workspace: Path, generator_ckpt: Path
) -> None:
    """experiments/demo/eval_gen.yaml on the checkpoint its own ckpt_path names."""
    with working_directory(workspace):
        cli = run_cli(["test", *tiny_args("demo/eval_gen.yaml")])
        folder = Path(cli.trainer.log_dir).resolve()
    shipped = yaml.safe_load((EXPERIMENTS / "demo" / "eval_gen.yaml").read_text())
    assert (workspace / shipped["ckpt_path"]).resolve() == generator_ckpt.resolve()
    evaluator = shipped["trainer"]["callbacks"][0]["init_args"]
    tiny = overlay("demo/eval_gen.yaml")["trainer"]["callbacks"][0]["init_args"]
    rows = read_csv(folder / "generation_report.csv")
    assert len(rows) == len(evaluator["budget_levels"])
    assert all(int(r["clips"]) == tiny["num_samples"] for r in rows)
    assert (folder / "generation_report.md").read_text().strip()


def _workspace_copy(workspace: Path, tmp_path: Path, tokenizer_ckpt: Path | None = None) -> Path:
    """A working folder sharing the session shards, with its own runs/.

    Given ``tokenizer_ckpt`` (the session tokenizer), its run is linked in at the path the demo
    scorer reads it from (runs/demo/tokenizer).
    """
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "demo").symlink_to(workspace / "data" / "demo")
    if tokenizer_ckpt is not None:
        (root / "runs" / "demo").mkdir(parents=True)
        (root / "runs" / "demo" / "tokenizer").symlink_to(tokenizer_ckpt.parents[1])
    return root


# the networks with a longer run (`make demo-weights`) and a fine-tune from its export (`make demo`)
PRETRAINED_NETWORKS = ["tokenizer", "scorer"]


def _frozen_tokenizer(network: str, request: pytest.FixtureRequest) -> Path | None:
    """The session tokenizer for a network that trains on a frozen one (the scorer), else None."""
    return request.getfixturevalue("tokenizer_ckpt") if network != "tokenizer" else None


@pytest.mark.parametrize("network", PRETRAINED_NETWORKS)
def test_demo_pretrain_variant_smoke_runs(
    network: str, workspace: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """<network>.pretrain.yaml writes its checkpoints under runs/demo-weights, not runs/demo."""
    root = _workspace_copy(workspace, tmp_path, _frozen_tokenizer(network, request))
    with working_directory(root):
        run_cli(["fit", *tiny_args(f"demo/{network}.pretrain.yaml")])
    folder = root / "runs" / "demo-weights" / network / "checkpoints"
    tiny = overlay(f"demo/{network}.pretrain.yaml")["trainer"]
    every = tiny["callbacks"][0]["init_args"]["every_n_train_steps"]
    expected = {f"step{s}.ckpt" for s in range(every, tiny["max_steps"] + 1, every)}
    assert {p.name for p in folder.glob("*.ckpt")} == expected | {"last.ckpt"}
    assert not (root / "runs" / "demo" / network).exists()  # the variant writes elsewhere


@pytest.mark.parametrize("network", PRETRAINED_NETWORKS)
def test_demo_finetune_variant_starts_from_the_pretrained_weights(
    network: str, workspace: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The shipped init_weights path (pretrained/demo-<network>) holds a tiny export here: the
    session checkpoint of that network."""
    from adaptok.export import export
    from adaptok.pretrained import load_pretrained

    root = _workspace_copy(workspace, tmp_path, _frozen_tokenizer(network, request))
    shipped = yaml.safe_load((EXPERIMENTS / "demo" / f"{network}.finetune.yaml").read_text())
    init_weights = shipped["model"]["init_args"]["init_weights"]
    with working_directory(workspace):  # the recorded train_urls are relative to it
        export(request.getfixturevalue(f"{network}_ckpt"), root / init_weights, overwrite=True)
    with working_directory(root):
        fresh = run_cli(tiny_args(f"demo/{network}.yaml"), run=False).model  # its start
        cli = run_cli(["fit", *tiny_args(f"demo/{network}.finetune.yaml")])
    ckpt = root / "runs" / "demo" / network / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert stored["hyper_parameters"]["init_weights"] == init_weights
    assert (
        cli.trainer.global_step >= overlay(f"demo/{network}.finetune.yaml")["trainer"]["max_steps"]
    )

    def distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
        return sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in b) ** 0.5

    pretrained = getattr(load_pretrained(root / init_weights), network).state_dict()
    tuned = {
        k.removeprefix(f"{network}."): v
        for k, v in stored["state_dict"].items()
        if k.startswith(f"{network}.")
    }
    # a few steps at a tenth of the rate stay near the start, far from a fresh init
    fresh_weights = getattr(fresh, network).state_dict()
    assert distance(tuned, pretrained) < 0.5 * distance(fresh_weights, pretrained)
    if network == "scorer":  # its label normalisation came with the weights: none estimated
        assert stored["hyper_parameters"]["target_mean"] is None  # (the tiny overlay's null)
        for key in ("label_mean", "label_std"):
            assert torch.equal(tuned[key], pretrained[key]), key


# ---------------------------------------------------------------------------- UCF-101 set
@pytest.fixture(scope="module")
def paper_tokenizer_ckpt(workspace: Path) -> Path:
    """experiments/ucf101/tokenizer.yaml, tiny, trained for a few steps in bf16-mixed."""
    with working_directory(workspace):
        run_cli(["fit", *tiny_args("ucf101/tokenizer.yaml")])
    ckpt = workspace / "runs" / "ucf101" / "tokenizer" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="module")
def paper_scorer_ckpt(workspace: Path, paper_tokenizer_ckpt: Path) -> Path:
    """experiments/ucf101/scorer.yaml, tiny, on the tokenizer above (its shipped path)."""
    with working_directory(workspace):
        run_cli(["fit", *tiny_args("ucf101/scorer.yaml")])
    ckpt = workspace / "runs" / "ucf101" / "scorer" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def test_paper_tokenizer_and_scorer_configs_train(
    paper_tokenizer_ckpt: Path, paper_scorer_ckpt: Path
) -> None:
    tokenizer = torch.load(paper_tokenizer_ckpt, map_location="cpu", weights_only=False)
    scorer = torch.load(paper_scorer_ckpt, map_location="cpu", weights_only=False)
    assert tokenizer["global_step"] > 0 and scorer["global_step"] > 0
    # the scorer holds the tokenizer it was given, frozen: the same weights
    shared = [k for k in tokenizer["state_dict"] if k.startswith("tokenizer.")]
    assert shared and all(k in scorer["state_dict"] for k in shared)
    for key in shared:
        assert torch.equal(tokenizer["state_dict"][key], scorer["state_dict"][key]), key


def test_paper_eval_recon_config_smoke_runs(workspace: Path, paper_scorer_ckpt: Path) -> None:
    with working_directory(workspace):
        cli = run_cli(["test", *tiny_args("ucf101/eval_recon.yaml")])  # its own ckpt_path
        folder = Path(cli.trainer.log_dir).resolve()
    shipped = yaml.safe_load((EXPERIMENTS / "ucf101" / "eval_recon.yaml").read_text())
    allocator = merged(
        shipped["trainer"]["callbacks"], overlay("ucf101/eval_recon.yaml")["trainer"]["callbacks"]
    )[1]["init_args"]
    rows = read_csv(folder / "allocation_report.csv")
    assert {r["mode"] for r in rows} - {"-"} == set(allocator["modes"])
    assert {float(r["budget"]) for r in rows if r["mode"] != "-"} == set(allocator["budgets"])
    assert (folder / "token_health.csv").is_file()
