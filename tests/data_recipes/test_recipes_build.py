"""Every recipe built from tiny files laid out like the real downloads."""

from __future__ import annotations

import json
import shutil

import datasets
import pytest
from recipe_fakes import EXTRA_802K, MIX665K_IMAGES, SHAREGPT4V_IMAGES, TEXT_ROWS, write_jsonl

from data_recipes import DEFAULT_CAPTION_INSTRUCTION, ROW_FEATURES, build_recipe, get_recipe, list_recipes
from data_recipes.text_sources import TEXT_CONVERTERS

TINY_CROC_COUNTS = {"sharegpt4v": 4, "mathinstruct": 2, "alpaca": None, "belle": 2, "open_platypus": 2,
                    "code_alpaca": 2, "firefly": 2, "webqa": 5, "dolly": 2}


def test_registry_lists_every_recipe():
    assert list_recipes() == ["croc1.5m", "lcs558k", "llava665k", "llava802k", "llava_json", "recap_cc3m",
                              "synthetic_scenes"]
    assert "instruction" in get_recipe("croc1.5m").parameters()
    with pytest.raises(KeyError, match="available: croc1.5m"):
        get_recipe("nope")


def test_lcs558k(lcs_root, tmp_path):
    result = build_recipe("lcs558k", lcs_root, tmp_path / "out")
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds.features == ROW_FEATURES
    assert ds["id"] == ["0", "000000001", "2", "000000003", "4", "000000005"]
    assert ds["image"][:4] == ["00000/000000000.jpg", "00000/000000001.jpg", "00000/000000002.jpg",
                               "00001/000000003.jpg"]
    assert ds[1]["conversations"][1] == {"from": "gpt", "value": "caption 1"}
    assert set(ds["source"]) == {"lcs558k"}
    assert result.summary["image_root"] == str(lcs_root / "images")
    assert result.summary["sources"]["lcs558k"]["licence"] == "research use only, CC-3M / BLIP terms"


def test_unknown_parameter_is_refused(lcs_root, tmp_path):
    with pytest.raises(TypeError, match="no parameter"):
        build_recipe("lcs558k", lcs_root, tmp_path / "out", params={"cuont": 3})


def _croc(croc_root, out, seed=0, **params):
    return build_recipe("croc1.5m", croc_root, out, seed=seed, params={"counts": TINY_CROC_COUNTS, **params})


@pytest.fixture(scope="module")
def croc_build(croc_root, tmp_path_factory):
    return _croc(croc_root, tmp_path_factory.mktemp("croc_build") / "out")


def test_croc_counts_and_shortfall(croc_build):
    sources = croc_build.summary["sources"]
    taken = {name: s["taken"] for name, s in sources.items()}
    assert taken == {"sharegpt4v": 4, "mathinstruct": 2, "alpaca": 5, "belle": 2, "open_platypus": 2,
                     "code_alpaca": 2, "firefly": 2, "webqa": 3, "dolly": 2}
    assert sources["webqa"]["requested"] == 5 and sources["webqa"]["available"] == 3
    assert sources["webqa"]["shortfall"] == 2
    assert all(s["shortfall"] == 0 for name, s in sources.items() if name != "webqa")
    assert croc_build.summary["rows"] == {"read": 24, "kept": 24, "dropped": 0}
    assert sources["sharegpt4v"]["sample_seed"] == 0 and sources["alpaca"]["sample_seed"] is None


def test_croc_caption_rows(croc_build):
    ds = croc_build.dataset
    captions = ds.filter(lambda r: r["source"] == "sharegpt4v")
    assert len(captions) == 4
    for row in captions:
        assert row["conversations"][0] == {"from": "human", "value": f"<image>\n{DEFAULT_CAPTION_INSTRUCTION}"}
        upstream = SHAREGPT4V_IMAGES.index(row["image"])  # paths keep their coco/ llava/ sam/ prefixes
        assert row["conversations"][1]["value"] == f"A detailed caption of image {upstream}."
        assert row["id"] == (str(upstream) if upstream % 2 else f"sg{upstream}")


