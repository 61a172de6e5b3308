"""A mixture as `--push-to-hub` uploads it (images embedded as a `datasets.Image` column, Parquet shards in
push_to_hub's layout, its card) is usable without the image folders: `datasets.load_dataset` gives PIL images, the
trainer's data path gives the same tokens and pixels as from the local build, and a stage trains on it. No network:
the folder is what `data_recipes build --hub-folder` writes."""

from __future__ import annotations

import shutil

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from trainer_helpers import log_history, run_stage

from data_recipes import build_recipe
from data_recipes.publish import hub_dataset, write_hub_folder
from modeling_croc import CrocProcessor
from modeling_croc.publish_folder import PUBLISH_MARKER
from trainer.data import CrocSupervisedDataset
from trainer.data_loading import load_training_rows
from trainer.script_args import DataArguments


def test_pushed_dataset_loads_with_images_and_trains(data_dir, stage1_dir, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(data_dir, source)
    build = build_recipe("llava_json", source, tmp_path / "build", params={"annotation": "detailed.json"},
                         hub_folder=tmp_path / "hub")
    assert build.summary["hub"]["image_storage"] == "embedded"
    assert sorted(p.relative_to(tmp_path / "hub").as_posix() for p in (tmp_path / "hub").rglob("*") if p.is_file()) \
        == [PUBLISH_MARKER, "README.md", "data/train-00000-of-00001.parquet"]
    # The bytes are in the shard: the images are not needed any more.
    shard = pq.read_table(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet").to_pylist()
    image_rows = [row for row in shard if row["image"] is not None]
    assert len(image_rows) == 8 and all(row["image"]["bytes"] for row in image_rows)
    originals = {row["id"]: np.asarray(Image.open(source / row["image"]).convert("RGB"))
                 for row in build.dataset if row["image"] is not None}
    shutil.rmtree(source / "images")

    pushed = datasets.load_dataset(str(tmp_path / "hub"), split="train")
    assert isinstance(pushed.features["image"], datasets.Image)
    assert pushed["id"] == build.dataset["id"]
    for row in pushed:
        if row["id"] in originals:
            assert isinstance(row["image"], Image.Image)
            assert np.array_equal(np.asarray(row["image"].convert("RGB")), originals[row["id"]])
        else:
            assert row["image"] is None

    # The trainer's data path: rows from the pushed folder give what the local build's path rows give.
    processor = CrocProcessor.from_pretrained(stage1_dir)
    rows = load_training_rows(DataArguments(path=str(tmp_path / "hub"))).rows
    from_hub = CrocSupervisedDataset(rows, processor, template="vicuna_v1", model_max_length=128)
    shutil.copytree(data_dir / "images", source / "images")
    local = load_training_rows(DataArguments(path=str(tmp_path / "build")))
    local_rows, image_root = local.rows, local.image_root
    local = CrocSupervisedDataset(local_rows, processor, template="vicuna_v1", image_root=image_root,
                                  model_max_length=128)
    assert from_hub.modality_lengths == local.modality_lengths
    # Any folder of Parquet files reads the same way (what `check_data` accepts, `load_dataset` reads).
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet", tmp_path / "bare" / "train.parquet")
    assert load_training_rows(DataArguments(path=str(tmp_path / "bare"))).rows["id"] == rows["id"]
    for index in range(len(local)):
        ours, theirs = from_hub[index], local[index]
        assert torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(ours["labels"], theirs["labels"])
        if theirs["pixel_values"] is None:
            assert ours["pixel_values"] is None
        else:
            torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], rtol=0, atol=0)
    shutil.rmtree(source / "images")

    # And a stage trains on it, reading the images from the rows.
    out = tmp_path / "stage1_5"
    run_stage("stage1_5.yaml", out, f"--data.path={tmp_path / 'hub'}", f"--model.name_or_path={stage1_dir}",
              "--max_steps=1")
    losses = [entry["loss"] for entry in log_history(out) if "loss" in entry]
    assert len(losses) == 1 and np.isfinite(losses[0])


def test_hub_folder_shards_like_push_to_hub(data_dir, tmp_path):
    """Several shards: contiguous, named `train-0000i-of-0000N`, read back in order by `load_dataset`."""
    build = build_recipe("llava_json", data_dir, tmp_path / "build", params={"annotation": "qa.json"})
    rows = hub_dataset(build.dataset, build.summary["image_root"], "embedded")
    written = write_hub_folder(rows, build.card, tmp_path / "hub", num_shards=3)
    assert written == [f"data/train-{i:05d}-of-00003.parquet" for i in range(3)] + ["README.md"]
    sizes = [pq.read_metadata(tmp_path / "hub" / name).num_rows for name in written[:3]]
    assert sizes == [4, 4, 4]
    loaded = datasets.load_dataset(str(tmp_path / "hub"), split="train")
    assert loaded["id"] == build.dataset["id"] and loaded["conversations"] == build.dataset["conversations"]
    card = datasets.load_dataset_builder(str(tmp_path / "hub")).info
    assert card.splits["train"].num_examples == 12
