"""The synthetic benchmark: determinism, balance, annotations vs pixels, answers, file formats."""

import filecmp
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.synthetic import SynthConfig, load_annotations, load_meta, synthesize
from geostrata.data.synthetic.scene import generate_image, plan_split
from geostrata.data.synthetic.vocab import COUNTABLE, LAND_COVERS, SCENE_CLASSES, area_answer
from geostrata.errors import ConfigError, DatasetNotFoundError, InputError

N_TRAIN, N_TEST, SIZE, SEED, GRID = 30, 18, 64, 7, 4
AREA_EDGES = [(0.0, "0%"), (0.1, "1-10%"), (0.3, "11-30%"), (0.6, "31-60%"), (1.0, "more than 60%")]
PART_QUESTION = r"What is the main land cover in the (top|bottom)-(left|right) part of the image\?"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("syn") / "a", N_TRAIN, N_TEST, SIZE, SEED)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _rsvqa(root: Path, split: str) -> tuple[list, list, list]:
    prefix = root / "rsvqa" / f"SYN_split_{split}"
    load = lambda part: json.loads(Path(f"{prefix}_{part}.json").read_text())[part]  # noqa: E731
    return load("questions"), load("answers"), load("images")


def _qa(root: Path, split: str) -> list[tuple[dict, str]]:
    questions, answers, _ = _rsvqa(root, split)
    by_id = {a["id"]: a["answer"] for a in answers}
    return [(q, by_id[q["answers_ids"][0]]) for q in questions]


def test_same_seed_same_bytes_and_other_seed_differs(bench, tmp_path):
    again = synthesize(tmp_path / "b", N_TRAIN, N_TEST, SIZE, SEED)
    names = _files(bench)
    assert names == _files(again)
    _, mismatch, errors = filecmp.cmpfiles(bench, again, names, shallow=False)
    assert not mismatch and not errors
    other = synthesize(tmp_path / "c", N_TRAIN, N_TEST, SIZE, SEED + 1)
    images = [n for n in names if n.startswith("images/")]
    _, differ, _ = filecmp.cmpfiles(bench, other, images, shallow=False)
    assert len(differ) >= len(images) - 1


def test_worker_processes_give_the_same_bytes(tmp_path):
    one = synthesize(tmp_path / "one", 6, 2, SIZE, SEED)
    two = synthesize(tmp_path / "two", 6, 2, SIZE, SEED, workers=2)
    names = _files(one)
    assert names == _files(two)
    assert filecmp.cmpfiles(one, two, names, shallow=False)[1] == []


def test_scene_classes_within_one_of_uniform(bench):
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        counts = Counter(a["scene"] for a in load_annotations(bench, split).values())
        assert set(counts) <= set(SCENE_CLASSES)
        for scene in SCENE_CLASSES:
            assert abs(counts[scene] - n / len(SCENE_CLASSES)) <= 1, (split, scene, counts)


def test_ids_unique_across_splits_and_start_at_zero(bench):
    train, test = load_annotations(bench, "train"), load_annotations(bench, "test")
    assert sorted(train) == list(range(N_TRAIN))
    assert sorted(test) == list(range(N_TRAIN, N_TRAIN + N_TEST))


def _majority_grid(mask: np.ndarray) -> list[list[str]]:
    step = mask.shape[0] // GRID
    cells = [[mask[r * step : (r + 1) * step, c * step : (c + 1) * step] for c in range(GRID)]
             for r in range(GRID)]  # fmt: skip
    return [[LAND_COVERS[np.bincount(c.ravel(), minlength=7).argmax()] for c in row]
            for row in cells]  # fmt: skip


