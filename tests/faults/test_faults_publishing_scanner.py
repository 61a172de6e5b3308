"""Issue 20, item 7: the upload scanner itself (`modeling_croc.upload_scan.scan_upload_set`), which every publish runs
before anything goes up. Planted tokens, local paths, user names and credentials are found in text, JSON, binary,
safetensors and Parquet files, at their exact offsets (located here by a plain byte search of what was planted);
look-alikes do not count (URLs, bare words, row text, a common word held by a credential variable)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from publish_cases import TOKEN
from safetensors.torch import save_file

from modeling_croc import upload_scan
from modeling_croc.upload_scan import Finding, scan_upload_set

USER = "alice"
# Look-alikes that must not count: a URL path, a bare word, a path segment that is not a root, a root alone.
HARMLESS = ("see https://github.com/alice/croc and https://example.org/tmp/x; alice wrote a/tmp/b, and /tmp/ "
            "alone; root and hf_short")


def _planted_text(token: str, path: str) -> str:
    return f"token {token} path {path}/run.json user /data/{USER}/x mail {USER}@lab.example.org end"


def _expected(name: str, data: bytes, token: str, path: str, where: str = "byte") -> list[Finding]:
    """The findings in `data`, located by plain `bytes.find` of what was planted."""
    return [Finding(name, f"{where} {data.find(token.encode())}", upload_scan.TOKEN, f"hf_...({len(token)} characters)"),
            Finding(name, f"{where} {data.find((path + '/run.json').encode())}", upload_scan.LOCAL_PATH,
                    path + "/run.json"),
            Finding(name, f"{where} {data.find(f'/{USER}/x'.encode())}", upload_scan.USER_NAME, f"/data/{USER}/x"),
            Finding(name, f"{where} {data.find(f'{USER}@'.encode())}", upload_scan.USER_NAME,
                    f"{USER}@lab.example.org")]


def test_scanner_finds_planted_values_in_text_and_json_and_nothing_in_look_alikes(tmp_path):
    path = str(tmp_path / "secret-run")
    (tmp_path / "notes.md").write_text(f"{HARMLESS}\n{_planted_text(TOKEN, path)}\n")
    (tmp_path / "config.json").write_text(json.dumps({"harmless": HARMLESS, "planted": _planted_text(TOKEN, path)}))
    (tmp_path / "clean.json").write_text(json.dumps({"harmless": HARMLESS}))
    found = scan_upload_set(tmp_path, ["notes.md", "config.json", "clean.json"], user_name=USER)
    expected = [finding for name in ("notes.md", "config.json")
                for finding in _expected(name, (tmp_path / name).read_bytes(), TOKEN, path)]
    assert found == expected


def test_scanner_finds_windows_user_folders_raw_and_json_escaped(tmp_path):
    raw = "C:\\Users\\" + USER + "\\run"
    (tmp_path / "notes.txt").write_text(f"saved in {raw}; not in XC:\\Users\\x or C:\\Data\\x")
    (tmp_path / "config.json").write_text(json.dumps({"path": raw}))
    escaped = raw.replace("\\", "\\\\")  # as JSON writes it
    component = ("\\" + USER).encode()
    text, config = (tmp_path / "notes.txt").read_bytes(), (tmp_path / "config.json").read_bytes()
    assert scan_upload_set(tmp_path, ["notes.txt", "config.json"], user_name=USER) == [
        Finding("notes.txt", "byte 9", upload_scan.LOCAL_PATH, raw),
        Finding("notes.txt", f"byte {text.find(component)}", upload_scan.USER_NAME, raw),
        Finding("config.json", "byte 10", upload_scan.LOCAL_PATH, escaped),
        Finding("config.json", f"byte {config.find(component)}", upload_scan.USER_NAME, escaped),
    ]


def test_scanner_reads_binary_files_in_overlapping_chunks(tmp_path, monkeypatch):
    """A token cut by a chunk border is found once, at its offset; the known token needs no `hf_` shape."""
    monkeypatch.setattr(upload_scan, "CHUNK_BYTES", 64 * 1024)
    data = bytearray(np.random.default_rng(0).integers(0, 256, 5 * 64 * 1024, dtype=np.uint8).tobytes())
    known = "api_" + "z9" * 10  # a secret of another shape, known to the process
    planted = {64 * 1024 - 7: f" {TOKEN} ".encode(), 3 * 64 * 1024 - 3: f" {known} ".encode(),
               4 * 64 * 1024 + 100: f" /home/{USER}/w ".encode()}
    for offset, text in planted.items():
        data[offset:offset + len(text)] = text
    (tmp_path / "blob.bin").write_bytes(bytes(data))
    found = scan_upload_set(tmp_path, ["blob.bin"], tokens=[known], user_name=USER)
    assert found == [
        Finding("blob.bin", f"byte {64 * 1024 - 6}", upload_scan.TOKEN, f"hf_...({len(TOKEN)} characters)"),
        Finding("blob.bin", f"byte {3 * 64 * 1024 - 2}", upload_scan.TOKEN, f"({len(known)}-character secret)"),
        Finding("blob.bin", f"byte {4 * 64 * 1024 + 101}", upload_scan.LOCAL_PATH, f"/home/{USER}/w"),
        Finding("blob.bin", f"byte {4 * 64 * 1024 + 106}", upload_scan.USER_NAME, f"/home/{USER}/w"),
    ]


def test_scanner_reads_the_safetensors_header(tmp_path):
    path = str(tmp_path / "secret-run")
    save_file({"weight": torch.arange(64, dtype=torch.float32)}, str(tmp_path / "model.safetensors"),
              metadata={"note": _planted_text(TOKEN, path), "harmless": HARMLESS})
    data = (tmp_path / "model.safetensors").read_bytes()
    assert scan_upload_set(tmp_path, ["model.safetensors"], user_name=USER) == \
        _expected("model.safetensors", data, TOKEN, path, where="header byte")


def test_scanner_reads_parquet_metadata_and_decoded_row_values(tmp_path):
    """Row values are upstream text: only this process's tokens and this machine's folders count there (a shell
    answer naming /home/alice/ or an e-mail is data); the file's key-value metadata gets every rule."""
    folder = tmp_path / "data"
    rows = [{"id": "a", "conversations": [{"from": "human", "value": "Where?"},
                                          {"from": "gpt", "value": f"cd /home/{USER}/src; mail {USER}@x.org"}]},
            {"id": "b", "conversations": [{"from": "gpt", "value": f"use {TOKEN} from {folder}/images"}]}]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"note": f"made in {folder}"})
    pq.write_table(table, tmp_path / "train.parquet", compression="snappy")
    found = scan_upload_set(tmp_path, ["train.parquet"], tokens=[TOKEN], folders=[folder], user_name=USER,
                           dataset_rows=True)
    assert found == [
        Finding("train.parquet", "metadata note", upload_scan.LOCAL_PATH, str(folder)),
        Finding("train.parquet", "column conversations.value", upload_scan.TOKEN, f"hf_...({len(TOKEN)} characters)"),
        Finding("train.parquet", "column conversations.value", upload_scan.LOCAL_PATH, f"{folder}/images"),
    ]


