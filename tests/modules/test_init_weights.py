"""Starting a tokenizer fit from exported weights, and the provenance exports record.

`make demo` starts its tokenizer stage from the committed demo weights through
``TokenizerModule(init_weights=...)``; these tests run the real CLI on the tiny demo config.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from adaptok.export import export
from adaptok.pretrained import load_pretrained
from adaptok.provenance import PROVENANCE_KEY, shard_fingerprint
from modules.cli import run_cli
from tests.conftest import EXPERIMENTS, TINY_TOKENIZER, working_directory

TOKENIZER_YAML = str(EXPERIMENTS / "demo" / "tokenizer.yaml")


@pytest.fixture(scope="module")
def exported(workspace: Path, tokenizer_ckpt: Path) -> Path:
    with working_directory(workspace):  # the recorded train_urls are relative to it
        return export(tokenizer_ckpt, workspace / "exports" / "tiny-tokenizer", overwrite=True)


def _build(workspace: Path, *extra: str):
    with working_directory(workspace):
        return run_cli(["--config", TOKENIZER_YAML, *TINY_TOKENIZER, *extra], run=False)


def test_export_records_commit_data_fingerprint_and_config(
    workspace: Path, tokenizer_ckpt: Path, exported: Path
) -> None:
    checkpoint = torch.load(tokenizer_ckpt, map_location="cpu", weights_only=False)
    assert checkpoint[PROVENANCE_KEY]["commit"]  # a hash, or "unknown" outside a checkout
    data = json.loads((exported / "spec.json").read_text())["info"]["training_data"]
    with working_directory(workspace):
        expected = shard_fingerprint("data/demo/synthetic/train-*.tar", "train")
    assert expected is not None and data["fingerprint"] == expected["sha256"]
    assert data["commit"] == checkpoint[PROVENANCE_KEY]["commit"]
    assert data["fingerprinted_at"] == "fit start"  # recorded by the run, not at export
    assert (exported / "config.yaml").is_file()  # found beside the checkpoint's run
    card = (exported / "README.md").read_text()
    assert expected["sha256"] in card


def test_fingerprint_follows_the_bytes(tmp_path: Path, workspace: Path) -> None:
    shards = sorted((workspace / "data" / "demo" / "synthetic").glob("train-*.tar"))[:2]
    for shard in shards:
        shutil.copy(shard, tmp_path / shard.name)
    pattern = str(tmp_path / "train-*.tar")
    first = shard_fingerprint(pattern, "train")
    assert first == shard_fingerprint([pattern], "train")  # stable
    by_folder = shard_fingerprint(str(tmp_path), "train")  # same files, another spelling
    assert by_folder is not None and by_folder["sha256"] == first["sha256"]
    assert shard_fingerprint(pattern, "train", max_bytes=100) is None  # too large to hash
    with (tmp_path / shards[0].name).open("ab") as handle:
        handle.write(b"\0" * 512)  # one more tar block: same members, other bytes
    assert shard_fingerprint(pattern, "train")["sha256"] != first["sha256"]
    assert shard_fingerprint("pipe:cat x.tar") is None
    assert shard_fingerprint([]) is None


def test_fit_starts_from_the_exported_weights(workspace: Path, exported: Path) -> None:
    cli = _build(workspace, f"--model.init_args.init_weights={exported}")
    module = cli.model
    stored = load_pretrained(exported).tokenizer.state_dict()
    assert any(not torch.equal(v, stored[k]) for k, v in module.tokenizer.state_dict().items())
    module.trainer = cli.trainer  # a fit without ckpt_path: setup("fit") loads the weights
    module.setup("fit")
    for key, value in module.tokenizer.state_dict().items():
        assert torch.equal(value, stored[key]), key


def test_resumed_fit_keeps_its_own_weights(workspace: Path, exported: Path) -> None:
    cli = _build(workspace, f"--model.init_args.init_weights={exported}")
    module = cli.model
    before = {k: v.clone() for k, v in module.tokenizer.state_dict().items()}
    cli.trainer.ckpt_path = "resumed.ckpt"  # what Trainer.fit(ckpt_path=...) sets
    module.trainer = cli.trainer
    module.setup("fit")
    assert all(torch.equal(v, before[k]) for k, v in module.tokenizer.state_dict().items())


def test_other_spec_is_refused_naming_the_first_difference(workspace: Path, exported: Path) -> None:
    cli = _build(
        workspace,
        f"--model.init_args.init_weights={exported}",
        "--model.init_args.tokenizer.init_args.codebook_size=32",
    )
    cli.model.trainer = cli.trainer
    with pytest.raises(ValueError, match=r"init_args\.codebook_size 64 != 32"):
        cli.model.setup("fit")


def test_missing_init_weights_is_a_one_line_user_error(workspace: Path) -> None:
    from modules.loading import CheckpointError

    cli = _build(workspace, "--model.init_args.init_weights=nowhere/demo-tokenizer")
    cli.model.trainer = cli.trainer
    with pytest.raises(CheckpointError, match="init_weights: .*nowhere.*make demo-weights"):
        cli.model.setup("fit")


def _fit_one_step(exported: Path, train_urls: str) -> None:
    run_cli(
        [
            "fit",
            "--config",
            TOKENIZER_YAML,
            *TINY_TOKENIZER,
            f"--model.init_args.init_weights={exported}",
            f"--data.init_args.train_urls={train_urls}",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.default_root_dir=runs/init_weights",
            "--trainer.logger=false",
            "--trainer.callbacks=null",
            "--trainer.enable_checkpointing=false",
        ]
    )


def test_shards_the_weights_never_saw_give_a_warning(
    tmp_path: Path, workspace: Path, exported: Path
) -> None:
    shards = sorted((workspace / "data" / "demo" / "synthetic").glob("train-*.tar"))
    with working_directory(workspace), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit_one_step(exported, str(shards[0]))  # one of the shards it was trained on
    assert not [w for w in caught if "trained on other shards" in str(w.message)]
    changed = tmp_path / shards[0].name
    shutil.copy(shards[0], changed)
    with changed.open("ab") as handle:
        handle.write(b"\0" * 512)  # one more tar block: same members, other bytes
    with (
        working_directory(workspace),
        pytest.warns(UserWarning, match=r"trained on other shards: 1 of this run's 1 train"),
    ):
        _fit_one_step(exported, str(changed))


def test_checkpoints_record_the_commit_the_run_started_at(monkeypatch) -> None:
    """A long run must not record whatever the checkout holds when it saves."""
    from jsonargparse import Namespace
    from lightning.pytorch.cli import LightningArgumentParser

    import modules.cli as cli

    monkeypatch.setattr(cli, "git_commit", lambda: "started-at")
    callback = cli.ProvenanceSaveConfigCallback(LightningArgumentParser(), Namespace())
    monkeypatch.setattr(cli, "git_commit", lambda: "moved-on")
    checkpoint: dict = {}
    callback.on_save_checkpoint(None, None, checkpoint)  # type: ignore[arg-type]
    assert checkpoint[PROVENANCE_KEY]["commit"] == "started-at"
