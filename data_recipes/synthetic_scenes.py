"""Synthetic scenes: the project's own offline image+text data, deterministic by seed.

Each scene puts 1-4 coloured shapes of named sizes into distinct cells of a 3x3 grid on a solid or
two-colour gradient background. Colours and shapes are distinct within a scene, so "the red circle"
and "the star" each name exactly one object, and every caption, question and answer is derived from
the same :class:`Scene` record that drew the image (also written to `scenes.json`).

Output folder (LLaVA format, image paths relative to the folder)::

    images/000000.png ...
    brief_captions.json      stage-1 style: "<image>\\n" -> one-sentence caption
    detailed_captions.json   stage-1.5 style: every object's colour/shape/size/position + pairwise relations
    qa_train.json            short-answer questions (`question_type`, `answer`) on the training images
    qa_val.json              the same on held-out validation images, for choosing settings (with `val_fraction` > 0)
    val_detailed_captions.json  detailed captions of the validation images (for measuring reconstruction on unseen
                             images; no training file)
    qa_test.json             the same on held-out test images (neither split is used by any training file)
    text_only.json           text-only rows (arithmetic, word questions), no `image` key
    scenes.json              the ground truth of every scene and the generator settings
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from modeling_croc.constants import IMAGE_TOKEN

from .sampling import source_seed

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 135, 30),
    "pink": (240, 120, 180),
    "cyan": (40, 190, 210),
}
# Unsaturated backgrounds, so an object's colour name is never ambiguous against them.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "light gray": (195, 195, 195),
    "beige": (225, 215, 185),
    "dark gray": (80, 80, 80),
    "black": (20, 20, 20),
}
# Radius as a fraction of a grid cell: a large object (diameter 0.84 cell) still fits in its cell.
SIZES: dict[str, float] = {"small": 0.2, "medium": 0.3, "large": 0.42}
SIZE_ORDER = {name: i for i, name in enumerate(SIZES)}
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLS: tuple[str, ...] = ("left", "center", "right")
QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "position", "size", "relation")
ANSWER_SUFFIX = "Answer the question using a single word or phrase."
_NUMBER_WORDS = ("zero", "one", "two", "three", "four")
_WORDS = ("apple", "banana", "circle", "garden", "yellow", "window", "orange", "rabbit", "guitar", "planet",
          "pencil", "river", "mountain", "coffee", "silver", "tiger", "candle", "bottle", "forest", "dragon")


def position_name(row: int, col: int) -> str:
    """Name of a 3x3 grid cell: "top left", "top center", ..., "center", ..., "bottom right"."""
    if row == 1 and col == 1:
        return "center"
    if col == 1:
        return f"{ROWS[row]} center"
    return f"{ROWS[row]} {COLS[col]}"


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int
    center: tuple[int, int]
    radius: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def position(self) -> str:
        return position_name(self.row, self.col)


@dataclass(frozen=True)
class Scene:
    index: int
    objects: tuple[SceneObject, ...]
    background: tuple[str, ...]  # one name (solid) or two (gradient from first to second)
    gradient: str | None  # "vertical" (top to bottom), "horizontal" (left to right) or None

    @property
    def image(self) -> str:
        return f"images/{self.index:06d}.png"


def make_scene(index: int, *, seed: int, image_size: int = 336) -> Scene:
    """Draw scene `index` from its own generator, so a scene does not depend on how many are made."""
    rng = np.random.default_rng([int(seed), int(index)])
    n = int(rng.integers(1, 5))
    cells = rng.choice(9, size=n, replace=False)
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    colors = rng.choice(len(COLORS), size=n, replace=False)
    sizes = rng.integers(0, len(SIZES), size=n)
    cell = image_size / 3
    objects = []
    for k in range(n):
        row, col = divmod(int(cells[k]), 3)
        size = list(SIZES)[int(sizes[k])]
        radius = max(2, round(SIZES[size] * cell))
        slack = max(0.0, cell / 2 - radius - 2)  # keep the shape inside its cell
        dx, dy = rng.uniform(-slack, slack, size=2)
        center = (round((col + 0.5) * cell + dx), round((row + 0.5) * cell + dy))
        objects.append(SceneObject(SHAPES[int(shapes[k])], list(COLORS)[int(colors[k])], size, row, col,
                                   center, radius))
    bg_names = list(BACKGROUNDS)
    if rng.random() < 0.5:
        background: tuple[str, ...] = (bg_names[int(rng.integers(len(bg_names)))],)
        gradient = None
    else:
        a, b = rng.choice(len(bg_names), size=2, replace=False)
        background = (bg_names[int(a)], bg_names[int(b)])
        gradient = "vertical" if rng.random() < 0.5 else "horizontal"
    # Reading order (top-to-bottom, left-to-right) makes captions read naturally.
    objects.sort(key=lambda o: (o.row, o.col))
    return Scene(index, tuple(objects), background, gradient)


def _polygon(
    center: tuple[int, int], radius: float, n: int, start_deg: float, inner: float | None = None
) -> list[tuple[float, float]]:
    """Vertices of a regular `n`-gon (or an `n`-pointed star when `inner` is the inner radius ratio)."""
    cx, cy = center
    points = []
    steps = n * 2 if inner else n
    for k in range(steps):
        r = radius if not inner or k % 2 == 0 else radius * inner
        angle = math.radians(start_deg + 360 * k / steps)
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def render_scene(scene: Scene, image_size: int = 336) -> Image.Image:
    """Draw a scene as an RGB image."""
    first = np.array(BACKGROUNDS[scene.background[0]], dtype=np.float32)
    if scene.gradient is None:
        pixels = np.broadcast_to(first, (image_size, image_size, 3))
    else:
        second = np.array(BACKGROUNDS[scene.background[1]], dtype=np.float32)
        t = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
        ramp = first[None, :] * (1 - t[:, None]) + second[None, :] * t[:, None]  # (size, 3)
        pixels = ramp[:, None, :] if scene.gradient == "vertical" else ramp[None, :, :]
        pixels = np.broadcast_to(pixels, (image_size, image_size, 3))
    image = Image.fromarray(np.ascontiguousarray(pixels.round().astype(np.uint8)), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = COLORS[obj.color]
        cx, cy = obj.center
        r = obj.radius
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif obj.shape == "square":
            half = round(r * 0.85)
            draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
        elif obj.shape == "triangle":
            draw.polygon(_polygon(obj.center, r, 3, -90), fill=fill)
        elif obj.shape == "star":
            draw.polygon(_polygon(obj.center, r, 5, -90, inner=0.45), fill=fill)
        elif obj.shape == "hexagon":
            draw.polygon(_polygon(obj.center, r, 6, 0), fill=fill)
        else:  # pragma: no cover - SHAPES is closed
            raise ValueError(obj.shape)
    return image


# ---- text -----------------------------------------------------------------------------------------

def _a(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_background(scene: Scene) -> str:
    """E.g. "a plain white background" or "a background that fades from beige at the top to black at the bottom"."""
    if scene.gradient is None:
        return f"a plain {scene.background[0]} background"
    a, b = scene.background
    if scene.gradient == "vertical":
        return f"a background that fades from {a} at the top to {b} at the bottom"
    return f"a background that fades from {a} on the left to {b} on the right"


def brief_caption(scene: Scene) -> str:
    """One sentence naming the objects and the background colours."""
    things = _join([_a(o.name) for o in scene.objects])
    bg = scene.background[0] if scene.gradient is None else f"{scene.background[0]} and {scene.background[1]}"
    text = f"{things} on a {bg} background."
    return text[0].upper() + text[1:]


def spatial_relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Phrases true of `a` relative to `b`: vertical first ("above and to the left of")."""
    out = []
    if a.row != b.row:
        out.append("above" if a.row < b.row else "below")
    if a.col != b.col:
        out.append("to the left of" if a.col < b.col else "to the right of")
    return out


