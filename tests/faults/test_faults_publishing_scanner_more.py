"""The upload scanner (`modeling_croc.upload_scan`) against what a hostile tester kept next to a run and saw go up:
a PGP key, tracker tokens and passwords of any shape, Stripe, Slack and Google keys, a password in a URL, a
bearer header, a YAML key with a comment after it, an Azure connection string, keys named with a plain `_KEY`,
this process's token written by PowerShell (UTF-16), a removable disk's path, slashes escaped in JSON, a Parquet map
column, and a Parquet file cut short (a traceback ended the finished run). Each is found at its place (located here by
a plain byte search); look-alikes in model and tokenizer files do not count."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from publish_cases import TOKEN

from modeling_croc import upload_scan
from modeling_croc.upload_scan import Finding, UploadLeakError, check_upload_set, scan_upload_set

USER = "alice"
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"
AZURE_KEY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123=="
# Credentials as users write them, each with the name the finding gives (never the value).
PLANTED = {
    "signing-key.asc": ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0AAAABCADfake\n-----END PGP PRIVATE KEY "
                        "BLOCK-----\n", "-----BEGIN PGP PRIVATE KEY BLOCK-----", "-----BEGIN"),
    "neptune.sh": ('export NEPTUNE_API_TOKEN="eyJhcGlfYWRkcmVzcyI6Imh0dHBzOi8vYXBwIn0="\n', "NEPTUNE_API_TOKEN=...",
                   "NEPTUNE"),
    "slack.env": ("SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp\n", "SLACK_BOT_TOKEN=...",
                  "SLACK"),
    "db.sh": ("export DB_PASSWORD='S3cr3t!Pass#2024xyz'\n", "DB_PASSWORD=...", "DB_"),
    "smtp.env": ('SMTP_PASSWORD="correct horse battery staple"\n', "SMTP_PASSWORD=...", "SMTP"),
    "trackers.yaml": (f"project: croc\napi_key: {WANDB_KEY}  # wandb key\n", "api_key=...", "api_key"),
    "azure.sh": ("export AZURE_STORAGE_CONNECTION_STRING=\"DefaultEndpointsProtocol=https;AccountName=acct;"
                 f"AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net\"\n", "AccountKey=...", "AccountKey"),
    "kubeconfig": ("users:\n- name: me\n  user:\n    token: eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.abcdefgh123\n",
                   "token=...", "    token"),  # a YAML line is found from its start
    "docker.json": (json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpzM2NyM3RwYXNzd29yZA=="}}}),
                    "auth=...", '"auth"'),
    "judge.py": (f'import openai\nopenai.api_key = "{WANDB_KEY}"\n', "api_key=...", "api_key"),
    "track.py": (f'import wandb\nwandb.login(key="{WANDB_KEY}")\n', "login(key=...", "login("),
    "refund.sh": ("curl https://api.stripe.com/v1/refunds -u sk_live_4eC39HqLyjWDarjtT1zdp7dc:\n",
                  "sk_l...(32 characters)", "sk_live"),
    "maps.js": ('const key = "AIzaSyD-1234567890abcdefghijklmnopqrstu";\n', "AIza...(39 characters)", "AIza"),
    ".git-credentials": ("https://ci:glpat-AbCdEf123456@gitlab.com\n", "https://ci:...@", "https"),
    "db.env": ("DATABASE_URL=postgres://croc:S3cretPassw0rd@db.internal:5432/runs\n", "postgres://croc:...@",
               "postgres"),
    "query.sh": ('curl -H "Authorization: Bearer abcdef0123456789abcdef0123" https://api.example.com\n',
                 "Authorization=...", "Authorization"),
}
# Look-alikes in what a model folder holds: special tokens, constants naming tokens, code passing names along.
CLEAN = {
    "tokenizer_config.json": json.dumps({"pad_token": "<|endoftext|>", "image_token": "<|vision_start|>",
                                         "unk_token": "unknown_token_id", "mask_token": "[MASK_TOKEN_LONGER]"}),
    "constants.py": ('TOKEN = "a Hugging Face token"\nIMAGE_TOKEN = DEFAULT_IMAGE_PATCH_TOKEN\n'
                     'VISION_START_TOKEN = "]<]start of image[>["\n    password = self.raw_password_value\n'
                     '    hub_token = os.environ.get("HF_TOKEN")\nhub_token: null\n'
                     '            entity_mask2_token=entity_mask2_token,\n'
                     'client = Client(api_key="your-replicate-api-key")\nexport WANDB_API_KEY=${WANDB_API_KEY}\n'),
    "README.md": ("Connect with postgres://user:password@localhost/db or postgres://user:${DB_PASSWORD}@db, send\n"
                  "`Authorization: Bearer $TOKEN` or `Authorization: Bearer <token>`; see http://host:8080/path@v2 and\n"
                  "ssh://git@github.com:22/org/repo, keys such as sk_live_... and xoxb-...\n"),
}


def test_scanner_finds_credentials_of_every_shape_users_keep_and_not_their_look_alikes(tmp_path):
    for name, (text, _, _) in {**PLANTED, **{n: (t, "", "") for n, t in CLEAN.items()}}.items():
        (tmp_path / name).write_text(text)
    found = scan_upload_set(tmp_path, [*PLANTED, *CLEAN], user_name=USER)
    assert found == [Finding(name, f"byte {text.find(start)}", upload_scan.SECRET, shown)
                     for name, (text, shown, start) in PLANTED.items()]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_scanner_finds_this_processes_token_and_a_token_shape_in_utf16(tmp_path, monkeypatch, encoding):
    """PowerShell's `>` writes UTF-16 (with a byte-order mark, or without where told): every other byte is zero, so
    the token's UTF-8 bytes were nowhere in the file."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    other = "hf_" + "Zk4" * 11  # a token of someone else: known by its shape only
    data = f"HF_TOKEN={TOKEN}\r\nold: {other}\r\n".encode(encoding)
    (tmp_path / "hf_login.txt").write_bytes(data)
    # Found at its first letter, in either byte order (in UTF-16-BE the letter follows its zero byte).
    assert scan_upload_set(tmp_path, ["hf_login.txt"], user_name=USER) == [
        Finding("hf_login.txt", f"byte {data.find(value.encode('utf-16-le'))}", upload_scan.TOKEN,
                f"hf_...({len(value)} characters)") for value in (TOKEN, other)]