def test_scanner_finds_this_processes_credentials_and_openai_shaped_keys(tmp_path, monkeypatch):
    """A W&B key is 40 hex digits, no shape to know it by: the value this process holds in WANDB_API_KEY is looked
    for as it is. An OpenAI key passed bare to an evaluation judge is known by its `sk-` shape (the hostile tester
    found both in a launch script kept in output_dir, which a push uploads: 0 findings)."""
    wandb_key, openai_key = "3f" * 20, "sk-proj-" + "Zq9" * 16
    monkeypatch.setenv("WANDB_API_KEY", wandb_key)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a credential: its name does not end in one
    script = f"wandb login {wandb_key}\npython -m lmms_eval --tasks mmvet --openai_api_key {openai_key}\n"
    (tmp_path / "launch.sh").write_text(script)
    (tmp_path / "clean.md").write_text("TOKENIZERS_PARALLELISM=false; see https://example.org/sk-learn and risk-free\n")
    assert scan_upload_set(tmp_path, ["launch.sh", "clean.md"], user_name=USER) == [
        Finding("launch.sh", f"byte {script.find(wandb_key)}", upload_scan.SECRET, "(40-character secret)"),
        Finding("launch.sh", f"byte {script.find(openai_key)}", upload_scan.SECRET,
                f"sk-p...({len(openai_key)} characters)"),
    ]


def test_a_credential_variable_holding_a_common_word_does_not_refuse_a_model_folder(tmp_path, monkeypatch,
                                                                                     sp_tokenizer):
    """A short credential value is as likely a word of the vocabulary: with a local database's POSTGRES_PASSWORD=
    password set, every model folder was refused ("a private key or credential in tokenizer.json"), and no edit of
    the file could clear it. A key-length value is still looked for."""
    sp_tokenizer.save_pretrained(tmp_path)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert b"password" in (tmp_path / "tokenizer.json").read_bytes()  # the word is in the vocabulary
    monkeypatch.setenv("POSTGRES_PASSWORD", "password")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlf" + "7q" * 10)
    assert scan_upload_set(tmp_path, files, user_name=USER) == []
    (tmp_path / "launch.sh").write_text(f"python x.py --tracking-token {os.environ['MLFLOW_TRACKING_TOKEN']}\n")
    assert [finding.file for finding in scan_upload_set(tmp_path, ["launch.sh"], user_name=USER)] == ["launch.sh"]