def detailed_caption(scene: Scene) -> str:
    """Several sentences: count and background, then each object, then every pair's relations."""
    n = len(scene.objects)
    sentences = [f"The image shows {_NUMBER_WORDS[n]} object{'s' if n > 1 else ''} on {describe_background(scene)}."]
    # "A": every size name starts with a consonant.
    sentences += [f"A {o.size} {o.name} is at the {o.position} of the image." for o in scene.objects]
    if n == 1:
        sentences.append("It is the only object in the image.")
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1:]:
            spatial = spatial_relations(a, b)
            if spatial:
                sentences.append(f"The {a.name} is {' and '.join(spatial)} the {b.name}.")
            if a.size == b.size:
                sentences.append(f"The {a.name} and the {b.name} are the same size.")
            else:
                bigger = SIZE_ORDER[a.size] > SIZE_ORDER[b.size]
                sentences.append(f"The {a.name} is {'larger' if bigger else 'smaller'} than the {b.name}.")
    return " ".join(sentences)


_RELATION_TESTS = {
    "to the left of": lambda a, b: a.col < b.col,
    "to the right of": lambda a, b: a.col > b.col,
    "above": lambda a, b: a.row < b.row,
    "below": lambda a, b: a.row > b.row,
    "larger than": lambda a, b: SIZE_ORDER[a.size] > SIZE_ORDER[b.size],
    "smaller than": lambda a, b: SIZE_ORDER[a.size] < SIZE_ORDER[b.size],
}


