"""`load_pretrained`, `adaptok export` and the converter's refusals."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptok import load_pretrained
from adaptok.export import export
from adaptok.pretrained import PretrainedAdapTok, build_safe_network
from modules.convert_official import OfficialCheckpointError, main, write_suite_checkpoints

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(converted) -> PretrainedAdapTok:
    return load_pretrained(converted["scorer"])


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory) -> Path:
    return export(converted["scorer"], tmp_path_factory.mktemp("export") / "scorer")


def _video(model: PretrainedAdapTok, batch: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    return torch.rand(batch, 3, model.num_frames, size, size, generator=generator)


# ----------------------------------------------------------------------------- API
def test_tokenize_per_clip_spends_each_clips_budget(model):
    video = _video(model)
    tokens = model.tokenize(video, budget=0.5, mode="per_clip")
    k, m = model.num_blocks, model.tokens_per_block
    assert tokens.codes.shape == (3, k, m) and tokens.lengths.shape == (3, k)
    assert tokens.num_tokens.tolist() == [k * m // 2] * 3
    assert set(tokens.lengths.flatten().tolist()) <= set(model.candidate_lengths)
    codes = model.encode(video).codes.view(3, k, m)
    kept = torch.arange(m)[None, None, :] < tokens.lengths[:, :, None]
    assert torch.equal(tokens.codes[kept], codes[kept])
    assert bool((tokens.codes[~kept] == -1).all())


def test_detokenize_matches_the_tokenizer(model):
    video = _video(model, 2)
    tokens = model.tokenize(video, budget=0.75, mode="per_clip")
    recon = model.detokenize(tokens.codes, tokens.lengths)
    assert recon.shape == video.shape
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    flat = model.encode(video).codes
    expected = model.tokenizer.decode(flat, tokens.lengths).clamp(0, 1)
    assert torch.equal(recon, expected)
    assert torch.equal(model.detokenize(tokens.codes.flatten(1), tokens.lengths), recon)


def test_tokenize_other_modes_and_inputs(model):
    video = _video(model, 2)
    streaming = model.tokenize(video, budget=0.5, mode="streaming")
    assert streaming.lengths.shape == (2, model.num_blocks)
    uniform = model.tokenize(video, budget=0.25, mode="uniform")
    assert bool((uniform.lengths == 2).all())
    target = model.tokenize(video, budget=None, mode="target", threshold=0.3)
    assert bool((target.lengths >= 1).all())
    single = (video[0] * 255).round().to(torch.uint8)  # (C, T, H, W) uint8
    assert model.tokenize(single, budget=0.5).codes.shape[0] == 1


def test_tokenize_refuses_bad_requests(model, converted):
    video = _video(model, 1)
    with pytest.raises(ValueError, match="unknown mode"):
        model.tokenize(video, mode="batch")
    with pytest.raises(ValueError, match="threshold"):
        model.tokenize(video, budget=0.5, mode="target", threshold=0.2)
    tokenizer_only = load_pretrained(converted["tokenizer"])
    assert tokenizer_only.scorer is None
    with pytest.raises(ValueError, match="needs a scorer"):
        tokenizer_only.tokenize(video, budget=0.5)
    assert tokenizer_only.tokenize(video, budget=0.5, mode="uniform").num_tokens.item() == 16


def test_generator_checkpoint_loads_all_networks(converted):
    model = load_pretrained(converted["generator"])
    assert model.generator is not None and model.scorer is None
    assert model.info["budgets"] == [0.5]


# ----------------------------------------------------------------------------- export
def test_export_reads_back_bit_exactly(converted, exported):
    from_ckpt = load_pretrained(converted["scorer"]).export_state()
    from_export = load_pretrained(exported).export_state()
    assert from_ckpt.keys() == from_export.keys()
    for key, value in from_ckpt.items():
        assert value.dtype == from_export[key].dtype, key
        assert torch.equal(value, from_export[key]), key
    spec = json.loads((exported / "spec.json").read_text())
    assert spec["format"] == "adaptok-export/1"
    assert set(spec["networks"]) == {"tokenizer", "scorer"}
    assert spec["info"]["metric"] == "lpips"
    card = (exported / "README.md").read_text()
    for section in ("## Architecture", "## Training recipe and data", "## Results", "## Licence"):
        assert section in card
    assert "MIT" in card and "BlockCausalScorer" in card


def test_export_whose_spec_disagrees_with_its_weights_is_refused_in_one_line(exported, tmp_path):
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(exported, edited)
    spec = json.loads((edited / "spec.json").read_text())
    spec["networks"]["tokenizer"]["init_args"]["token_mixing"] = True  # adds two tensors
    (edited / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(
        ValueError, match=r"\(tokenizer\): weights do not match .* 'decoder_mixing'"
    ) as error:
        load_pretrained(edited)
    assert "\n" not in str(error.value)


def test_export_refuses_to_overwrite(converted, exported):
    with pytest.raises(FileExistsError):
        export(converted["scorer"], exported)
    export(converted["scorer"], exported, overwrite=True)


def test_export_model_card_takes_the_report_table(converted, tmp_path):
    report = tmp_path / "REPORT.md"
    report.write_text("# Demo\n\n## Reconstruction\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\ntext\n")
    folder = export(converted["tokenizer"], tmp_path / "tok", report=report)
    card = (folder / "README.md").read_text()
    assert "| 1 | 2 |" in card and "**Reconstruction**" in card


def _card_call(card: str) -> str:
    """The ``model.tokenize(...)`` call of a model card's usage paragraph."""
    match = re.search(r"`tokens = (model\.tokenize\(video, [^`]*\))`", card)
    assert match is not None, card[:600]
    return match.group(1)


