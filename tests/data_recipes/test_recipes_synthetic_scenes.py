"""Synthetic scenes: deterministic by seed, and every text agrees with the pixels and the ground truth."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from data_recipes import generate_synthetic_scenes
from data_recipes.synthetic_scenes import BACKGROUNDS, COLORS, QUESTION_TYPES, SHAPES, SIZES, position_name

SIZE = 96
FILES = ("brief_captions.json", "detailed_captions.json", "qa_train.json", "qa_test.json", "text_only.json",
         "scenes.json")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _load(folder: Path, name: str):
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "s"
    generate_synthetic_scenes(out, num_images=40, seed=11, image_size=SIZE, test_fraction=0.25)
    return out


@pytest.fixture(scope="module")
def scenes(synth) -> dict[str, dict]:
    return {s["image"]: s for s in _load(synth, "scenes.json")["scenes"]}


def test_deterministic_by_seed(synth, tmp_path):
    again = generate_synthetic_scenes(tmp_path / "again", num_images=40, seed=11, image_size=SIZE, test_fraction=0.25)
    assert _digest(tmp_path / "again") == _digest(synth)
    assert again.counts["images"] == 40 and len(again.test_indices) == 10
    generate_synthetic_scenes(tmp_path / "other", num_images=40, seed=12, image_size=SIZE, test_fraction=0.25)
    other = _digest(tmp_path / "other")
    assert other != _digest(synth)
    assert sum(other[k] == v for k, v in _digest(synth).items() if k.startswith("images/")) < 5


def test_a_scene_does_not_depend_on_how_many_are_made(synth, tmp_path):
    generate_synthetic_scenes(tmp_path / "few", num_images=3, seed=11, image_size=SIZE)
    for i in range(3):
        name = f"images/{i:06d}.png"
        assert (tmp_path / "few" / name).read_bytes() == (synth / name).read_bytes()


@pytest.mark.parametrize("scenes_record", ["kept", "lost"])
def test_a_rerun_with_fewer_images_leaves_only_its_own(tmp_path, scenes_record):
    """`synth --num-images 32` over a 64-image folder said images=32 and left 64 PNGs; with the earlier scenes.json
    gone (a rerun stopped midway) the generator's own names tell its images. A file of the user's stays."""
    out = tmp_path / "s"
    generate_synthetic_scenes(out, num_images=6, seed=11, image_size=SIZE)
    (out / "images" / "mine.png").write_bytes(b"kept")
    if scenes_record == "lost":
        (out / "scenes.json").write_text("{")
        (out / ".synth-unfinished").write_text("")
    else:  # a hand-edited record naming a file outside the images: never removed
        record = json.loads((out / "scenes.json").read_text())
        record["scenes"].append({"image": "../notes.txt"})
        (out / "scenes.json").write_text(json.dumps(record))
        (tmp_path / "notes.txt").write_text("mine")
    generate_synthetic_scenes(out, num_images=3, seed=11, image_size=SIZE)
    generate_synthetic_scenes(tmp_path / "fresh", num_images=3, seed=11, image_size=SIZE)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png", "mine.png"]
    assert {k: v for k, v in _digest(out).items() if k != "images/mine.png"} == _digest(tmp_path / "fresh")
    assert scenes_record == "lost" or (tmp_path / "notes.txt").read_text() == "mine"


def test_layout_and_variety(synth, scenes):
    for name in FILES:
        assert (synth / name).is_file()
    assert len(list((synth / "images").glob("*.png"))) == 40
    with Image.open(synth / "images" / "000000.png") as image:
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    objects = [o for s in scenes.values() for o in s["objects"]]
    assert {len(s["objects"]) for s in scenes.values()} == {1, 2, 3, 4}
    assert {o["shape"] for o in objects} == set(SHAPES) and len(SHAPES) >= 3
    assert {o["color"] for o in objects} == set(COLORS) and len(COLORS) >= 6
    assert {o["size"] for o in objects} == set(SIZES)
    assert {s["gradient"] for s in scenes.values()} == {None, "vertical", "horizontal"}
    for s in scenes.values():  # names are unique within a scene, so "the red circle" is unambiguous
        assert len({o["color"] for o in s["objects"]}) == len({o["shape"] for o in s["objects"]}) == len(s["objects"])
        assert len({(o["row"], o["col"]) for o in s["objects"]}) == len(s["objects"])


def test_pixels_match_the_ground_truth(synth, scenes):
    for name, scene in scenes.items():
        with Image.open(synth / name) as image:
            rgb = image.convert("RGB")
            for obj in scene["objects"]:
                assert rgb.getpixel(tuple(obj["center"])) == COLORS[obj["color"]], (name, obj)
            if not any(o["row"] == 0 and o["col"] == 0 for o in scene["objects"]):
                assert rgb.getpixel((0, 0)) == BACKGROUNDS[scene["background"][0]]


OBJECT_RE = re.compile(r"A (small|medium|large) (\w+) (\w+) is at the ([a-z ]+?) of the image\.")
RELATION_RE = re.compile(r"The (\w+ \w+) is ((?:above|below|to the left of|to the right of)"
                         r"(?: and (?:to the left of|to the right of))?) the (\w+ \w+)\.")
SIZE_RE = re.compile(r"The (\w+ \w+) is (larger|smaller) than the (\w+ \w+)\.")
SAME_RE = re.compile(r"The (\w+ \w+) and the (\w+ \w+) are the same size\.")
COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4}


def _truth(a: dict, b: dict, phrase: str) -> bool:
    return {"above": a["row"] < b["row"], "below": a["row"] > b["row"], "to the left of": a["col"] < b["col"],
            "to the right of": a["col"] > b["col"],
            "larger than": list(SIZES).index(a["size"]) > list(SIZES).index(b["size"]),
            "smaller than": list(SIZES).index(a["size"]) < list(SIZES).index(b["size"])}[phrase]


def test_detailed_captions_parse_back_to_the_scene(synth, scenes):
    rows = _load(synth, "detailed_captions.json")
    assert len(rows) == 30
    for row in rows:
        scene = scenes[row["image"]]
        caption = row["conversations"][1]["value"]
        by_name = {f"{o['color']} {o['shape']}": o for o in scene["objects"]}
        n = len(scene["objects"])
        assert re.match(r"The image shows (\w+) objects? on ", caption)
        assert COUNT_WORDS[re.match(r"The image shows (\w+)", caption).group(1)] == n
        bg = scene["background"]
        assert (f"a plain {bg[0]} background" if scene["gradient"] is None else f"fades from {bg[0]}") in caption
        parsed = {(size, color, shape, pos) for size, color, shape, pos in OBJECT_RE.findall(caption)}
        assert parsed == {(o["size"], o["color"], o["shape"], position_name(o["row"], o["col"]))
                          for o in scene["objects"]}
        pairs = 0
        for a, phrase, b in RELATION_RE.findall(caption):
            for part in phrase.split(" and "):
                assert _truth(by_name[a], by_name[b], part), (caption, a, part, b)
            pairs += 1
        for a, rel, b in SIZE_RE.findall(caption):
            assert _truth(by_name[a], by_name[b], f"{rel} than")
            pairs += 1
        for a, b in SAME_RE.findall(caption):
            assert by_name[a]["size"] == by_name[b]["size"]
            pairs += 1
        # Every pair is described: one size sentence each, plus one spatial sentence each (distinct cells).
        assert pairs == n * (n - 1)


def test_brief_captions_name_every_object(synth, scenes):
    for row in _load(synth, "brief_captions.json"):
        assert row["conversations"][0] == {"from": "human", "value": "<image>\n"}
        caption = row["conversations"][1]["value"]
        scene = scenes[row["image"]]
        objects, _, background = caption.lower().rpartition(" on a ")
        named = re.findall(r"\b(?:a|an) (\w+) (\w+)", objects)
        assert sorted(named) == sorted((o["color"], o["shape"]) for o in scene["objects"])
        assert background == " and ".join(scene["background"]) + " background."


def _expected_answer(question: str, scene: dict) -> str:
    objs = scene["objects"]
    by_name = {f"{o['color']} {o['shape']}": o for o in objs}
    if m := re.match(r"What color is the (\w+)\?", question):
        return next(o["color"] for o in objs if o["shape"] == m.group(1))
    if m := re.match(r"What shape is the (\w+) object\?", question):
        return next(o["shape"] for o in objs if o["color"] == m.group(1))
    if question.startswith("How many objects"):
        return str(len(objs))
    if m := re.match(r"Where is the (\w+ \w+) in the image\?", question):
        o = by_name[m.group(1)]
        return position_name(o["row"], o["col"])
    if m := re.match(r"What size is the (\w+ \w+)\?", question):
        return by_name[m.group(1)]["size"]
    m = re.match(r"Is the (\w+ \w+) (above|below|to the left of|to the right of|larger than|smaller than) "
                 r"the (\w+ \w+)\?", question)
    return "yes" if _truth(by_name[m.group(1)], by_name[m.group(3)], m.group(2)) else "no"


def test_qa_answers_follow_from_the_scene(synth, scenes):
    rows = _load(synth, "qa_train.json") + _load(synth, "qa_test.json")
    assert {r["question_type"] for r in rows} == set(QUESTION_TYPES)
    relation_answers = set()
    for row in rows:
        human, gpt = row["conversations"]
        assert human["value"].startswith("<image>\n") and human["value"].count("<image>") == 1
        question = human["value"].split("\n")[1]
        assert gpt["value"] == row["answer"] == _expected_answer(question, scenes[row["image"]]), row
        assert len(row["answer"].split()) <= 2
        if row["question_type"] == "relation":
            relation_answers.add(row["answer"])
    assert relation_answers == {"yes", "no"}


def test_held_out_images_appear_in_no_training_file(synth, scenes):
    test_images = {r["image"] for r in _load(synth, "qa_test.json")}
    train_images = {r["image"] for r in _load(synth, "qa_train.json")}
    assert len(test_images) == 10 and len(train_images) == 30
    assert test_images.isdisjoint(train_images)
    for name in ("brief_captions.json", "detailed_captions.json"):
        assert {r["image"] for r in _load(synth, name)} == train_images
    assert test_images | train_images == set(scenes)
    assert {s["image"] for s in scenes.values() if s["split"] == "test"} == test_images


def test_text_only_rows(synth):
    rows = _load(synth, "text_only.json")
    assert len(rows) == 40
    for row in rows:
        assert "image" not in row
        question = row["conversations"][0]["value"].split("\n")[0]
        answer = row["conversations"][1]["value"]
        assert "<image>" not in question and answer == row["answer"]
        if m := re.match(r"What is (\d+) (plus|minus|times) (\d+)\?", question):
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            assert int(answer) == {"plus": a + b, "minus": a - b, "times": a * b}[op]
        elif m := re.match(r'How many letters are in the word "(\w+)"\?', question):
            assert int(answer) == len(m.group(1))
        elif m := re.match(r'What is the first letter of the word "(\w+)"\?', question):
            assert answer == m.group(1)[0]
        else:
            m = re.match(r"Which number is larger, (\d+) or (\d+)\?", question)
            assert m and int(answer) == max(int(m.group(1)), int(m.group(2)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        generate_synthetic_scenes("/nonexistent", num_images=0)
    with pytest.raises(ValueError, match="test_fraction"):
        generate_synthetic_scenes("/tmp/never-written", num_images=2, test_fraction=1.0)


def test_validation_split_is_held_out_and_leaves_the_test_split_unchanged(tmp_path):
    without = generate_synthetic_scenes(tmp_path / "a", num_images=40, seed=11, image_size=SIZE, test_fraction=0.25)
    made = generate_synthetic_scenes(tmp_path / "b", num_images=40, seed=11, image_size=SIZE, test_fraction=0.25,
                                     val_fraction=0.2)
    assert made.test_indices == without.test_indices and len(made.val_indices) == 8
    assert not set(made.val_indices) & set(made.test_indices)
    val_images = {made.scenes[i].image for i in made.val_indices}
    val = json.loads((tmp_path / "b" / "qa_val.json").read_text())
    assert {row["image"] for row in val} == val_images
    for name in ("brief_captions.json", "detailed_captions.json", "qa_train.json"):
        used = {row["image"] for row in json.loads((tmp_path / "b" / name).read_text())}
        assert not used & val_images, name
    assert json.loads((tmp_path / "b" / "qa_test.json").read_text()) == json.loads(
        (tmp_path / "a" / "qa_test.json").read_text())
    assert not (tmp_path / "a" / "qa_val.json").exists()


def test_the_card_shows_the_settings_the_scenes_were_generated_with(tmp_path):
    """Scenes written with 30 images at 48 px: the card's Parameters block showed the recipe's defaults (200, 336)."""
    from data_recipes import build_recipe

    generate_synthetic_scenes(tmp_path / "scenes", num_images=30, seed=4, image_size=48)
    result = build_recipe("synthetic_scenes", tmp_path / "scenes", tmp_path / "out", params={"stage": "1"})
    params = result.summary["params"]
    assert (params["num_images"], params["image_size"], params["scenes_seed"]) == (30, 48, 4)
    assert '"num_images": 30' in result.card.text and '"image_size": 48' in result.card.text
    assert '"num_images": 200' not in result.card.text and '"image_size": 336' not in result.card.text