def test_croc_text_rows_converted_per_layout(croc_build):
    text = croc_build.dataset.filter(lambda r: r["image"] is None)
    assert len(text) == 20
    for row in text:
        source, index = row["id"].rsplit("-", 1)
        assert source == row["source"]
        assert row["conversations"] == TEXT_CONVERTERS[source](TEXT_ROWS[source][int(index)])
    by_id = {r["id"]: r["conversations"] for r in text}
    # Literal values, one per layout (alpaca is taken whole, so both of its rows below are present).
    assert by_id["alpaca-0"][0]["value"] == "Give a synonym of word0.\ncontext 0"
    assert by_id["alpaca-1"][0]["value"] == "Give a synonym of word1."  # empty input: no trailing newline
    assert by_id["alpaca-4"][1]["value"] == "synonym4"  # second parquet shard, read after the first
    assert by_id["webqa-2"] == [{"from": "human", "value": "Where is place 2?"},
                                {"from": "gpt", "value": "Place 2 is here."}]
    firefly = [v for k, v in by_id.items() if k.startswith("firefly-")]
    assert all(c[0]["value"].startswith("Premise") and c[1]["value"].startswith("entailment") for c in firefly)
    dolly = [(k, v) for k, v in by_id.items() if k.startswith("dolly-")]
    for key, conv in dolly:
        i = int(key.split("-")[1])
        expected = f"Summarise text {i}." + (f"\nLong text {i}." if i % 2 == 0 else "")
        assert conv == [{"from": "human", "value": expected}, {"from": "gpt", "value": f"Summary {i}."}]


def test_croc_seed_reproduces_and_other_seed_differs(croc_root, croc_build, tmp_path):
    again = _croc(croc_root, tmp_path / "again", seed=0)
    other = _croc(croc_root, tmp_path / "other", seed=1)
    assert again.dataset["id"] == croc_build.dataset["id"]
    assert again.dataset["conversations"] == croc_build.dataset["conversations"]
    assert other.dataset["id"] != croc_build.dataset["id"]


def test_croc_instruction_pool_and_keep_upstream(croc_root, tmp_path):
    pool = ["Describe this image in detail.", "What is in the picture? Be thorough."]
    counts = {**TINY_CROC_COUNTS, "sharegpt4v": None}
    first = build_recipe("croc1.5m", croc_root, tmp_path / "a", seed=3, params={"counts": counts, "instruction": pool})
    second = build_recipe("croc1.5m", croc_root, tmp_path / "b", seed=3, params={"counts": counts, "instruction": pool})
    prompts = [r["conversations"][0]["value"] for r in first.dataset if r["source"] == "sharegpt4v"]
    assert len(prompts) == 6 and {p.removeprefix("<image>\n") for p in prompts} == set(pool)
    assert prompts == [r["conversations"][0]["value"] for r in second.dataset if r["source"] == "sharegpt4v"]
    assert first.summary["params"]["instruction"] == pool

    kept = build_recipe("croc1.5m", croc_root, tmp_path / "c", params={"counts": counts, "instruction": None})
    prompts = {r["conversations"][0]["value"] for r in kept.dataset if r["source"] == "sharegpt4v"}
    assert prompts == {"<image>\nAnalyze the image in a comprehensive and detailed manner."}
    # `--set instruction=none` (what DATA.md tells recap_cc3m users; YAML reads it as the string "none") keeps the
    # upstream prompts here too, rather than prompting every caption row with the word "none".
    none = build_recipe("croc1.5m", croc_root, tmp_path / "d", params={"counts": counts, "instruction": "none"})
    assert {r["conversations"][0]["value"] for r in none.dataset if r["source"] == "sharegpt4v"} == prompts


def test_croc_zero_count_path_override_and_typos(croc_root, tmp_path):
    other_webqa = tmp_path / "elsewhere" / "webqa.jsonl"
    write_jsonl(other_webqa, [{"input": "Elsewhere?", "output": "Yes."}])
    counts = {**TINY_CROC_COUNTS, "sharegpt4v": 0, "mathinstruct": 0}
    result = build_recipe("croc1.5m", croc_root, tmp_path / "out",
                          params={"counts": counts, "paths": {"webqa": str(other_webqa)}})
    assert "sharegpt4v" not in result.summary["sources"] and "mathinstruct" not in result.summary["sources"]
    assert result.summary["sources"]["webqa"]["origin"] == str(other_webqa)
    assert [r["conversations"][0]["value"] for r in result.dataset if r["source"] == "webqa"] == ["Elsewhere?"]
    with pytest.raises(ValueError, match=r"counts: unknown source\(s\) \['alpacca'\]"):
        build_recipe("croc1.5m", croc_root, tmp_path / "typo", params={"counts": {"alpacca": 1}})


