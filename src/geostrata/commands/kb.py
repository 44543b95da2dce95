"""`geostrata kb ...`: build, query, inspect and validate the knowledge base.

Heavy libraries (torch, transformers, faiss) are imported inside the commands so that
`geostrata --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from geostrata.errors import GeoStrataError

if TYPE_CHECKING:
    from geostrata.knowledge.base import KnowledgeBase
    from geostrata.knowledge.encoder import TextEncoder

app = typer.Typer(no_args_is_help=True)

EncoderOpt = Annotated[
    str, typer.Option(help="Text encoder: minilm (default) or hashing (no weights, tests).")]
KbOpt = Annotated[
    Path | None, typer.Option("--kb", help="A folder written by `geostrata kb build`.")]
CacheOpt = Annotated[
    Path | None, typer.Option(help="Embedding cache folder (default ~/.cache/geostrata).")]
SourceOpt = Annotated[
    list[str] | None,
    typer.Option(help="'default' or a .jsonl/.yaml file or folder; repeatable."),
]


def _fail(error: Exception) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
    return typer.Exit(1)


def _encoder(name: str) -> TextEncoder:
    from geostrata.knowledge.encoder import HashingEncoder, MiniLMEncoder

    if name == "minilm":
        return MiniLMEncoder()
    if name == "hashing":
        return HashingEncoder()
    raise GeoStrataError(f"--encoder {name!r}: expected 'minilm' or 'hashing'")


def _open(kb_dir: Path | None, encoder: str, cache_dir: Path | None) -> KnowledgeBase:
    """A saved base (its own encoder unless `--encoder` differs), or the shipped one."""
    from geostrata.knowledge.base import KnowledgeBase

    if kb_dir is not None:
        saved_minilm = encoder == "minilm"
        return KnowledgeBase.load(kb_dir, None if saved_minilm else _encoder(encoder), cache_dir)
    return KnowledgeBase.load("default", _encoder(encoder), cache_dir)


@app.command()
def build(
    out: Annotated[Path, typer.Option(help="Folder to write the base to.")],
    source: SourceOpt = None,
    encoder: EncoderOpt = "minilm",
    index: Annotated[str, typer.Option(help="FAISS: auto, flat, ivf, ivfpq or hnsw.")] = "auto",
    cache_dir: CacheOpt = None,
) -> None:
    """Embed every entry and write entries, embeddings and FAISS indexes to OUT."""
    from rich.progress import Progress

    from geostrata.knowledge.base import KnowledgeBase
    from geostrata.knowledge.index import IndexConfig

    sources = source or ["default"]
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("embedding entries", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            kb = KnowledgeBase.load(sources[0], _encoder(encoder), cache_dir, extra=sources[1:],
                                    index_config=IndexConfig(kind=index), progress=advance)
        kb.save(out)
    except GeoStrataError as error:
        raise _fail(error) from error
    stats = kb.stats()
    typer.echo(f"wrote {stats.n_entries} entries ({stats.per_level}) "
               f"with {stats.encoder_name} to {out}")


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="Free text, e.g. 'white round tanks near a port'.")],
    level: Annotated[str, typer.Option(help="scene, region, object or attribute.")] = "scene",
    k: Annotated[int, typer.Option("-k", help="How many entries to show.")] = 5,
    kb: KbOpt = None,
    encoder: EncoderOpt = "minilm",
    cache_dir: CacheOpt = None,
) -> None:
    """Show the entries of one level nearest to TEXT."""
    try:
        hits = _open(kb, encoder, cache_dir).search_text([text], level, k)[0]
    except GeoStrataError as error:
        raise _fail(error) from error
    table = Table(title=f"{level} entries for: {text}")
    for column in ("rank", "id", "name", "score", "description"):
        table.add_column(column)
    for hit in hits:
        short = hit.entry.description[:70] + ("..." if len(hit.entry.description) > 70 else "")
        table.add_row(str(hit.rank + 1), hit.entry.id, hit.entry.name, f"{hit.score:.3f}", short)
    Console(width=160).print(table)


@app.command()
def stats(
    kb: KbOpt = None,
    paraphrase: Annotated[
        bool, typer.Option("--paraphrase", help="Also report paraphrase recall@1/@5.")] = False,
    encoder: EncoderOpt = "minilm",
    cache_dir: CacheOpt = None,
) -> None:
    """Entries per level, encoder, index kinds and label-map coverage."""
    from geostrata.knowledge.paraphrase import evaluate_paraphrases

    try:
        base = _open(kb, encoder, cache_dir)
        recall = evaluate_paraphrases(base) if paraphrase else {}
    except GeoStrataError as error:
        raise _fail(error) from error
    info = base.stats()
    title = f"knowledge base: {info.n_entries} entries, {info.encoder_name} (D={info.dim})"
    table = Table(title=title)
    for column in ("level", "entries", "index"):
        table.add_column(column)
    for level, count in info.per_level.items():
        table.add_row(level, str(count), info.index_kinds.get(level, "-"))
    console = Console(width=160)
    console.print(table)
    console.print(f"label maps: {info.labels_per_dataset}; index bytes: {info.index_bytes}")
    for level, score in recall.items():
        console.print(f"paraphrase {level}: recall@1={score.recall_at_1:.3f} "
                      f"recall@5={score.recall_at_5:.3f} (n={score.n})")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="An entry file (.jsonl/.yaml) or a folder.")],
) -> None:
    """Check entry files (fields, levels, duplicate and dangling ids); exit 1 on the first error."""
    from geostrata.knowledge.base import LABEL_MAP_FILE
    from geostrata.knowledge.schema import load_entries, read_label_map

    try:
        entries = load_entries([path])
        if path.is_dir() and (path / LABEL_MAP_FILE).is_file():
            read_label_map(path / LABEL_MAP_FILE, [entry.id for entry in entries])
    except GeoStrataError as error:
        raise _fail(error) from error
    typer.echo(f"ok: {len(entries)} entries in {path}")
