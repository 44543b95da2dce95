"""Caption metrics as the COCO caption evaluation computes them (pycocoevalcap): BLEU-1..4,
METEOR, ROUGE-L and CIDEr, each prediction scored against every reference of its image.

Texts go through pycocoevalcap's PTB tokenizer first (lowercased, punctuation dropped), as in
COCO. The tokenizer and METEOR are Java programs shipped inside pycocoevalcap: nothing is
downloaded, but a Java runtime is needed (`require_java`). SPICE is left out: its first run
downloads the Stanford CoreNLP models. CIDEr weighs n-grams by their rarity among the references
of the whole set (idf), so one image alone scores 0 and the value depends on the set; it is
pycocoevalcap's CIDEr-D (clipped counts, length penalty), x10 as COCO reports it. Scores are
fractions (CIDEr 0..10); reports show them x100.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from geostrata.errors import DependencyError, InputError

JAVA_PACKAGE = "default-jre-headless"  # the Debian / Ubuntu package that provides `java`
_SHARED: dict[str, CaptionScorer] = {}  # the process's scorer (shared_scorer)
# METEOR's JVM with the serial collector: 0.6 GB resident instead of 1.2 GB, as fast (measured)
METEOR_JAVA_OPTIONS = "-XX:+UseSerialGC"


def require_java() -> str:
    """The path of `java`, or a DependencyError saying how to install it."""
    java = shutil.which("java")
    if java is None:
        raise DependencyError(
            "caption metrics need Java (METEOR and the PTB tokenizer of pycocoevalcap are Java "
            f"programs) and no `java` is on PATH: install a Java runtime, e.g. `apt-get install "
            f"{JAVA_PACKAGE}`, or evaluate without the caption and region tasks "
            "(geostrata eval --task vqa,cls,ground)"
        )
    return java


@dataclass
class CaptionMetrics:
    """Corpus-level caption scores (fractions; CIDEr 0..10)."""

    bleu_1: float
    bleu_2: float
    bleu_3: float
    bleu_4: float
    meteor: float
    rouge_l: float
    cider: float
    n: int  # predictions scored
    n_references: int  # references over all predictions
    n_empty: int  # empty predictions (scored as they are: near 0)

    def scores(self) -> dict[str, float]:
        """Metric name -> value, in the order papers report them."""
        return {
            "BLEU-1": self.bleu_1,
            "BLEU-2": self.bleu_2,
            "BLEU-3": self.bleu_3,
            "BLEU-4": self.bleu_4,
            "METEOR": self.meteor,
            "ROUGE-L": self.rouge_l,
            "CIDEr": self.cider,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """One table row of every score (x100), and what was scored."""
        names = list(self.scores())
        values = " | ".join(f"{100 * v:.1f}" for v in self.scores().values())
        empty = f"; {self.n_empty} empty predictions" if self.n_empty else ""
        return (
            f"{self.n} predictions against {self.n_references} references "
            f"({self.n_references / self.n:.1f} per prediction){empty}; scores x100 "
            "(pycocoevalcap, PTB-tokenised; CIDEr is CIDEr-D; SPICE not computed).\n\n"
            f"| {' | '.join(names)} |\n|{'---:|' * len(names)}\n| {values} |\n"
        )


class CaptionScorer:
    """Scores predictions against references; holds one METEOR process.

    METEOR is a JVM that loads its paraphrase table for several seconds (of CPU) after it
    starts, in the background: create the scorer before generating the captions and reuse it for
    every set (`shared_scorer`).
    """

    def __init__(self) -> None:
        require_java()
        from pycocoevalcap.meteor.meteor import Meteor

        with _java_options(METEOR_JAVA_OPTIONS):
            self._meteor: Any = Meteor()  # starts the JVM; it loads while the caller goes on

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """Whether its METEOR process is running (not closed, not died)."""
        return self._meteor is not None and self._meteor.meteor_p.poll() is None

    def close(self) -> None:
        """Stop the METEOR process (pycocoevalcap's own clean-up then finds it stopped)."""
        if self._meteor is None:
            return
        process = self._meteor.meteor_p
        if process.stdin and not process.stdin.closed:
            process.stdin.close()
        process.kill()
        process.wait()
        self._meteor = None

    def score(
        self, predictions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> CaptionMetrics:
        """Scores of `predictions[i]` against all of `references[i]` (at least one each)."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        if self._meteor is None:
            raise InputError("this CaptionScorer is closed")
        gts, res = _tokenized(predictions, references)
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        return CaptionMetrics(
            *(float(b) for b in bleu),
            meteor=self._meteor_score(gts, res),
            rouge_l=float(rouge),
            cider=float(cider),
            n=len(predictions),
            n_references=sum(len(r) for r in gts.values()),
            n_empty=sum(not p.strip() for p in predictions),
        )

    def score_rows(self, rows: Sequence[Mapping[str, Any]]) -> CaptionMetrics:
        """Scores of evaluation rows: each row's `pred` against its `references` (the record
        convention; a row without them has its `answer` as the one reference)."""
        return self.score([str(r["pred"]) for r in rows], [row_references(r) for r in rows])

    def _meteor_score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        meteor = self._meteor
        try:
            value, _ = meteor.compute_score(gts, res)
        except (OSError, ValueError) as err:  # the JVM died: a broken pipe or an empty line
            if meteor.lock.locked():  # else pycocoevalcap's clean-up would wait for it forever
                meteor.lock.release()
            process = meteor.meteor_p
            detail = process.stderr.read().decode(errors="replace")[-500:] if process.poll() else ""
            raise DependencyError(
                f"METEOR (java -jar meteor-1.5.jar of pycocoevalcap) stopped: {err} {detail}"
            ) from err
        return float(value)


def shared_scorer() -> CaptionScorer:
    """The process's one CaptionScorer, started on first use and stopped at exit, so that runs
    evaluated one after another in one process (an ablation, a test session) load METEOR once;
    a scorer whose process died is replaced."""
    scorer = _SHARED.get("scorer")
    if scorer is None or not scorer.alive:
        scorer = _SHARED["scorer"] = CaptionScorer()
        atexit.register(scorer.close)
    return scorer


def caption_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> CaptionMetrics:
    """One-off scores (starts and stops METEOR; use a CaptionScorer to score several sets)."""
    with CaptionScorer() as scorer:
        return scorer.score(predictions, references)


def row_references(row: Mapping[str, Any]) -> list[str]:
    """A record's reference texts: `references`, else its `answer`; an InputError naming the
    record when there is none."""
    refs = row.get("references")
    if refs is None:
        refs = [row.get("answer", "")]
    if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
        raise InputError(f"record {_name(row)}: references must be a list of texts, got {refs!r}")
    kept = [r for r in refs if r.strip()]
    if not kept:
        raise InputError(f"record {_name(row)}: no reference text to score the prediction against")
    return kept


def _name(row: Mapping[str, Any]) -> str:
    return str(row.get("question_id") or row.get("image_id") or row.get("image_path") or "?")


def _tokenized(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """(references, predictions) by index, PTB-tokenised in one Java call."""
    if len(predictions) != len(references):
        raise InputError(
            f"{len(predictions)} predictions but {len(references)} reference lists: one each"
        )
    if not predictions:
        raise InputError("caption metrics need at least one prediction")
    texts: dict[tuple[str, int], list[str]] = {}
    for i, (pred, refs) in enumerate(zip(predictions, references, strict=True)):
        if isinstance(refs, str) or not refs:
            raise InputError(f"prediction {i}: needs a list of one or more references")
        texts[("ref", i)] = [_one_line(r) for r in refs]
        texts[("pred", i)] = [_one_line(pred)]
    tokens = _ptb_tokenize(texts)
    n = len(predictions)
    return {i: tokens[("ref", i)] for i in range(n)}, {i: tokens[("pred", i)] for i in range(n)}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())  # the tokenizer reads one text per line


def _ptb_tokenize(texts: dict[Any, list[str]]) -> dict[Any, list[str]]:
    """pycocoevalcap's PTBTokenizer over the non-empty texts; empty ones stay empty (an empty
    line could shift the tokenizer's line-per-text output)."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    given = {k: [{"caption": t} for t in v if t] for k, v in texts.items()}
    given = {k: v for k, v in given.items() if v}
    try:
        with _quiet_stderr():  # its "PTBTokenizer tokenized N tokens" line is not for users
            done = ptbtokenizer.PTBTokenizer().tokenize(given) if given else {}
    except OSError as err:
        folder = Path(ptbtokenizer.__file__).parent
        raise DependencyError(
            f"the PTB tokenizer of pycocoevalcap could not run ({err}); it needs `java` and a "
            f"writable {folder} (it writes its input there)"
        ) from err
    if any(len(done.get(k, [])) != len(v) for k, v in given.items()):
        raise DependencyError(
            "the PTB tokenizer of pycocoevalcap (java, stanford-corenlp-3.4.1.jar) returned "
            "fewer lines than it was given; is the Java runtime working?"
        )
    out = {}
    for key, values in texts.items():
        tokenized = iter(done.get(key, []))
        out[key] = [next(tokenized) if t else "" for t in values]
    return out


@contextlib.contextmanager
def _java_options(options: str) -> Iterator[None]:
    """JAVA_TOOL_OPTIONS plus `options` meanwhile (what a JVM started now reads)."""
    before = os.environ.get("JAVA_TOOL_OPTIONS")
    os.environ["JAVA_TOOL_OPTIONS"] = f"{before} {options}" if before else options
    try:
        yield
    finally:
        if before is None:
            del os.environ["JAVA_TOOL_OPTIONS"]
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = before


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 on /dev/null meanwhile (what a child process inherits)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