def test_croc_hub_sources_go_through_the_hub_module(croc_root, tmp_path, monkeypatch):
    """No network: the two Hub entry points are replaced; the recipe must route hub sources through them."""
    calls = []

    def fake_download(repo_id, filename):
        calls.append(("download", repo_id, filename))
        return croc_root / "share-captioner_coco_lcs_sam_1246k_1107.json"

    def fake_load(repo_id, data_files=None):
        calls.append(("load", repo_id, data_files))
        return datasets.Dataset.from_list(TEXT_ROWS["alpaca"])

    monkeypatch.setattr("data_recipes.hub.download_hub_file", fake_download)
    monkeypatch.setattr("data_recipes.hub.load_hub_dataset", fake_load)
    counts = {**TINY_CROC_COUNTS, "alpaca": 3}
    result = build_recipe("croc1.5m", croc_root, tmp_path / "out",
                          params={"counts": counts, "hub": {"sharegpt4v": True, "alpaca": "someone/alpaca-copy"}})
    assert calls == [("download", "Lin-Chen/ShareGPT4V", "share-captioner_coco_lcs_sam_1246k_1107.json"),
                     ("load", "someone/alpaca-copy", None)]
    assert result.summary["sources"]["alpaca"]["origin"] == "hub:someone/alpaca-copy"
    alpaca = [r for r in result.dataset if r["source"] == "alpaca"]
    assert len(alpaca) == 3
    for row in alpaca:
        assert row["conversations"] == TEXT_CONVERTERS["alpaca"](TEXT_ROWS["alpaca"][int(row["id"].split("-")[1])])


def test_llava665k(mix665k_root, tmp_path):
    result = build_recipe("llava665k", mix665k_root, tmp_path / "out")
    ds = result.dataset
    assert ds["id"] == ["0", "000000000001", "2", "000000000003", "4", "000000000005", "100", "t-101"]
    assert ds["image"] == [*MIX665K_IMAGES, None, None]
    assert len(ds[0]["conversations"]) == 4 and ds[0]["conversations"][3]["value"] == "Done."
    assert result.summary["rows"]["dropped"] == 0
    # The LLaVA-format export leaves `image` out of text-only rows (LLaVA tests the key, not its value).
    exported = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert [("image" in r) for r in exported] == [True] * 6 + [False] * 2
    assert exported[0]["image"] == "coco/train2017/000000033471.jpg"
    assert exported[7]["conversations"][1]["value"] == "One, two."


def test_llava665k_count_is_seeded(mix665k_root, tmp_path):
    a = build_recipe("llava665k", mix665k_root, tmp_path / "a", seed=0, params={"count": 4}).dataset["id"]
    b = build_recipe("llava665k", mix665k_root, tmp_path / "b", seed=0, params={"count": 4}).dataset["id"]
    c = build_recipe("llava665k", mix665k_root, tmp_path / "c", seed=5, params={"count": 4}).dataset["id"]
    assert a == b and a != c and len(a) == 4 and len(set(a)) == 4


def test_llava802k_defaults_record_shortfalls_and_prefix_images(mix665k_root, tmp_path):
    result = build_recipe("llava802k", mix665k_root, tmp_path / "out", params={"counts": {"dvqa": 2}})
    sources = result.summary["sources"]
    assert {n: s["taken"] for n, s in sources.items()} == {"llava665k": 8, "docvqa": 4, "chartqa": 4, "ai2d": 4,
                                                          "synthdog_en": 4, "dvqa": 2}
    assert sources["docvqa"]["requested"] == 10_211 and sources["docvqa"]["shortfall"] == 10_207
    assert sources["dvqa"]["shortfall"] == 0
    # Every image validated from the one data root: the extras' own folders were prefixed correctly.
    assert result.summary["rows"] == {"read": 26, "kept": 26, "dropped": 0}
    docvqa = [r["image"] for r in result.dataset if r["source"] == "docvqa"]
    assert docvqa == [f"docvqa/train/documents/doc{i}.png" for i in range(4)]
    synthdog = [r["image"] for r in result.dataset if r["source"] == "synthdog_en"]
    assert synthdog[0] == "synthdog-en/images/0.jpg"
    assert sorted(result.card.data.source_datasets) == ["OpenGVLab/InternVL-Chat-V1-2-SFT-Data",
                                                        "liuhaotian/LLaVA-Instruct-150K"]
    assert set(EXTRA_802K) == set(sources) - {"llava665k"}