def test_scanner_finds_mounted_disk_paths_and_json_escaped_slashes(tmp_path):
    script = "python -m trainer.train --data.path=/Volumes/T7/llava.json --model.name_or_path=/media/ssd/vicuna\n"
    (tmp_path / "launch.sh").write_text(script)
    escaped = '{"image_root": "\\/home\\/alice\\/data", "url": "https:\\/\\/github.com\\/alice\\/croc"}'
    (tmp_path / "config.json").write_text(escaped)
    root, user = "\\/home", "\\/alice"
    assert scan_upload_set(tmp_path, ["launch.sh", "config.json"], user_name=USER) == [
        Finding("launch.sh", f"byte {script.find('/Volumes/')}", upload_scan.LOCAL_PATH, "/Volumes/T7/llava.json"),
        Finding("launch.sh", f"byte {script.find('/media/')}", upload_scan.LOCAL_PATH, "/media/ssd/vicuna"),
        Finding("config.json", f"byte {escaped.find(root)}", upload_scan.LOCAL_PATH, "\\/home\\/alice\\/data"),
        Finding("config.json", f"byte {escaped.find(user)}", upload_scan.USER_NAME, "\\/home\\/alice\\/data"),
    ]


def test_scanner_reads_parquet_map_values_and_nested_field_names(tmp_path):
    """A map column's keys and values are row values like any string; a nested field's name is a column name."""
    folder = tmp_path / "private"
    meta = pa.array([[("token", TOKEN), ("path", f"{folder}/x.json")]], type=pa.map_(pa.string(), pa.string()))
    pq.write_table(pa.table({"id": ["a"], "meta": meta}), tmp_path / "preds.parquet")
    nested = pa.struct([(f"from {folder}", pa.int32())])
    pq.write_table(pa.table({"s": pa.array([[{f"from {folder}": 1}]], type=pa.list_(nested))}),
                   tmp_path / "nested.parquet")
    found = scan_upload_set(tmp_path, ["preds.parquet", "nested.parquet"], tokens=[TOKEN], folders=[folder],
                            user_name=USER)
    assert found == [
        Finding("preds.parquet", "column meta.value", upload_scan.TOKEN, f"hf_...({len(TOKEN)} characters)"),
        Finding("preds.parquet", "column meta.value", upload_scan.LOCAL_PATH, f"{folder}/x.json"),
        Finding("nested.parquet", "column names", upload_scan.LOCAL_PATH, str(folder)),
    ]


