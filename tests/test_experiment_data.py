"""Each experiment set writes its video-shard URLs once, in ``experiments/<set>/data.yaml``.

The stages that read clips through ``VideoShardsDataModule`` (tokenizer and its variants,
scorer, eval_recon) are run as ``adaptok <subcommand> --config experiments/<set>/data.yaml
--config experiments/<set>/<stage>.yaml``: LightningCLI merges the second file's ``data``
section into the first one's, as both name the same ``class_path``. Checked here, without
running a stage (tests/test_experiments.py parses and smoke-runs every composition):

- every set with such a stage has a ``data.yaml``, and it holds only shard URLs;
- no other YAML of the set (nor of its tiny overlays in ``tests/conf``) names one of those
  URLs, except where a ``data.yaml`` cannot reach: the ``predict_urls`` of a
  ``VideoWindowsDataModule`` (annotate), a callback's ``real_urls``, and a stage that sets one
  of ``data.yaml``'s keys to another value (ucf101 eval_recon tests on the training clips);
- the header of every stage YAML and every ``adaptok`` command of the Makefile shows the
  composition the tests run (``tests.helpers.stage_configs``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import CONF, EXPERIMENTS, REPO, stage_configs

VIDEO_SHARDS = "datamodules.VideoShardsDataModule"
VIDEO_WINDOWS = "datamodules.VideoWindowsDataModule"
URL_KEYS = {"train_urls", "val_urls", "test_urls", "predict_urls"}
SUBCOMMANDS = {
    "tokenizer": "fit",
    "scorer": "fit",
    "eval_recon": "test",
    "annotate": "predict",
    "generator": "fit",
    "eval_gen": "test",
}
CALLBACK_REAL_URLS = re.compile(r"^trainer\.callbacks\[\d+\]\.init_args\.real_urls(\[\d+\])?$")

SETS = sorted(path for path in EXPERIMENTS.iterdir() if path.is_dir())
STAGE_CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.name != "data.yaml")


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _base(config: Path) -> Path:
    """``<stage>.yaml`` of a stage or of a variant ``<stage>.<variant>.yaml``."""
    return config.with_name(config.name.split(".")[0] + ".yaml")


def _data_class(config: Path) -> str | None:
    """The datamodule class a stage YAML (or its base, for a variant) names."""
    return (_load(_base(config)).get("data") or {}).get("class_path")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string value of a parsed YAML with its dotted location (``a.b[0].c``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}[{index}]")
    elif isinstance(node, str):
        yield where, node


def restatements(folder: Path, classes_from: Path) -> list[str]:
    """Places in ``folder``'s YAML files other than ``data.yaml`` that restate one of its URLs.

    Args:
        folder: An experiment set (``experiments/<set>``) or its tiny overlays
            (``tests/conf/<set>``), holding a ``data.yaml``.
        classes_from: The experiment set whose stage YAMLs name each stage's datamodule class
            (overlays name none).

    Returns:
        ``"<set>/<file>: <location> = <url>"`` for every URL of ``data.yaml`` named elsewhere,
        except the places a ``data.yaml`` cannot reach (see the module docstring).
    """
    data = _load(folder / "data.yaml")["data"]["init_args"]
    patterns = {url for value in data.values() for url in _as_list(value)}
    found = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "data.yaml":
            continue
        content = _load(path)
        data_class = _data_class(classes_from / path.name)
        own = (content.get("data") or {}).get("init_args") or {}
        for where, value in _strings(content):
            if value not in patterns:
                continue
            key = where.removeprefix("data.init_args.").split("[")[0]
            override = (
                where.startswith("data.init_args.")
                and data_class == VIDEO_SHARDS
                and key in data
                and _as_list(own[key]) != _as_list(data[key])
            )
            windows = data_class == VIDEO_WINDOWS and key == "predict_urls"
            if not (override or windows or CALLBACK_REAL_URLS.match(where)):
                found.append(f"{path.parent.name}/{path.name}: {where} = {value}")
    return found


def _header_command(config: Path) -> str:
    """The leading comment block of a YAML as one line (continuation backslashes removed)."""
    lines = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip().removesuffix("\\"))
    return " ".join(" ".join(lines).split())


def _composed(config: Path) -> str:
    files = stage_configs(config)
    return " ".join(f"--config {path.relative_to(REPO)}" for path in files)


def test_every_set_with_video_shard_stages_has_one_data_yaml_of_urls_only() -> None:
    for folder in SETS:
        readers = [c for c in folder.glob("*.yaml") if _data_class(c) == VIDEO_SHARDS]
        readers = [c for c in readers if c.name != "data.yaml"]
        data_yaml = folder / "data.yaml"
        assert data_yaml.is_file() == bool(readers), folder.name
        if not readers:
            continue
        content = _load(data_yaml)
        assert set(content) == {"data"}, f"{data_yaml}: only the data section"
        assert content["data"]["class_path"] == VIDEO_SHARDS
        urls = content["data"]["init_args"]
        assert urls and set(urls) <= URL_KEYS, f"{data_yaml}: only shard URLs, got {set(urls)}"
        for config in readers:  # each of them is run composed with it, data.yaml first
            assert stage_configs(config)[0] == data_yaml, config


@pytest.mark.parametrize(
    "folder", [s for s in SETS if (s / "data.yaml").is_file()], ids=lambda s: s.name
)
def test_data_yaml_is_the_only_yaml_of_its_set_that_names_its_urls(folder: Path) -> None:
    assert restatements(folder, folder) == []
    tiny = CONF / folder.name
    assert (tiny / "data.yaml").is_file()
    assert restatements(tiny, folder) == []


def test_a_restated_url_is_found(tmp_path: Path) -> None:
    """The check above fails on a copy of the demo set whose scorer restates train_urls."""
    copy = tmp_path / "demo"
    shutil.copytree(EXPERIMENTS / "demo", copy)
    train_urls = _load(copy / "data.yaml")["data"]["init_args"]["train_urls"]
    scorer = _load(copy / "scorer.yaml")
    scorer["data"]["init_args"]["train_urls"] = train_urls
    (copy / "scorer.yaml").write_text(yaml.safe_dump(scorer))
    eval_gen = _load(copy / "eval_gen.yaml")  # a token datamodule reading video shards
    eval_gen["data"]["init_args"]["test_urls"] = train_urls[0]
    (copy / "eval_gen.yaml").write_text(yaml.safe_dump(eval_gen))
    found = restatements(copy, copy)
    assert len(found) == len(train_urls) + 1, found
    assert {line.split(":")[0] for line in found} == {"demo/scorer.yaml", "demo/eval_gen.yaml"}


@pytest.mark.parametrize("config", STAGE_CONFIGS, ids=lambda c: str(c.relative_to(EXPERIMENTS)))
def test_stage_header_shows_the_command_that_composes_it(config: Path) -> None:
    command = f"adaptok {SUBCOMMANDS[config.name.split('.')[0]]} {_composed(config)}"
    assert command in _header_command(config), f"{config.relative_to(REPO)}: no `{command}`"


def test_makefile_runs_each_stage_composed_as_the_tests_do() -> None:
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    commands = re.findall(r"adaptok (?:fit|test|predict)((?:\s+--config\s+\S+?\.yaml)+)", makefile)
    assert commands, "no adaptok stage runs in the Makefile"
    for configs in commands:
        files = [REPO / name for name in re.findall(r"--config\s+(\S+?\.yaml)", configs)]
        assert files == stage_configs(files[-1]), configs