def test_llava_json_generic(lcs_root, tmp_path):
    result = build_recipe("llava_json", lcs_root, tmp_path / "out", seed=1, params={
        "annotation": str(lcs_root / "blip_laion_cc_sbu_558k.json"), "image_root": "images", "source": "mine",
        "count": 3, "licence": "cc-by-4.0"})
    assert len(result.dataset) == 3 and set(result.dataset["source"]) == {"mine"}
    assert result.card.data.license == "cc-by-4.0"
    assert result.summary["sources"]["mine"]["sample_seed"] == 1
    with pytest.raises(ValueError, match="needs an annotation"):
        build_recipe("llava_json", lcs_root, tmp_path / "none")


def test_synthetic_scenes_recipe_generates_and_validates(tmp_path):
    root = tmp_path / "synth"
    stage1 = build_recipe("synthetic_scenes", root, tmp_path / "s1", seed=3,
                          params={"stage": "1", "generate": True, "num_images": 10, "image_size": 64})
    scenes = json.loads((root / "scenes.json").read_text())
    train_images = [s["image"] for s in scenes["scenes"] if s["split"] == "train"]
    assert scenes["config"]["seed"] == 3 and len(scenes["scenes"]) == 10
    assert stage1.dataset["image"] == train_images and stage1.summary["rows"]["dropped"] == 0
    stage15 = build_recipe("synthetic_scenes", root, tmp_path / "s15")
    assert {n: s["taken"] for n, s in stage15.summary["sources"].items()} == {
        "synthetic_detailed": len(train_images), "synthetic_text": 10}
    test = build_recipe("synthetic_scenes", root, tmp_path / "t", params={"stage": "test"})
    assert set(test.dataset["image"]).isdisjoint(train_images)
    with pytest.raises(ValueError, match="stage must be one of"):
        build_recipe("synthetic_scenes", root, tmp_path / "bad", params={"stage": "3"})