@pytest.mark.parametrize("split,first,n", [("train", 0, N_TRAIN), ("test", N_TRAIN, N_TEST)])
def test_annotations_agree_with_pixels(bench, split, first, n):
    anns = load_annotations(bench, split)
    for spec in plan_split(SEED, split, first, n, SIZE, GRID):
        ann, gen = anns[spec.image_id], generate_image(spec)
        assert ann["scene"] == spec.scene
        pixels = np.asarray(Image.open(bench / ann["image"]).convert("RGB"))
        assert np.array_equal(pixels, gen.image)
        fractions = ann["regions"]["fractions"]
        assert set(fractions) == set(LAND_COVERS)
        assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-5)
        share = np.bincount(gen.mask.ravel(), minlength=7) / gen.mask.size
        assert [fractions[c] for c in LAND_COVERS] == pytest.approx(share.tolist(), abs=1e-6)
        assert ann["regions"]["grid"] == _majority_grid(gen.mask)
        changed = np.abs(gen.image.astype(int) - gen.background.astype(int)).max(-1) > 3
        for obj in ann["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE, obj
            drawn = changed[y0:y1, x0:x1].mean()
            assert drawn >= (0.25 if obj["class"] in COUNTABLE else 0.03), (spec.image_id, obj)


def test_nothing_is_drawn_far_from_the_boxes(bench):
    # Away from every box (by more than a shadow or wake can reach) the image equals its
    # object-free twin: no unannotated object was drawn.
    checked = 0
    for spec in plan_split(SEED, "train", 0, N_TRAIN, SIZE, GRID):
        gen = generate_image(spec)
        near = np.zeros(gen.mask.shape, dtype=bool)
        for obj in gen.annotation["objects"]:
            x0, y0, x1, y1 = obj["box"]
            m = max(x1 - x0, y1 - y0) + 2
            near[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m] = True
        assert np.array_equal(gen.image[~near], gen.background[~near]), spec.image_id
        checked += int((~near).sum())
    assert checked > 10 * SIZE * SIZE


def _snake(text: str) -> str:
    return text.replace(" ", "_")


def _expected(question: str, qtype: str, ann: dict) -> str:
    """Recompute an answer from the annotation alone (independently of the generator)."""
    counts = Counter(o["class"] for o in ann["objects"])
    if qtype == "presence":
        m = re.fullmatch(r"Is there an? (.+)\?", question) or re.fullmatch(
            r"Are there any (.+)s in the image\?", question)  # fmt: skip
        return "yes" if counts[_snake(m.group(1))] else "no"
    if qtype == "count":
        m = re.fullmatch(r"How many (.+)s are there\?", question) or re.fullmatch(
            r"What is the number of (.+)s in the image\?", question)  # fmt: skip
        n = counts[_snake(m.group(1))]
        return str(n) if n <= 10 else "more than 10"
    if qtype == "comp":
        m = re.fullmatch(r"Are there more (.+)s than (.+)s\?", question)
        return "yes" if counts[_snake(m.group(1))] > counts[_snake(m.group(2))] else "no"
    if qtype == "area":
        cover = re.fullmatch(r"What is the area covered by (.+)\?", question).group(1)
        frac = ann["regions"]["fractions"][_snake(cover)]
        return next(label for edge, label in AREA_EDGES if frac <= edge + 1e-9)
    if qtype == "scene":
        return ann["scene"].replace("_", " ")
    if qtype == "rural_urban":
        return "urban" if ann["attributes"]["urban"] else "rural"
    m = re.fullmatch(PART_QUESTION, question)
    if m is None:
        assert question == "What is the main land cover in this image?"
        fr = ann["regions"]["fractions"]
        return max(LAND_COVERS, key=lambda c: fr[c]).replace("_", " ")
    rows = (0, 1) if m.group(1) == "top" else (2, 3)
    cols = (0, 1) if m.group(2) == "left" else (2, 3)
    votes = Counter(ann["regions"]["grid"][r][c] for r in rows for c in cols).most_common()
    assert len(votes) == 1 or votes[0][1] > votes[1][1], "asked about a tied quadrant"
    return votes[0][0].replace("_", " ")


def test_every_answer_follows_from_the_annotation(bench):
    meta = load_meta(bench)
    for split in ("train", "test"):
        anns = load_annotations(bench, split)
        for q, answer in _qa(bench, split):
            assert answer in meta["answer_vocab"][q["type"]], q
            assert q["level"] == meta["question_levels"][q["type"]]
            assert answer == _expected(q["question"], q["type"], anns[q["img_id"]]), q


def test_attributes_follow_from_objects(bench):
    for ann in load_annotations(bench, "train").values():
        n = Counter(o["class"] for o in ann["objects"])
        built = sum(n[k] for k in ("building", "car", "storage_tank", "airplane", "sports_court"))
        assert ann["attributes"]["urban"] == (built + 3 * (n["road"] + n["runway"]) >= 4)
        things = sum(n[k] for k in COUNTABLE)
        expected = "sparse" if things < 6 else ("medium" if things <= 15 else "dense")
        assert ann["attributes"]["density"] == expected
        assert ann["caption"].endswith(".") and ann["scene"].replace("_", " ") in ann["caption"]


def test_yes_no_answers_are_balanced(bench):
    for split in ("train", "test"):
        tally = Counter((q["type"], a) for q, a in _qa(bench, split))
        for qtype in ("presence", "comp"):
            assert abs(tally[(qtype, "yes")] - tally[(qtype, "no")]) <= 2, (split, tally)
        per_image = sum(tally.values()) / (N_TRAIN if split == "train" else N_TEST)
        assert 6 <= per_image <= 7


def test_rsvqa_files_cross_reference(bench):
    seen_questions = set()
    for split in ("train", "test"):
        questions, answers, images = _rsvqa(bench, split)
        anns = load_annotations(bench, split)
        qs = {q["id"]: q for q in questions}
        ans = {a["id"]: a for a in answers}
        assert len(qs) == len(questions) and not seen_questions & set(qs)
        seen_questions |= set(qs)
        assert sorted(img["id"] for img in images) == sorted(anns)
        listed = [qid for img in images for qid in img["questions_ids"]]
        assert sorted(listed) == sorted(qs)
        for img in images:
            assert img["active"] and (bench / "images" / f"{img['id']}.png").is_file()
            for qid in img["questions_ids"]:
                q = qs[qid]
                assert q["img_id"] == img["id"] and q["active"]
                assert [ans[a]["question_id"] for a in q["answers_ids"]] == [qid]
                assert all(ans[a]["active"] for a in q["answers_ids"])


def test_splits_scene_folders_and_instruct(bench):
    for split in ("train", "test"):
        anns = load_annotations(bench, split)
        lines = (bench / "splits" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == len(anns)
        for line in lines:
            scene, name = line.split("/")[1:]
            ann = anns[int(name.removesuffix(".png"))]
            assert line == f"scenes/{ann['scene']}/{ann['id']}.png" and scene == ann["scene"]
            assert filecmp.cmp(bench / line, bench / ann["image"], shallow=False)
        instruct = json.loads((bench / "instruct" / f"{split}.json").read_text())
        n_questions = Counter(q["img_id"] for q, _ in _qa(bench, split))
        assert [int(e["id"]) for e in instruct] == sorted(anns)
        for entry in instruct:
            turns = entry["conversations"]
            assert entry["image"] == f"images/{entry['id']}.png"
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
            assert turns[0]["value"].startswith("<image>\n")
            assert sum("<image>" in t["value"] for t in turns) == 1
            assert len(turns) // 2 == n_questions[int(entry["id"])] + 1  # + caption turn


def test_meta_follows_the_contract(bench):
    meta = load_meta(bench)
    assert meta["generator"] == "geostrata.synthetic" and meta["version"] == 2
    assert (meta["seed"], meta["size"], meta["grid"]) == (SEED, SIZE, GRID)
    assert (meta["n_train"], meta["n_test"]) == (N_TRAIN, N_TEST)
    assert meta["scene_classes"] == list(SCENE_CLASSES) and len(meta["land_covers"]) == 7
    assert set(meta["question_levels"]) == set(meta["answer_vocab"])


def test_area_bins_at_their_edges():
    cases = {0.0: "0%", 1e-4: "1-10%", 0.1: "1-10%", 0.1001: "11-30%", 0.3: "11-30%",
             0.6: "31-60%", 0.6001: "more than 60%", 1.0: "more than 60%"}  # fmt: skip
    for fraction, label in cases.items():
        assert area_answer(fraction) == label, fraction


def test_bad_inputs_raise_project_errors(tmp_path):
    with pytest.raises(ConfigError, match="size=16"):
        SynthConfig(n_train=1, n_test=1, size=16)
    with pytest.raises(ConfigError, match="n_train=0"):
        SynthConfig(n_train=0, n_test=0)
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="refusing"):
        synthesize(tmp_path, 1, 0, SIZE, SEED)
    with pytest.raises(DatasetNotFoundError, match="meta.json"):
        load_meta(tmp_path)


def test_cli_synth_then_show(tmp_path):
    runner = CliRunner()
    out = tmp_path / "syn"
    args = ["data", "synth", "--out", str(out), "--n-train", "12", "--n-test", "2",
            "--size", "64", "--seed", "3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").glob("*.png"))) == 14
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "show", str(out), "--out", str(grid), "--n", "4"])
    assert result.exit_code == 0, result.output
    with Image.open(grid) as img:
        assert img.width >= 2 * 128 and img.height >= 2 * 128
    missing = runner.invoke(app, ["data", "show", str(tmp_path / "nope"), "--out", str(grid)])
    assert missing.exit_code == 2 and "not found" in missing.output
