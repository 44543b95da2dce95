"""Top-level verbs: demo, train, eval, ablate. Thin: each calls one library function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from geostrata.atomic import write_text_atomic
from geostrata.commands import DEVICE_HELP, KB_EXTRA_HELP, KB_EXTRA_TRAIN_HELP, fail
from geostrata.errors import GeoStrataError


def register(app: typer.Typer) -> None:
    """Attach the top-level verbs to the root app."""
    for command in (demo, train, evaluate, ablate):
        app.command(name=command.__name__ if command is not evaluate else "eval")(command)


def _print_summary(title: str, summary: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{100 * value:.1f}%")
    console = Console()
    console.print(title)  # on its own line: as a table title it wrapped to the narrow table
    console.print(table)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for data, checkpoints and the report.")] = Path(
        "runs/demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="A few-minute profile (smaller data, fewer steps).")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(help="default | quick | smol (the pretrained SmolLM2-135M LLM, ~20 min)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the benchmark and of training.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted demo run in OUT.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. stage2.max_steps=200.")
    ] = None,
) -> None:
    """Synthesize the benchmark, train the tiny model in both stages, evaluate, write the report."""
    from geostrata.demo import PROFILES, run_demo

    chosen = profile or ("quick" if quick else "default")
    if chosen not in PROFILES:
        raise fail(ValueError(f"--profile {profile!r}: expected one of {sorted(PROFILES)}"))
    if quick and profile is not None:
        raise fail(ValueError("--quick is --profile quick: give one of them"))
    try:
        result = run_demo(out, chosen, seed, resume, extra=set_ or [])
    except GeoStrataError as exc:
        raise fail(exc) from exc
    _print_summary("GeoStrata demo (measured on the held-out split)", result.summary)
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in result.stage_wall_s.items())
    typer.echo(f"wall time {result.wall_s:.0f}s ({stages})")
    typer.echo(f"report: {result.report}")


def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/experiments/).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. model.top_k=8.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoints.")] = False,
    evaluate_after: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate when done.")
    ] = True,
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_TRAIN_HELP)] = None,
) -> None:
    """Train both stages of an experiment (runs under accelerate launch / torchrun unchanged)."""
    import dataclasses

    from geostrata.session.experiment import ExperimentConfig

    try:
        cfg = ExperimentConfig.from_yaml(config, set_ or [])  # all of it, before torch loads
        if kb_extra:
            extra = [*cfg.knowledge_extra, *map(str, kb_extra)]
            cfg = dataclasses.replace(cfg, knowledge_extra=extra)
        from geostrata.evaluate.suite import evaluate_session
        from geostrata.train.pipeline import run_experiment

        result = run_experiment(cfg, resume=resume)
        typer.echo(f"model saved to {result.model_dir}")
        if evaluate_after and result.session.task.eval:
            metrics = evaluate_session(result.session, Path(cfg.output_dir) / "report")
            _print_summary("evaluation", metrics.summary())
            typer.echo(f"report: {metrics.report}")
    except GeoStrataError as exc:
        raise fail(exc) from exc


def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (OUTPUT_DIR/model).")],
    data: Annotated[
        Path | None, typer.Option(help="Data root (default: the training data).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="synthetic | rsvqa | folder | instruct | geochat_bench")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split name or file to evaluate.")] = None,
    prefix: Annotated[str | None, typer.Option(help="RSVQA prefix: LR, USGS or SYN.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default MODEL_DIR/../report-eval).")
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_HELP)] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="Tasks, comma-separated: vqa, cls, caption, ground, region (default: every "
            "task the evaluation data holds)."
        ),
    ] = None,
) -> None:
    """Evaluate a saved model: VQA per type and level (AA/OA, prior), scene classification,
    captions and region descriptions (BLEU/METEOR/ROUGE-L/CIDEr), grounding (Acc@0.5, IoU)."""
    from geostrata.evaluate.sharding import init_from_env
    from geostrata.evaluate.suite import evaluate_session
    from geostrata.evaluate.tasks import parse_tasks
    from geostrata.session import open_session

    try:
        tasks = parse_tasks(task) if task is not None else None
    except GeoStrataError as exc:  # before the model loads
        raise fail(exc) from exc
    init_from_env()  # under torchrun: evaluate shards in parallel, gather, rank 0 writes
    try:
        overrides = {"root": data, "kind": kind, "eval_split": split, "prefix": prefix}
        session = open_session(
            model_dir,
            {k: str(v) for k, v in overrides.items() if v is not None},
            device=device,
            knowledge_extra=kb_extra or [],
        )
        metrics = evaluate_session(session, out or model_dir.parent / "report-eval", tasks=tasks)
    except GeoStrataError as exc:
        raise fail(exc) from exc
    _print_summary("evaluation", metrics.summary())
    typer.echo(f"report: {metrics.report}")


def ablate(
    out: Annotated[Path, typer.Option(help="Folder for all runs.")] = Path("runs/ablate"),
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..N-1).")] = 3,
    profile: Annotated[
        str,
        typer.Option(
            help="Size profile: ablate (default), quick, default, or zeroshot (held-out classes)."
        ),
    ] = "ablate",
    variant: Annotated[
        list[str] | None, typer.Option(help="Subset of variants (default: all).")
    ] = None,
    table: Annotated[Path | None, typer.Option(help="Also write the markdown table here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the per-seed results as JSON here.")
    ] = None,
) -> None:
    """Full model vs its ablations and the LLaVA baseline (zeroshot: held-out classes, seed =
    fold, cue text on in the full model)."""
    from geostrata.ablate import (
        columns_for,
        default_variants,
        markdown_table,
        run_ablation,
        variants_for,
    )
    from geostrata.demo import PROFILES

    if profile not in PROFILES:
        raise fail(ValueError(f"unknown profile {profile!r}; known: {list(PROFILES)}"))
    known = variants_for(profile)
    chosen = variant or default_variants(profile)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise fail(ValueError(f"unknown variant(s) {unknown}; known: {list(known)}"))
    try:
        result = run_ablation(out, chosen, list(range(seeds)), profile)
    except GeoStrataError as exc:
        raise fail(exc) from exc
    if json_out is not None:
        write_text_atomic(json_out, (out / "ablation.json").read_text(encoding="utf-8"))
    text = markdown_table(result, columns_for(profile))
    typer.echo(text)
    typer.echo(f"wall time {result.wall_s:.0f}s")  # the prior is the table's last row
    if table is not None:
        write_text_atomic(table, text + "\n")