def test_out_dir_protection(lcs_root, tmp_path):
    out = tmp_path / "out"
    build_recipe("lcs558k", lcs_root, out)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_recipe("lcs558k", lcs_root, out)
    assert len(build_recipe("lcs558k", lcs_root, out, overwrite=True, params={"count": 2}).dataset) == 2
    # A rebuild that fails before writing leaves the previous build in place.
    with pytest.raises(FileNotFoundError):
        build_recipe("lcs558k", lcs_root, out, overwrite=True, params={"annotation": "missing.json"})
    assert len(datasets.load_from_disk(str(out))) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to delete"):
        build_recipe("lcs558k", lcs_root, foreign, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_overwrite_keeps_what_the_user_put_in_a_build_folder(lcs_root, tmp_path, monkeypatch):
    """`--overwrite` "only replaces an earlier build": a build folder is where users keep a run trained on it
    (`--output_dir=builds/x/run1`) or notes, and the rebuild deleted them with the build's own files. Refused before
    any source is read, every file left; a build killed midway (only its own files there) is still replaced."""
    from data_recipes import build as build_module

    out = tmp_path / "out"
    build_recipe("lcs558k", lcs_root, out)
    (out / "run1").mkdir()
    (out / "run1" / "model.safetensors").write_bytes(b"weights")
    (out / "NOTES.md").write_text("keep me")
    before = sorted(path.name for path in out.iterdir())
    with pytest.raises(FileExistsError, match=r"holds 2 thing\(s\) no build writes \(NOTES.md, run1\)"):
        build_recipe("lcs558k", lcs_root, out, overwrite=True, params={"count": 2})
    assert sorted(path.name for path in out.iterdir()) == before
    assert (out / "run1" / "model.safetensors").read_bytes() == b"weights"
    # What the user adds while a rebuild reads its sources is not removed with the previous build either.
    shutil.rmtree(out / "run1")
    (out / "NOTES.md").unlink()
    (out / ".hub-upload-x1").mkdir()  # the staging folder of a push killed midway: a build's own
    (out / ".summary.json.123.tmp").write_text("{")
    recipe = build_module.get_recipe("lcs558k")

    class ReadThenUserWrites(type(recipe)):
        def __call__(self, *args, **kwargs):
            (out / "NOTES.md").write_text("written meanwhile")
            return recipe(*args, **kwargs)

    monkeypatch.setattr(build_module, "get_recipe", lambda name: ReadThenUserWrites(recipe.name, recipe.fn))
    assert len(build_recipe("lcs558k", lcs_root, out, overwrite=True, params={"count": 2}).dataset) == 2
    assert (out / "NOTES.md").read_text() == "written meanwhile"
    assert not (out / ".hub-upload-x1").exists() and not (out / ".summary.json.123.tmp").exists()



def test_a_data_root_inside_the_out_dir_is_never_emptied(lcs_root, tmp_path):
    """`--data-root builds/x/raw --out builds/x --overwrite`: the downloads were read, then deleted with the previous
    build, whose images the new build then rejected as missing."""
    out = tmp_path / "out"
    build_recipe("lcs558k", lcs_root, out)
    shutil.copytree(lcs_root, out / "raw")
    (tmp_path / "link").symlink_to(out)
    for root in (out / "raw", tmp_path / "link" / "raw", out):
        with pytest.raises(FileExistsError, match="is inside --out"):
            build_recipe("lcs558k", root, out, overwrite=True)
    assert sorted(p.name for p in (out / "raw").iterdir()) == sorted(p.name for p in lcs_root.iterdir())


@pytest.mark.parametrize("moment", ["previous build removed", "rejects written", "rows saved"])
def test_a_build_killed_midway_is_replaced_by_the_same_command(lcs_root, tmp_path, monkeypatch, moment):
    """A build killed after it emptied its folder and before its summary.json (the rejects file and the Arrow files
    take long on a full mixture) left a folder that `--overwrite` refused to delete as not a build: the same command
    could never run again until the user removed the folder by hand. A rebuild over a good build leaves that one."""
    from data_recipes import build as build_module

    out = tmp_path / "out"
    good = tmp_path / "good"
    build_recipe("lcs558k", lcs_root, good, params={"count": 2})
    before = {path.name: path.read_bytes() for path in good.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGKILL leaves: the files written so far, nothing after

    if moment == "previous build removed":
        monkeypatch.setattr(build_module, "write_rejects", killed)
    elif moment == "rejects written":
        write_rejects = build_module.write_rejects
        monkeypatch.setattr(build_module, "write_rejects",
                            lambda *args, **kwargs: (write_rejects(*args, **kwargs), killed()))
    else:
        monkeypatch.setattr(build_module, "write_jsonl", killed)
    with pytest.raises(KeyboardInterrupt):
        build_recipe("lcs558k", lcs_root, out)
    assert json.loads((out / "summary.json").read_text())["status"] == "building"
    # Over a good build the new one is written beside it, in a hidden folder: the good one stays as it was.
    with pytest.raises(KeyboardInterrupt):
        build_recipe("lcs558k", lcs_root, good, overwrite=True)
    assert {path.name: path.read_bytes() for path in good.iterdir() if not path.name.startswith(".")} == before
    # The trainer does not take what it holds (partial rows, no image root) for a build.
    from trainer.cli import ConfigError
    from trainer.validation import check_data

    with pytest.raises(ConfigError, match="stopped before its end .* rerun the build command with --overwrite"):
        check_data({"path": str(out)})
    monkeypatch.undo()
    assert len(build_recipe("lcs558k", lcs_root, out, overwrite=True).dataset) > 0
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"
    assert not list(out.glob(".*.tmp"))
    assert len(build_recipe("lcs558k", lcs_root, good, overwrite=True).dataset) > 0
    assert not [path.name for path in good.iterdir() if path.name.startswith(".")]  # the killed attempt's too


def test_the_rows_file_of_a_build_killed_while_writing_it_is_refused_as_data_path(lcs_root, tmp_path, monkeypatch):
    """A build folder's `data.jsonl` is a LLaVA file the trainer takes as `data.path`: a build stopped by Ctrl-C while
    writing it left the rows written so far, every line whole (the file is closed on the way out), and the trainer
    trained on them as if they were the build: only the folder itself was refused."""
    from data_recipes import build as build_module
    from trainer.cli import ConfigError
    from trainer.validation import check_data

    out = tmp_path / "out"
    build_recipe("lcs558k", lcs_root, out, params={"count": 4})
    check_data({"path": str(out / "data.jsonl")})  # a finished build's rows file is taken

    def rows_then_killed(dataset, *args, **kwargs):
        yield next(iter(llava_rows(dataset)))
        raise KeyboardInterrupt  # Ctrl-C while the rows file is written

    llava_rows = build_module._llava_rows
    monkeypatch.setattr(build_module, "_llava_rows", rows_then_killed)
    with pytest.raises(KeyboardInterrupt):  # over a good build: built beside it, which stays as it was
        build_recipe("lcs558k", lcs_root, out, overwrite=True, params={"count": 4})
    assert len((out / "data.jsonl").read_text().splitlines()) == 4
    check_data({"path": str(out / "data.jsonl")})
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        build_recipe("lcs558k", lcs_root, killed, params={"count": 4})
    assert len((killed / "data.jsonl").read_text().splitlines()) == 1  # one whole row of four
    with pytest.raises(ConfigError, match="stopped before its end .* rerun the build command with --overwrite"):
        check_data({"path": str(killed / "data.jsonl")})



def test_the_rows_file_of_a_build_whose_image_root_is_gone_is_refused_as_data_path(lcs_root, tmp_path):
    """A build's `data.jsonl` is read under the image root the build recorded, as the folder is: a root since moved
    was refused for the folder before the run started, while its `data.jsonl` passed, and every image row was then
    checked and rejected as missing_image, the message offering data.max_reject_fraction."""
    from trainer.cli import ConfigError
    from trainer.validation import check_data

    root = tmp_path / "root"
    shutil.copytree(lcs_root, root)
    out = tmp_path / "out"
    build_recipe("lcs558k", root, out, params={"count": 4})
    root.rename(tmp_path / "moved")
    for path in (out, out / "data.jsonl"):
        with pytest.raises(ConfigError, match="records the image root .* which does not exist .* --data.image_root"):
            check_data({"path": str(path)})
    check_data({"path": str(out / "data.jsonl"), "image_root": str(tmp_path / "moved" / "images")})

def _recap_shards(root):
    """Two shards laid out like lmms-lab/LLaVA-ReCap-CC3M's `data/train-XXXXX-of-00281.parquet`: id, the image
    embedded as {bytes, path}, and LLaVA conversations."""
    import io

    from PIL import Image
    from recipe_fakes import write_parquet

    rows = []
    for i in range(5):
        buffer = io.BytesIO()
        Image.new("RGB", (6 + i, 4), (40 * i, 90, 200)).save(buffer, format="JPEG")
        rows.append({"id": f"GCC_train_{i:09d}", "image": {"bytes": buffer.getvalue(), "path": f"{i}.jpg"},
                     "conversations": [{"from": "human", "value": "<image>\nWhat do you see happening in this image?"},
                                       {"from": "gpt", "value": f"A detailed caption number {i}."}]})
    write_parquet(root / "data" / "train-00000-of-00281.parquet", rows[:3])
    write_parquet(root / "data" / "train-00001-of-00281.parquet", rows[3:])
    return rows


def test_recap_cc3m_from_the_hub_parquet_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "LLaVA-ReCap-CC3M"
    rows = _recap_shards(root)
    result = build_recipe("recap_cc3m", root, tmp_path / "out", params={"count": 4})
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds.features == ROW_FEATURES and len(ds) == 4 and set(ds["source"]) == {"recap_cc3m"}
    assert result.summary["image_root"] == str(root / "images")
    by_id = {row["id"]: row for row in rows}
    for row in ds:
        # ViCToR's prompt replaces the human turn; the caption is the upstream one.
        assert row["conversations"][0]["value"] == "<image>\nPlease generate detailed descriptions of the given image."
        assert row["conversations"][1] == by_id[row["id"]]["conversations"][1]
        with Image.open(root / "images" / row["image"]) as image:  # written once from the shard's bytes
            assert image.size == (6 + int(row["id"][-1]), 4)
    assert result.summary["sources"]["recap_cc3m"]["hub_id"] == "lmms-lab/LLaVA-ReCap-CC3M"
    # Only the drawn rows' images are written (a 10K draw from the 3M rows writes 10K files, not 3M).
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(ds["image"])
    # Seeded like every recipe: the same seed draws the same rows.
    again = build_recipe("recap_cc3m", root, tmp_path / "again", params={"count": 4})
    assert datasets.load_from_disk(str(tmp_path / "again"))["id"] == ds["id"] and again.summary["rows"]["kept"] == 4


def test_recap_cc3m_rows_whose_ids_share_a_file_name_keep_their_own_images(tmp_path):
    import io

    from PIL import Image
    from recipe_fakes import write_parquet

    root = tmp_path / "LLaVA-ReCap-CC3M"
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0), "yellow": (255, 255, 0)}
    rows = []
    # A repeated id, and two ids that are one file name once made safe (`/` becomes `_`).
    for row_id, caption in zip(["GCC_train_1", "GCC_train_1", "x/1", "x_1"], colours):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), colours[caption]).save(buffer, format="PNG")
        rows.append({"id": row_id, "image": {"bytes": buffer.getvalue(), "path": "a.png"}, "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}]})
    write_parquet(root / "data" / "train-00000-of-00001.parquet", rows)
    for out, count in (("all", None), ("drawn", 2)):  # a row's file does not depend on which rows are drawn
        ds = build_recipe("recap_cc3m", root, tmp_path / out, params={"count": count}).dataset
        for row in ds:
            with Image.open(root / "images" / row["image"]) as image:
                assert image.convert("RGB").getpixel((4, 4)) == colours[row["conversations"][1]["value"]]
    assert len(set(ds["image"])) == len(ds)


def test_recap_cc3m_from_victors_local_json(tmp_path):
    """ViCToR's own layout: `LLaVA-ReCap-CC3Mv2.json` next to `train_images/`; `instruction=none` keeps the rows'."""
    from recipe_fakes import caption_row, write_image, write_json

    root = tmp_path / "victor_data"
    write_image(root / "train_images" / "a.jpg")
    write_json(root / "LLaVA-ReCap-CC3Mv2.json", [caption_row("a", "a.jpg", "A long caption.",
                                                             prompt=VICTOR_PROMPT)])
    build_recipe("recap_cc3m", root, tmp_path / "out", params={"annotation": "LLaVA-ReCap-CC3Mv2.json",
                                                               "image_root": "train_images", "instruction": "none"})
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds["image"] == ["a.jpg"] and ds[0]["conversations"][0]["value"] == f"<image>\n{VICTOR_PROMPT}"


VICTOR_PROMPT = "Please generate detailed descriptions of the given image."


def test_overwrite_refuses_a_folder_whose_summary_json_is_not_a_build(lcs_root, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps({"mmbench": 64.1}))  # another tool's summary.json
    (results / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to delete"):
        build_recipe("lcs558k", lcs_root, results, overwrite=True)
    assert (results / "notes.txt").read_text() == "keep me"


def test_text_source_row_with_a_lone_surrogate_is_one_reject(croc_root, tmp_path):
    root = tmp_path / "root"
    for name in ("share-captioner_coco_lcs_sam_1246k_1107.json", "coco"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(croc_root / name)
    firefly = root / "text/firefly-train-1.1M/firefly-train-1.1M.jsonl"
    firefly.parent.mkdir(parents=True)
    firefly.write_text('{"kind": "Poem", "input": "Write a poem.", "target": "ok"}\n'
                       '{"kind": "Poem", "input": "Emoji \\ud83d cut.", "target": "ok"}\n')
    counts = {name: 0 for name in TINY_CROC_COUNTS} | {"sharegpt4v": 2, "firefly": None}
    result = build_recipe("croc1.5m", root, tmp_path / "out", params={"counts": counts})
    assert result.summary["sources"]["firefly"]["kept"] == 1
    assert result.summary["dropped_by_reason"]["invalid_text"] == 1


def test_nan_and_infinity_turn_values_are_empty_turns(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    rows = [{"id": i, "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": value}]}
            for i, value in enumerate([float("nan"), float("inf"), "A."])]
    (root / "train.json").write_text(json.dumps(rows))  # Python writes NaN / Infinity, which are not JSON
    result = build_recipe("llava_json", root, tmp_path / "out", params={"annotation": "train.json"})
    assert result.summary["dropped_by_reason"]["empty_turn"] == 2
    assert [turn["value"] for row in result.dataset["conversations"] for turn in row] == ["Q?", "A."]


def test_nan_image_and_id_of_a_pandas_dump_are_missing_not_a_file_and_an_id_named_nan(tmp_path):
    # mix665K read with pandas and written back with `json.dump(df.to_dict("records"))`: its text rows' missing
    # `image` (and a missing `id`) come out as NaN.
    root = tmp_path / "root"
    root.mkdir()
    rows = [{"id": row_id, "image": float("nan"), "conversations": [{"from": "human", "value": f"Q{i}?"},
                                                                      {"from": "gpt", "value": "A."}]}
            for i, row_id in enumerate(["t0", float("nan"), float("nan")])]
    (root / "train.json").write_text(json.dumps(rows))
    result = build_recipe("llava_json", root, tmp_path / "out", params={"annotation": "train.json"})
    assert result.summary["rows"] == {"read": 3, "kept": 3, "dropped": 0}
    assert result.dataset["image"] == [None, None, None]
    assert result.dataset["id"] == ["t0", "llava_json-1", "llava_json-2"]
    assert result.summary["notices"]["counts"]["duplicate_id"] == 0


def test_text_source_nan_input_and_output_are_missing_not_the_text_nan(croc_root, tmp_path):
    root = tmp_path / "root"
    for name in ("share-captioner_coco_lcs_sam_1246k_1107.json", "coco"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(croc_root / name)
    code = root / "text/CodeAlpaca-20k/code_alpaca_20k.json"
    code.parent.mkdir(parents=True)
    code.write_text(json.dumps([{"instruction": "Write a loop.", "input": float("nan"), "output": "for x in y: pass"},
                                {"instruction": "Reverse a list.", "input": "", "output": float("nan")}]))
    counts = {name: 0 for name in TINY_CROC_COUNTS} | {"sharegpt4v": 2, "code_alpaca": None}
    result = build_recipe("croc1.5m", root, tmp_path / "out", params={"counts": counts})
    assert result.summary["sources"]["code_alpaca"]["kept"] == 1
    assert result.summary["dropped_by_reason"]["empty_turn"] == 1
    kept = [row for row in result.dataset if row["source"] == "code_alpaca"]
    assert kept[0]["conversations"][0]["value"] == "Write a loop."


def test_hub_folder_embeds_the_image_that_was_validated_not_one_behind_a_symlink(tmp_path):
    from PIL import Image

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (elsewhere / "mnt").mkdir(parents=True)
    root.mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(root / "a.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(elsewhere / "a.png")  # outside the image root
    (root / "sub").symlink_to(elsewhere / "mnt")
    (root / "train.json").write_text(json.dumps([{"id": 0, "image": "sub/../a.png", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]}]))
    build_recipe("llava_json", root, tmp_path / "out", params={"annotation": "train.json"},
                 hub_folder=tmp_path / "hub")
    pushed = datasets.load_dataset(str(tmp_path / "hub"), split="train")
    assert pushed[0]["image"].convert("RGB").getpixel((1, 1)) == (255, 0, 0)


def test_a_builds_rows_file_as_data_path_finds_the_images_the_build_did(lcs_root, tmp_path):
    """`data.jsonl` names images as the build does, relative to the image root in its summary.json, not to the build
    folder: read as a file in that folder, every image row was rejected as missing_image."""
    from trainer.data_loading import load_training_rows
    from trainer.script_args import DataArguments

    out = tmp_path / "out"
    built = build_recipe("lcs558k", lcs_root, out, params={"count": 4}).dataset
    rows = load_training_rows(DataArguments(path=str(out / "data.jsonl"), image_check="exists"))
    assert rows.report.rows_read == len(built) == 4 and not any(rows.report.rejected.values())
    assert str(rows.image_root) == (json.loads((out / "summary.json").read_text())["image_root"])