def test_export_model_card_usage_works_for_the_exported_stage(converted, exported, tmp_path):
    """A tokenizer-only export's card shows mode="uniform" (per_clip needs a scorer)."""
    tokenizer_export = export(converted["tokenizer"], tmp_path / "tokenizer")
    cases = {
        exported: ('mode="per_clip"', "`threshold` in the scorer's cost units: lpips (LPIPS"),
        tokenizer_export: ('mode="uniform"', "This export holds no scorer"),
    }
    for folder, (mode, note) in cases.items():
        card = (folder / "README.md").read_text()
        call = _card_call(card)
        assert mode in call and note in card, card[:600]
        model = load_pretrained(folder)
        video = _video(model, 1)
        tokens = eval(call, {"model": model, "video": video})  # the card's example, as written
        assert tokens.codes.shape == (1, model.num_blocks, model.tokens_per_block)
    tokenizer_card = (tokenizer_export / "README.md").read_text()
    assert 'mode="per_clip"' not in tokenizer_card
    assert "--mode uniform" in tokenizer_card


def test_export_loads_without_lightning_and_without_unpickling(exported, tmp_path):
    script = f"""
import pickle, sys
import torch
for name in ("lightning", "pytorch_lightning", "modules"):
    sys.modules[name] = None  # importing them now fails
def refuse(*args, **kwargs):
    raise AssertionError("unpickling attempted")
torch.load = refuse
pickle.load = pickle.loads = refuse
from adaptok import load_pretrained
model = load_pretrained({str(exported)!r})
video = torch.rand(1, 3, model.num_frames, model.image_size, model.image_size)
tokens = model.tokenize(video, budget=0.5)
assert model.detokenize(tokens.codes, tokens.lengths).shape == video.shape
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_cli_export_subcommand(converted, tmp_path, monkeypatch, capsys):
    from modules.cli import main as adaptok_main

    out = tmp_path / "cli_export"
    monkeypatch.setattr(
        sys, "argv", ["adaptok", "export", str(converted["tokenizer"]), "--out", str(out)]
    )
    with pytest.raises(SystemExit) as exit_info:
        adaptok_main()
    assert exit_info.value.code == 0
    assert (out / "model.safetensors").is_file()
    monkeypatch.setattr(
        sys, "argv", ["adaptok", "export", str(tmp_path / "nope.ckpt"), "--out", str(out)]
    )
    with pytest.raises(SystemExit) as exit_info:
        adaptok_main()
    assert exit_info.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- safety
def test_specs_may_only_name_suite_networks():
    with pytest.raises(ValueError, match="refusing to build 'os.system'"):
        build_safe_network({"class_path": "os.system", "init_args": {"command": "true"}})


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoints_with_code_are_refused(converted, tmp_path):
    checkpoint = torch.load(converted["tokenizer"], weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = _Payload()
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="cannot be read as tensors") as refused:
        load_pretrained(path)
    message = str(refused.value)
    assert "\n" not in message and "\x1b" not in message, message
    assert "holds a print object, which a safe load refuses" in message, message


def test_what_is_not_a_checkpoint_or_export_is_refused_in_one_line(exported, tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("weights: see the wiki\n" * 10)
    plain = tmp_path / "plain"
    plain.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "spec.json"):
        (broken / name).write_bytes((exported / name).read_bytes())
    (broken / "spec.json").write_text("{not json")
    cases = {
        tmp_path / "none.ckpt": (FileNotFoundError, "none.ckpt: no such file or folder"),
        plain: (FileNotFoundError, "plain is not an adaptok export (needs spec.json and model"),
        notes: (ValueError, "notes.ckpt is not a checkpoint (torch.save writes a zip archive"),
        broken: (ValueError, "spec.json cannot be read as JSON: Expecting property name"),
    }
    for path, (kind, message) in cases.items():
        with pytest.raises(kind) as refused:
            load_pretrained(path)
        text = str(refused.value)
        assert message in text and "\n" not in text and text.startswith(str(path)), text


# ----------------------------------------------------------------------------- converter
def _convert_tokenizer(reference, tmp_path, state) -> str:
    path = tmp_path / "bad.pt"
    torch.save(
        {"model": {"name": "adaptok", "args": reference.tokenizer_config, "sd": state}}, path
    )
    with pytest.raises(OfficialCheckpointError) as error:
        write_suite_checkpoints(tmp_path / "out", tokenizer=path)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_official_tensor_is_named(reference, tmp_path):
    state = dict(reference.tokenizer_state)
    del state["encoder.blocks.1.attn.proj.bias"]
    message = _convert_tokenizer(reference, tmp_path, state)
    assert "'encoder.blocks.1.attn.proj.bias' is missing" in message


def test_mismatching_shape_is_named(reference, tmp_path):
    state = dict(reference.tokenizer_state)
    state["decoder.blocks.0.mlp.fc1.weight"] = state["decoder.blocks.0.mlp.fc1.weight"][:-1]
    message = _convert_tokenizer(reference, tmp_path, state)
    assert "'decoder.blocks.0.mlp.fc1.weight'" in message and "shape" in message


def test_unknown_official_tensor_is_named(reference, tmp_path):
    state = dict(reference.tokenizer_state)
    state["decoder.extra_norm.weight"] = torch.ones(3)
    message = _convert_tokenizer(reference, tmp_path, state)
    assert "'decoder.extra_norm.weight'" in message and "no counterpart" in message


def _convert_generator(official_files, tmp_path, state, config) -> str:
    """Converts a generator ``.pt`` made of ``state`` and ``config``; returns the error."""
    path = tmp_path / "generator.pt"
    torch.save({"model": {**config, "sd": state}}, path)
    with pytest.raises(OfficialCheckpointError) as error:
        write_suite_checkpoints(
            tmp_path / "out", tokenizer=official_files["tokenizer"], generator=path
        )
    message = str(error.value)
    assert "\n" not in message
    return message


def _fp(reference) -> tuple[dict, dict]:
    return dict(reference.fp_generator_state), json.loads(json.dumps(reference.fp_generator_config))


def test_class_conditional_generator_labelled_frame_prediction_is_refused(
    reference, official_files, tmp_path
):
    config = json.loads(json.dumps(reference.generator_config))
    config["args"]["frame_prediction"] = True
    message = _convert_generator(official_files, tmp_path, reference.generator_state, config)
    assert "frame-prediction condition holds 0 codes" in message


def test_mismatching_fp_generator_tensor_is_named(reference, official_files, tmp_path):
    state, config = _fp(reference)
    state["layers.1.feed_forward.w2.weight"] = state["layers.1.feed_forward.w2.weight"][:, :-1]
    message = _convert_generator(official_files, tmp_path, state, config)
    assert "'layers.1.feed_forward.w2.weight'" in message and "shape" in message
    state, config = _fp(reference)
    state["abs_pe"] = state["abs_pe"][:, :-1]
    message = _convert_generator(official_files, tmp_path, state, config)
    assert "'abs_pe' has 42 positions" in message
    state, config = _fp(reference)
    state["cls_embedding.embedding_table.weight"] = torch.zeros(6, 24)
    message = _convert_generator(official_files, tmp_path, state, config)
    assert "'cls_embedding.embedding_table.weight'" in message and "no counterpart" in message


def test_fp_generator_from_block_0_is_refused(reference, official_files, tmp_path):
    state, config = _fp(reference)
    config["args"]["start_ar_block_idx"] = 0  # contradicts the 43-position table
    message = _convert_generator(official_files, tmp_path, state, config)
    assert "'abs_pe' has 43 positions" in message
    config["args"]["tot_blocks"] = 4  # a real start-0 model: one more block of 8 + <EOB>
    state["abs_pe"] = torch.cat([state["abs_pe"], state["abs_pe"][:, :9]], 1)
    message = _convert_generator(official_files, tmp_path, state, config)
    assert "generates blocks 0..3 (start_ar_block_idx 0)" in message


def test_fp_condition_of_partial_blocks_is_refused(reference, official_files, tmp_path):
    state, config = _fp(reference)
    config["args"]["cls_token_num"] = 13
    message = _convert_generator(official_files, tmp_path, state, config)
    assert "holds 12 codes" in message


def test_two_generators_of_one_kind_are_refused(official_files, tmp_path):
    with pytest.raises(OfficialCheckpointError, match="a second fp generator"):
        write_suite_checkpoints(
            tmp_path / "out",
            tokenizer=official_files["tokenizer"],
            generator=[official_files["fp_generator"], official_files["fp_generator"]],
        )


def test_converter_cli_prints_one_line(tmp_path, capsys):
    assert main(["--tokenizer", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err


def test_converted_scorer_names_its_lightning_module(converted):
    from modules.checkpoint_args import with_model_from_checkpoint

    args = with_model_from_checkpoint(["test", "--ckpt_path", str(converted["scorer"])])
    model = json.loads(next(a for a in args if a.startswith("--model=")).split("=", 1)[1])
    assert model["class_path"] == "modules.scorer.ScorerModule"
    assert model["init_args"]["scorer"]["init_args"]["context_attention"] == "full"
    import inspect

    from modules.scorer import ScorerModule

    accepted = set(inspect.signature(ScorerModule).parameters)
    assert set(model["init_args"]) <= accepted  # the CLI passes them all to __init__


def test_converted_scorer_restores_as_a_lightning_stage(converted):
    from adaptok.metrics.weights import WeightsUnavailableError
    from modules.loading import load_stage

    try:
        module = load_stage(converted["scorer"])
    except WeightsUnavailableError as error:
        pytest.skip(f"LPIPS weights unavailable (run `make weights`): {error}")
    direct = load_pretrained(converted["scorer"])
    for key, value in direct.scorer.state_dict().items():
        assert torch.equal(module.scorer.state_dict()[key], value)


# ----------------------------------------------------------------------------- docs
def test_readme_example_runs(converted, capsys):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "load_pretrained(" in code and "detokenize(" in code
    code = code.replace('"runs/demo/scorer/checkpoints/last.ckpt"', repr(str(converted["scorer"])))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["recon"].shape == namespace["video"].shape
    assert "torch.Size([2, 4, 8])" in capsys.readouterr().out


def test_suite_checkpoint_with_yaml_class_paths(converted, tmp_path):
    """A stage checkpoint as `adaptok fit` writes it: re-exported class paths, extra weights."""
    checkpoint = torch.load(converted["scorer"], weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["scorer"]["class_path"] = "adaptok.nn.BlockCausalScorer"
    hparams["scorer_spec"]["class_path"] = "adaptok.nn.BlockCausalScorer"
    hparams["tokenizer_spec"]["class_path"] = "adaptok.nn.AdapTokTokenizer"
    hparams["_class_path"] = "modules.ScorerModule"
    checkpoint.pop("adaptok_official")
    checkpoint["state_dict"]["quality.perceptual.lin.weight"] = torch.ones(2)  # not a network
    checkpoint["optimizer_states"] = [{"state": {}, "param_groups": [{"lr": 1e-3}]}]
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    model = load_pretrained(path)
    assert model.scorer is not None and model.info["cost_normalisation"][1] > 0
    reference = load_pretrained(converted["scorer"])
    for key, value in reference.export_state().items():
        assert torch.equal(model.export_state()[key], value)


# ----------------------------------------------------------------------------- suite tools
def test_adaptok_tokenize_runs_on_the_converted_scorer(converted, tmp_path, capsys):
    import numpy as np

    from adaptok.data.video_io import encode_video
    from modules.tokenize_cli import main as tokenize_main

    frames = np.random.default_rng(0).integers(0, 255, (20, 24, 32, 3), dtype=np.uint8)
    video = tmp_path / "clip.mp4"
    video.write_bytes(encode_video(frames, 10.0, crf=0))
    out = tmp_path / "tokens.npz"
    code = tokenize_main(
        [str(video), "--ckpt", str(converted["scorer"]), "--budget", "0.5", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    saved = np.load(out)
    assert saved["lengths"].shape == (2, 4)  # two 8-frame windows of 4 blocks
    assert (saved["lengths"].sum(axis=1) == 16).all()


def test_converted_generator_samples_clips(converted):
    from adaptok.nn.sampling import sample

    model = load_pretrained(converted["generator"])
    labels = torch.tensor([0, 3])
    out = sample(
        model.generator,
        labels,
        torch.zeros_like(labels),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.lengths.shape == (2, model.num_blocks)
    video = model.detokenize(out.codes, out.lengths)
    assert video.shape == (2, 3, model.num_frames, model.image_size, model.image_size)


def test_converted_fp_generator_predicts_frames(reference, converted):
    from adaptok.nn.sampling import sample

    model = load_pretrained(converted["fp_generator"])
    k, m = model.num_blocks, model.generator.tokens_per_block
    condition = reference.outputs["fp_condition_codes"].view(-1, k, m)
    null = torch.zeros(condition.shape[0], dtype=torch.long)
    out = sample(
        model.generator,
        null,
        null,
        condition_codes=condition,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(out.codes[:, 0], condition[:, 0])  # block 0 is the condition's
    assert (out.lengths[:, 0] == m).all() and (out.lengths[:, 1:] >= 1).all()
    video = model.detokenize(out.codes, out.lengths)
    assert video.shape == (2, 3, model.num_frames, model.image_size, model.image_size)


def test_converted_generator_restores_as_a_lightning_stage(converted):
    from modules.loading import load_stage

    module = load_stage(converted["generator"])
    direct = load_pretrained(converted["generator"]).generator
    for key, value in direct.state_dict().items():
        assert torch.equal(module.generator.state_dict()[key], value)


def test_results_section_edge_cases() -> None:
    from adaptok.export import _results_section

    table = "| a | b |\n|---|---|\n| 1 | 2 |"
    assert _results_section(f"intro\n\n{table}\n") == table  # no heading: the table on
    # a wall-times table under a subsection heading is passed over too
    text = f"## Run\n\n### Stage wall times\n\n{table}\n\n## Results\n\n| x |\n|---|\n"
    assert _results_section(text) == "**Results**\n\n| x |\n|---|"
    # a '# comment' inside a code fence is no heading: the quote keeps the fence whole
    fence = "```\n# make demo\n```"
    quoted = _results_section(f"## Targets\n\n{table}\n\n{fence}\n\n## Next\n")
    assert quoted == f"**Targets**\n\n{table}\n\n{fence}"
    assert _results_section("| lone line |\n\ntext\n") == ""  # no rule under it: no table


def test_model_card_quotes_the_reports_results_not_its_wall_times(converted, tmp_path):
    report = tmp_path / "REPORT.md"
    report.write_text(
        "# Demo report\n\n## Stage wall times\n\n| stage | wall_s |\n|---|---|\n| scorer | 9 |\n\n"
        "## Adaptivity targets\n\n### Paper\n\n| target | met |\n|---|---|\n| gain | yes |\n\n"
        "1 of 1 met.\n\n### Further\n\n| target | met |\n|---|---|\n| savings | NO |\n\n"
        "0 of 1 met.\n\n## Token health\n\n| clips | 63 |\n|---|---|\n"
    )
    card = (export(converted["scorer"], tmp_path / "out", report=report) / "README.md").read_text()
    results = card.split("## Results", 1)[1].split("## Licence", 1)[0]
    # the whole section of the first results table: both target tables and their counts
    assert "**Adaptivity targets**" in results and "| gain | yes |" in results
    assert "**Further**" in results and "| savings | NO |" in results and "0 of 1 met." in results
    assert "wall_s" not in results and "Token health" not in results
    # a tokenizer-only export quotes its tokens' figures, not the scorer's allocation targets
    card = export(converted["tokenizer"], tmp_path / "tok", report=report) / "README.md"
    results = card.read_text().split("## Results", 1)[1].split("## Licence", 1)[0]
    assert "**Token health**" in results and "| clips | 63 |" in results
    assert "gain" not in results
    # the weights get the umask's permissions, as every other file of the export
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "tok" / "model.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask
