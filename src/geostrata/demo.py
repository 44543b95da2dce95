"""`geostrata demo`: the whole pipeline on the embedded tiny preset, with measured results.

Synthesize the multi-level benchmark, load the knowledge base, train both stages, evaluate VQA per
type and level (beside the question-only prior), scene classification and captions (and every
other task the benchmark holds), write the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostrata.session.experiment import ExperimentConfig, apply_overrides


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of one demo run (data, steps, batch, preset); README quotes the measured times."""

    n_train: int
    n_test: int
    stage1_steps: int
    stage2_steps: int
    batch_size: int = 32
    size: int = 96
    preset: str = "tiny-effnet"
    model: dict[str, Any] = field(default_factory=dict)
    holdout: str = ""  # classes kept out of training (data synth --holdout): "" or K/F or names
    overrides: tuple[str, ...] = ()  # dotted overrides of the run config, before the user's

    def experiment(
        self, data_dir: Path, out_dir: Path, seed: int, extra: list[str] | None = None
    ) -> ExperimentConfig:
        """The ExperimentConfig this profile trains (`extra`: dotted overrides)."""
        warm1, warm2 = max(1, self.stage1_steps // 10), max(1, self.stage2_steps // 15)
        base = {
            "preset": self.preset,
            "model": dict(self.model),
            "seed": seed,
            "output_dir": str(out_dir),
            "data": {"kind": "synthetic", "root": str(data_dir)},
            "stage1": {
                "max_steps": self.stage1_steps,
                "batch_size": self.batch_size,
                "lr": 2e-3,
                "warmup_steps": warm1,
                "log_every": 5,
            },
            "stage2": {
                "max_steps": self.stage2_steps,
                "batch_size": self.batch_size,
                "lr": 1e-3,
                "warmup_steps": warm2,
                "log_every": 10,
            },
        }
        overrides = [*self.overrides, *(extra or [])]
        return ExperimentConfig.from_dict(apply_overrides(base, overrides), source="demo profile")


ALL_TASKS = "data.tasks=[vqa, caption, ground, region, chat]"  # every synthetic task

PROFILES: dict[str, DemoProfile] = {
    # Two scene classes and one object class (fold 0 of 6) are held out of training, so the
    # report shows what the model does with classes only the knowledge base knows. VQA,
    # captions, grounding, region descriptions and two-turn dialogues are trained together.
    "default": DemoProfile(
        n_train=1600,
        n_test=400,
        stage1_steps=80,
        stage2_steps=900,
        holdout="0/6",
        overrides=(ALL_TASKS,),
    ),
    "quick": DemoProfile(n_train=300, n_test=60, stage1_steps=15, stage2_steps=120),
    # What `geostrata ablate` trains per (variant, seed): 15 runs must fit about an hour on 2 cores.
    "ablate": DemoProfile(n_train=800, n_test=200, stage1_steps=40, stage2_steps=300),
    # The pretrained SmolLM2-135M-Instruct (frozen, bf16, LoRA in stage 2) on 2 CPU cores in about
    # 20 minutes: one step of 8 samples takes ~4-6 s, so few steps, no caption turns (long
    # answers) and a small test split (generation and 12-class scoring run the LLM per question).
    "smol": DemoProfile(
        n_train=400,
        n_test=100,
        stage1_steps=60,
        stage2_steps=250,
        batch_size=8,
        preset="smol",
        overrides=("data.tasks=[vqa]", "eval_batch_size=32", "stage2.lr=0.0005"),
    ),
    # `geostrata ablate --profile zeroshot`: fold = seed of 3 rotating folds, 4 scene classes
    # and 1-2 object classes never seen in training each. Sized for 3 folds x 7 variants on the
    # shared 2-core machine: one run of 800 / 240 images, 40 + 300 steps took 9 min there (37%
    # of a core), one of 800 / 150 and 30 + 100 steps 8 min at load 11; this one is about a
    # quarter of the first (no caption turns, which are the long sequences).
    "zeroshot": DemoProfile(
        n_train=500,
        n_test=120,
        stage1_steps=20,
        stage2_steps=80,
        holdout="{fold}/3",
        overrides=("data.tasks=[vqa]",),
    ),
    # `geostrata ablate --profile tasks`: captioning, grounding and region description beside
    # VQA, for the LLaVA baseline vs the full model vs its object level alone (3 seeds). A probe
    # with 400 stage-2 steps grounded nothing (Acc@0.5 0 %: collapsed coordinates), hence 800
    # (each referring expression seen ~3 times); the 9 runs took 53 min (docs/results.md).
    "tasks": DemoProfile(
        n_train=800,
        n_test=150,
        stage1_steps=40,
        stage2_steps=800,
        overrides=("data.tasks=[vqa, caption, ground, region]",),
    ),
}


@dataclass
class DemoResult:
    report: Path
    summary: dict[str, float]
    wall_s: float
    stage_wall_s: dict[str, float]


def synthesize_once(
    data_dir: Path, profile: DemoProfile, seed: int, show_progress: bool, workers: int = 2
) -> Path:
    """Write the benchmark unless the same one (same generator version, sizes, seed and
    holdout) is already there.

    A synthesis that was killed part-way left no meta.json, so it is simply written again; so is
    one of an older generator version (it lacks files this version's tasks read).
    """
    from geostrata.data.synthetic import Holdout, load_meta, synthesize
    from geostrata.data.synthetic.files import VERSION
    from geostrata.errors import AnnotationError

    held = Holdout.parse(profile.holdout, seed)
    if (data_dir / "meta.json").is_file():
        try:
            m = load_meta(data_dir)
        except AnnotationError as err:
            raise AnnotationError(
                f"{err}; the benchmark in {data_dir} is damaged: delete that folder and run "
                "again to synthesize it anew (it is generated from the seed, nothing is lost)"
            ) from err
        if (m.get("version"), m.get("n_train"), m.get("n_test"), m.get("size"), m.get("seed")) == (
            VERSION,
            profile.n_train,
            profile.n_test,
            profile.size,
            seed,
        ) and Holdout.from_dict(m.get("holdout")) == held:
            return data_dir
    return synthesize(
        data_dir,
        profile.n_train,
        profile.n_test,
        profile.size,
        seed,
        workers=workers,
        progress=show_progress,
        holdout=held,
    )


def run_demo(
    out_dir: str | Path = "runs/demo",
    profile: str = "default",
    seed: int = 0,
    resume: bool = False,
    show_progress: bool = True,
    extra: list[str] | None = None,
) -> DemoResult:
    """Run the pipeline end to end; every figure it returns was measured in this call."""
    from geostrata.evaluate.captioning import require_java
    from geostrata.evaluate.dialogue import dialogue_metrics
    from geostrata.evaluate.suite import evaluate_session
    from geostrata.train.pipeline import run_experiment

    t0 = time.perf_counter()
    chosen = PROFILES[profile]
    out = Path(out_dir)
    data_dir = synthesize_once(out / "data", chosen, seed, show_progress)
    cfg = chosen.experiment(data_dir, out / "run", seed, extra)
    tasks = set(cfg.data.tasks or ("vqa", "caption"))  # unset: a synthetic folder's vqa + caption
    if tasks & {"caption", "region"}:  # scored with METEOR (Java): say so before training
        require_java()
    result = run_experiment(cfg, resume=resume, show_progress=show_progress)
    metrics = evaluate_session(result.session, out / "report", show_progress=show_progress)
    summary = metrics.summary()
    if "chat" in tasks:  # follow-ups with the earlier turns vs alone (same model)
        dialogues = dialogue_metrics(result.session, show_progress=show_progress)
        summary |= dialogues.summary() if dialogues is not None else {}
    stage_wall = {k: v.wall_time_s for k, v in result.stages.items()}
    return DemoResult(metrics.report, summary, time.perf_counter() - t0, stage_wall)