def scene_questions(scene: Scene, seed: int) -> list[tuple[str, str, str]]:
    """(question_type, question, answer) for every applicable type; answers are one word, a number or a
    position name, so exact match scores them. Relation questions are balanced between yes and no."""
    rng = np.random.default_rng([int(seed), int(scene.index), 7])
    objs = scene.objects

    def pick() -> SceneObject:
        return objs[int(rng.integers(len(objs)))]

    by_color, by_shape, located, sized = pick(), pick(), pick(), pick()
    out = [
        ("color", f"What color is the {by_shape.shape}?", by_shape.color),
        ("shape", f"What shape is the {by_color.color} object?", by_color.shape),
        ("count", "How many objects are there in the image?", str(len(objs))),
        ("position", f"Where is the {located.name} in the image?", located.position),
        ("size", f"What size is the {sized.name}?", sized.size),
    ]
    if len(objs) > 1:
        candidates = [(a, b, rel, test(a, b)) for a in objs for b in objs if a is not b
                      for rel, test in _RELATION_TESTS.items()]
        want_yes = bool(rng.random() < 0.5)
        pool = [c for c in candidates if c[3] == want_yes] or candidates
        a, b, rel, truth = pool[int(rng.integers(len(pool)))]
        out.append(("relation", f"Is the {a.name} {rel} the {b.name}?", "yes" if truth else "no"))
    return out


def text_only_row(k: int, seed: int) -> dict[str, Any]:
    """One text-only question with a short exact answer (arithmetic or a word question)."""
    rng = np.random.default_rng([int(seed), int(k), 11])
    kind = int(rng.integers(6))
    a, b = (int(x) for x in rng.integers(0, 21, size=2))
    word = _WORDS[int(rng.integers(len(_WORDS)))]
    if kind == 0:
        question, answer, qtype = f"What is {a} plus {b}?", str(a + b), "arithmetic"
    elif kind == 1:
        hi, lo = max(a, b), min(a, b)
        question, answer, qtype = f"What is {hi} minus {lo}?", str(hi - lo), "arithmetic"
    elif kind == 2:
        x, y = a % 9 + 1, b % 9 + 1
        question, answer, qtype = f"What is {x} times {y}?", str(x * y), "arithmetic"
    elif kind == 3:
        question, answer, qtype = f'How many letters are in the word "{word}"?', str(len(word)), "word"
    elif kind == 4:
        question, answer, qtype = f'What is the first letter of the word "{word}"?', word[0], "word"
    else:
        b = b if b != a else a + 1
        question, answer, qtype = f"Which number is larger, {a} or {b}?", str(max(a, b)), "arithmetic"
    return {
        "id": f"text-{k:06d}",
        "question_type": qtype,
        "answer": answer,
        "conversations": [{"from": "human", "value": f"{question}\n{ANSWER_SUFFIX}"},
                          {"from": "gpt", "value": answer}],
    }