def test_a_parquet_file_that_cannot_be_read_is_refused_in_one_line(tmp_path):
    """A Parquet file cut short (or not Parquet at all) cannot be vouched for: refused like a leak, through the
    error both publishers report in one line (it was a pyarrow traceback at the end of a finished run)."""
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(2000)]}), tmp_path / "whole.parquet")
    (tmp_path / "eval_predictions.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:2000])
    (tmp_path / "notes.md").write_text("clean\n")
    files = ["notes.md", "eval_predictions.parquet"]
    [finding] = scan_upload_set(tmp_path, files, user_name=USER)
    assert (finding.file, finding.where, finding.kind) == ("eval_predictions.parquet", "not scanned",
                                                          upload_scan.UNREADABLE)
    with pytest.raises(UploadLeakError) as error:
        check_upload_set(tmp_path, files, user_name=USER)
    message = str(error.value)
    assert "\n" not in message and "eval_predictions.parquet" in message and upload_scan.UNREADABLE in message
    assert error.value.findings == [finding]


# Credentials whose names end in a plain `_KEY` (a Kaggle key, an Azure OpenAI key, a project-scoped OpenAI key), as
# a launch script exports them: the names stopped at API_KEY, ACCESS_KEY, SECRET_KEY and ACCOUNT_KEY, so the scan
# passed with the three values in the environment and in the script.
PLAIN_KEYS = {"KAGGLE_KEY": "4f9c2b7e81d03a6c5e9f1b2d7a8c3e60", "AZURE_OPENAI_KEY": "9d1e3b5a7c2f4e6a8b0c1d3e5f7a9b2c",
              "OPENAI_KEY": "proj-Zq8Kf2LmN4pR7sT1vW3xY5zA9bC0dE"}
# Names ending in `_KEY` that are lookup keys, with the values model, tokenizer and dataset files give them.
LOOKUP_KEYS = ('CACHE_KEY=images\nSORT_KEY=id\nMODEL_KEY=Qwen2VLForConditionalGeneration\n'
               '{"image_key": "pixel_values", "cache_key": "llava-v1.5-7b-336px", "sort_key": "created_at_2024_01_01",'
               ' "query_key_value": 12, "shard_key": "data/train-00000-of-00001.parquet"}\n'
               'cache_key = f"{name}-{step}"\nexport KAGGLE_KEY=${KAGGLE_KEY}\n')


def test_credentials_named_with_a_plain_key_ending_are_found_in_files_and_from_the_environment(tmp_path,
                                                                                                monkeypatch):
    script = "".join(f"export {name}={value}\n" for name, value in PLAIN_KEYS.items())
    (tmp_path / "launch.sh").write_text(script)
    (tmp_path / "lookups.txt").write_text(LOOKUP_KEYS)
    assert scan_upload_set(tmp_path, ["launch.sh", "lookups.txt"], user_name=USER) == [
        Finding("launch.sh", f"byte {script.find(f' {name}=') + 1}", upload_scan.SECRET, f"{name}=...")
        for name in PLAIN_KEYS]

    # The values of this process's own variables, wherever they stand (kaggle.json names the key `key`).
    for name, value in PLAIN_KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CACHE_KEY", "images")  # shorter than any key: a word of every vocabulary
    kaggle = json.dumps({"username": "me", "key": PLAIN_KEYS["KAGGLE_KEY"]}) + f"\n{PLAIN_KEYS['OPENAI_KEY']}\n"
    (tmp_path / "kaggle.json").write_text(kaggle)
    assert scan_upload_set(tmp_path, ["kaggle.json", "lookups.txt"], user_name=USER) == [
        Finding("kaggle.json", f"byte {kaggle.find(value)}", upload_scan.SECRET, f"({len(value)}-character secret)")
        for value in (PLAIN_KEYS["KAGGLE_KEY"], PLAIN_KEYS["OPENAI_KEY"])]
