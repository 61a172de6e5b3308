"""`python -m data_recipes synth`: a bad --image-size or an --out that is a file fails in one line naming the option,
before anything is drawn. Before: `--image-size -5` ended in "all elements of broadcast shape must be non-negative",
`--image-size 0` in "cannot write empty image" (after the progress bar started), and an --out that is a file in a bare
"[Errno 20] Not a directory"."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_recipes.cli import MIN_SCENE_IMAGE_SIZE, main
from data_recipes.synthetic_scenes import SIZES, make_scene


@pytest.mark.parametrize("size", ["-5", "0", str(MIN_SCENE_IMAGE_SIZE - 1)])
def test_image_size_below_the_smallest_scene_is_a_usage_error(size: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["synth", "--out", str(tmp_path / "s"), "--num-images", "4", "--image-size", size])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"argument --image-size: expected a whole number >= {MIN_SCENE_IMAGE_SIZE}, got {size}"), err
    assert not (tmp_path / "s").exists()


def test_the_smallest_image_size_holds_every_object_in_its_cell() -> None:
    """The minimum is where the drawing still matches the scene record: every object's disc inside its grid cell
    (so each position answer holds); one pixel less and the largest object crosses into the next cell."""
    def fits(image_size: int) -> bool:
        cell = image_size / 3
        objects = [o for index in range(200) for o in make_scene(index, seed=0, image_size=image_size).objects]
        assert {o.size for o in objects} == set(SIZES)  # every size drawn
        return all(o.col * cell <= o.center[0] - o.radius and o.center[0] + o.radius <= (o.col + 1) * cell and
                   o.row * cell <= o.center[1] - o.radius and o.center[1] + o.radius <= (o.row + 1) * cell
                   for o in objects)

    assert fits(MIN_SCENE_IMAGE_SIZE) and not fits(MIN_SCENE_IMAGE_SIZE - 1)


def test_image_size_at_the_minimum_draws(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "s"), "--num-images", "2",
                 "--image-size", str(MIN_SCENE_IMAGE_SIZE)]) == 0
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 2


def test_out_that_is_a_file_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "afile"
    mine.write_text("mine")
    assert main(["synth", "--out", str(mine), "--num-images", "4", "--image-size", "32"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --out {mine} is a file"), err
    assert mine.read_text() == "mine"