# ---- writer ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticScenes:
    """What :func:`generate_synthetic_scenes` wrote."""

    out_dir: Path
    scenes: tuple[Scene, ...]
    test_indices: tuple[int, ...]
    counts: dict[str, int]
    val_indices: tuple[int, ...] = ()


def _split(num_images: int, test_fraction: float, seed: int) -> set[int]:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(num_images * test_fraction)
    if test_fraction > 0 and num_images >= 2:
        n_test = min(max(n_test, 1), num_images - 1)  # keep both splits non-empty
    rng = np.random.default_rng(source_seed(seed, "synthetic_split"))
    return set(rng.permutation(num_images)[:n_test].tolist())


def _val_split(num_images: int, test: set[int], val_fraction: float, seed: int) -> set[int]:
    """Validation images, drawn from the non-test ones with a stream of their own, so adding a validation split
    leaves the test split (and so earlier test results) unchanged."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rest = sorted(set(range(num_images)) - test)
    n_val = min(round(num_images * val_fraction), max(len(rest) - 1, 0))
    rng = np.random.default_rng(source_seed(seed, "synthetic_val_split"))
    return {rest[i] for i in rng.permutation(len(rest))[:n_val].tolist()}


def _detailed_caption_row(index: int, scene: Scene) -> dict[str, Any]:
    return {"id": f"detailed-{index:06d}", "image": scene.image,
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\nDescribe the image in detail."},
                              {"from": "gpt", "value": detailed_caption(scene)}]}


def _dump(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)


# In an earlier synthetic-scenes folder while a rerun rewrites it, until it is whole: what a rerun stopped midway (a
# full disk) leaves is still the generator's, which the next rerun takes (its scenes.json may be gone or cut short).
UNFINISHED = ".synth-unfinished"


def writable_scenes_folder(out: str | Path) -> bool:
    """Whether `out` may take a synthetic-scenes folder: new, empty, or one this generator wrote before (its
    `scenes.json`), whose files a rerun rewrites (the cpu_tiny configs of every family share `tiny_out/scenes`). Any
    other folder holds the user's files under the names this generator writes (`qa_train.json`, `images/000000.png`),
    which it would replace unasked."""
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()) or (out / UNFINISHED).is_file():
        return True
    try:
        record = json.loads((out / "scenes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"config", "scenes"} <= set(record)


def generate_synthetic_scenes(
    out_dir: str | Path,
    *,
    num_images: int = 200,
    seed: int = 0,
    image_size: int = 336,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    num_text: int | None = None,
    progress: bool = False,
) -> SyntheticScenes:
    """Write a LLaVA-format folder of synthetic scenes (see the module docstring for its files).

    Held-out (`qa_val`, `qa_test`) images appear in no training file: not in the captions, not in `qa_train`.
    `num_text` text-only rows are written (default: as many as images). `progress` shows a bar over the images.
    """
    if num_images < 1:
        raise ValueError("num_images must be >= 1")
    out = Path(out_dir)
    test = _split(num_images, test_fraction, seed)
    val = _val_split(num_images, test, val_fraction, seed)
    settings = {"num_images": num_images, "seed": seed, "image_size": image_size, "test_fraction": test_fraction,
                "val_fraction": val_fraction, "num_text": num_text, "progress": progress}
    if out.is_dir() and any(out.iterdir()):
        # An earlier folder of this generator (`writable_scenes_folder`): rewritten in place, marked unfinished
        # until whole, so that a rerun stopped midway never leaves a folder the next rerun refuses.
        marker = out / UNFINISHED
        earlier = _earlier_images(out)
        marker.write_text("python -m data_recipes synth is rewriting this folder\n", encoding="utf-8")
        made = _write_scenes(out, test, val, **settings)
        # Fewer images than before: the earlier ones past the new set are no scene of this folder any more (64
        # PNGs under a 32-image scenes.json).
        for name in earlier - {scene.image for scene in made.scenes}:
            (out / name).unlink(missing_ok=True)
        marker.unlink()
        return made
    if out.exists() and not out.is_dir():  # replaced by the folder written beside it, it was lost
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out))
    # A new or empty folder: written beside it and renamed into place when whole (`written_whole`, as the
    # conversions), so that a full disk leaves nothing at `out_dir`.
    from modeling_croc.conversion import written_whole

    with written_whole(out) as staging:
        made = _write_scenes(staging, test, val, **settings)
    return replace(made, out_dir=out)


# How the generator names its images (`Scene.image`), the only files of an earlier folder a rerun removes.
_IMAGE_NAME = re.compile(r"images/\d{6}\.png")


def _earlier_images(out: Path) -> set[str]:
    """The images an earlier run of this generator wrote into `out` (relative names): those its scenes.json lists,
    or, where a rerun stopped midway left none readable, every file there named as the generator names them. Only
    names of that form, whatever a scenes.json edited by hand says (`../notes.txt` would lead out of the folder)."""
    try:
        listed = {record["image"] for record in
                  json.loads((out / "scenes.json").read_text(encoding="utf-8"))["scenes"]}
    except (OSError, ValueError, KeyError, TypeError):
        listed = {f"images/{path.name}" for path in (out / "images").glob("*.png")}
    return {name for name in listed if isinstance(name, str) and _IMAGE_NAME.fullmatch(name)}


def _write_scenes(out: Path, test: set[int], val: set[int], *, num_images: int, seed: int, image_size: int,
                  test_fraction: float, val_fraction: float, num_text: int | None, progress: bool
                  ) -> SyntheticScenes:
    """Write the folder `generate_synthetic_scenes` describes into `out`."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    scenes, brief, detailed, val_detailed, records = [], [], [], [], []
    questions: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for index in tqdm(range(num_images), desc="synthetic scenes", unit="image", disable=not progress):
        scene = make_scene(index, seed=seed, image_size=image_size)
        scenes.append(scene)
        # compress_level=1: ~4x faster than the default and these flat images compress well anyway.
        render_scene(scene, image_size).save(out / scene.image, compress_level=1)
        split = "test" if index in test else "val" if index in val else "train"
        records.append({"index": index, "image": scene.image, "split": split, "background": list(scene.background),
                        "gradient": scene.gradient,
                        "objects": [{**asdict(o), "position": o.position} for o in scene.objects]})
        for k, (qtype, question, answer) in enumerate(scene_questions(scene, seed)):
            row = {"id": f"qa-{index:06d}-{k}", "image": scene.image, "question_type": qtype, "answer": answer,
                   "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}\n{ANSWER_SUFFIX}"},
                                     {"from": "gpt", "value": answer}]}
            questions[split].append(row)
        if split == "val":
            val_detailed.append(_detailed_caption_row(index, scene))
        if split == "train":
            brief.append({"id": f"brief-{index:06d}", "image": scene.image,
                          "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n"},
                                            {"from": "gpt", "value": brief_caption(scene)}]})
            detailed.append(_detailed_caption_row(index, scene))
    text = [text_only_row(k, seed) for k in range(num_images if num_text is None else num_text)]
    files = {"brief_captions.json": brief, "detailed_captions.json": detailed, "qa_train.json": questions["train"],
             "qa_test.json": questions["test"], "text_only.json": text}
    if val:
        files["qa_val.json"] = questions["val"]
        files["val_detailed_captions.json"] = val_detailed
    for name, rows in files.items():
        _dump(out / name, rows)
    config = {"num_images": num_images, "seed": seed, "image_size": image_size, "test_fraction": test_fraction,
              "val_fraction": val_fraction, "num_text": len(text)}
    with (out / "scenes.json").open("w", encoding="utf-8") as f:
        json.dump({"config": config, "scenes": records}, f, indent=1)
    counts = {name: len(rows) for name, rows in files.items()} | {"images": num_images}
    return SyntheticScenes(out, tuple(scenes), tuple(sorted(test)), counts, tuple(sorted(val)))
