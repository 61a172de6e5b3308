"""The upload scanner (`modeling_croc.upload_scan`) against the holes a hostile tester found: a Parquet file of a model
push read with the relaxed dataset-row rules (an eval's predictions holding a key went up), a named pipe that hung the
scan, file names never read (lmms-eval's `__home__alice__...` folders), credential shapes missed (a subscripted
`os.environ[...]`, `setdefault`, CLI flags, headers, camelCase, kaggle.json, .npmrc, Basic auth, signed URLs, bare
GitLab and PyPI tokens) and a generic home (/home/ubuntu) refusing upstream dataset rows. Look-alikes stay clean."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modeling_croc import upload_scan
from modeling_croc.upload_scan import Finding, scan_upload_set

USER = "alice"
KEY = "0123456789abcdef0123456789abcdef01234567"  # a W&B key: 40 hex digits, no shape of its own
LEAKY_ROWS = ["hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3h", "AKIAIOSFODNN7EXAMPLE",
              "-----BEGIN RSA PRIVATE KEY-----", "/home/bob/runs/x.py"]


def _parquet(path: Path, values: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"pred": values}), path)


def test_parquet_rows_of_a_model_push_get_every_rule_and_a_datasets_rows_the_row_rules(tmp_path):
    """A user's eval/preds.parquet is their own output: the rows that a .csv would be refused for are refused (they
    went up, scanned only for this process's tokens). A dataset's shards (`dataset_rows=True`) keep the row rules."""
    _parquet(tmp_path / "eval" / "preds.parquet", LEAKY_ROWS)
    kinds = [finding.kind for finding in scan_upload_set(tmp_path, ["eval/preds.parquet"], user_name=USER)]
    assert kinds == [upload_scan.TOKEN, upload_scan.SECRET, upload_scan.SECRET, upload_scan.LOCAL_PATH]
    assert scan_upload_set(tmp_path, ["eval/preds.parquet"], user_name=USER, dataset_rows=True) == []


def test_a_named_pipe_is_reported_without_being_opened(tmp_path):
    """Opening a FIFO blocks until a writer comes: the scan (and the push) hung for ever. It is one finding now."""
    os.mkfifo(tmp_path / "progress.pipe")
    (tmp_path / "config.json").write_text("{}\n")
    findings = scan_upload_set(tmp_path, ["config.json", "progress.pipe"], user_name=USER)
    assert [(finding.file, finding.where, finding.kind) for finding in findings] == [
        ("progress.pipe", "not scanned", upload_scan.UNREADABLE)]
    assert findings[0].text.startswith("not a regular file")


@pytest.mark.parametrize(("name", "kind"), [
    ("eval/__home__alice__runs__croc-stage2/results.json", upload_scan.LOCAL_PATH),  # lmms-eval's folder name
    ("eval/home/alice/runs/results.json", upload_scan.USER_NAME),
    ("logs/hf_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3h.txt", upload_scan.TOKEN),
])
def test_file_names_are_scanned(tmp_path, name, kind):
    (tmp_path / name).parent.mkdir(parents=True)
    (tmp_path / name).write_text('{"ok": 1}\n')
    assert (name, "file name", kind) in {(f.file, f.where, f.kind) for f in scan_upload_set(tmp_path, [name],
                                                                                             user_name=USER)}


def test_ordinary_file_names_are_not_findings(tmp_path):
    # lmms-eval's folder for a Hub model whose namespace is the user's name: `org__name` is no local path.
    names = ["root/notes.txt", "media/logo.png", "tmp/x.json", "__init__.py", "home/index.md",
             "checkpoint__step100/config.json", f"results/{USER}__croc-7b/20261207_results.json",
             f"eval/mme__{USER}__v1.json"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    assert scan_upload_set(tmp_path, names, user_name=USER) == []


PLANTED = {
    "environ_dq.py": f'os.environ["WANDB_API_KEY"] = "{KEY}"\n',
    "environ_sq.py": f"os.environ['WANDB_API_KEY'] = '{KEY}'\n",
    "notebook.ipynb": '{"cells":[{"source":["os.environ[\\"WANDB_API_KEY\\"] = \\"' + KEY + '\\"\\n"]}]}',
    "setdefault.py": f'os.environ.setdefault("X_API_KEY", "{KEY}")\n',
    "putenv.py": f'os.putenv("WANDB_API_KEY", "{KEY}")\n',
    "flag.sh": f"python train.py --wandb_api_key {KEY}\n",
    "flag_eq.sh": f"python train.py --api-key={KEY}\n",
    "header.sh": f"curl -H 'x-api-key: {KEY}' https://api.example.com\n",
    "camel.json": json.dumps({"apiKey": KEY}),
    "camel.js": f'const accessToken = "{KEY}";\n',
    "kaggle.json": json.dumps({"username": "alice", "key": "3f2a9c1e7b5d4a6f8e0c2b4d6f8a0c1e"}),
    "npmrc": "//registry.npmjs.org/:_authToken=npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8\n",
    "basic.sh": "curl -H 'Authorization: Basic YWxpY2U6czNjcjN0UGFzcw==' https://x.example.com\n",
    "sas.txt": "https://a.blob.core.windows.net/c/x.jpg?sv=2022-11-02&sp=r&sig=Zk3s9Lm2Qp8Rt5VxAbCdEf%2BgHiJk%3D\n",
    "gcs.txt": f"https://storage.googleapis.com/b/x.jpg?X-Goog-Credential=svc&X-Goog-Signature={KEY}\n",
    "s3.txt": f"https://b.s3.amazonaws.com/x?X-Amz-Date=20261207&X-Amz-Signature={KEY}\n",
    "jupyter.txt": f"http://127.0.0.1:8888/lab?token={KEY}\n",
    "hub.txt": f"https://huggingface.co/api/x?access_token={KEY}\n",
    "gitlab.sh": "git clone https://gitlab.com/x.git # glpat-AbCdEf1234567890XyZ_\n",
    "pypirc": "password = pypi-AgEIcHlwaS5vcmcCJGFiY2RlZjAxLTIzNDUtNjc4OS1hYmNkLWVmMDEyMzQ1Njc4OQ\n",
    "k8s.yaml": f"env:\n  - name: WANDB_API_KEY\n    value: {KEY}\n",
    "netrc": f"default login user password {KEY}\n",
    "wandb.sh": f"wandb login {KEY}\n",
}
CLEAN = {
    "env.py": 'apiKey = os.environ["X_API_KEY"]\ntoken=None\nos.environ.setdefault("WANDB_API_KEY", "")\n',
    "config.yaml": "key: image\napi_key: <your key>\nsort_key: pixel_values\n",
    "launch.sh": ("python train.py --max_new_tokens 1024 --hub_token $HF_TOKEN --token /run/secrets/hf_token_file\n"
                  "python eval.py --sort-key id --api-key your-api-key-here --cache-key llava-v1.5-7b-336px\n"),
    "urls.md": "https://example.com/?token=abc&key=value&sig=false&page=2&code=1234\n",
    "app.js": 'const imageToken = "<image>";\nconst nextToken = null;\n',
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_credential_shapes_are_found(tmp_path, name):
    (tmp_path / name).write_text(PLANTED[name])
    findings = scan_upload_set(tmp_path, [name], user_name=USER)
    assert [finding.kind for finding in findings] == [upload_scan.SECRET]
    assert KEY not in str(findings[0])  # the message names the credential, not its value


def test_credential_look_alikes_are_not_refused(tmp_path):
    for name, text in CLEAN.items():
        (tmp_path / name).write_text(text)
    assert scan_upload_set(tmp_path, sorted(CLEAN), user_name=USER) == []


def test_a_generic_home_is_not_searched_in_dataset_rows_but_is_in_files(tmp_path, monkeypatch):
    """On a cloud image (/home/ubuntu) an upstream row quoting /home/ubuntu/app/main.py refused the dataset: that
    home names no one. The machine's own files keep it."""
    monkeypatch.setenv("HOME", "/home/ubuntu")
    _parquet(tmp_path / "data" / "train.parquet", ["cd /home/ubuntu/app && python main.py"])
    (tmp_path / "notes.txt").write_text("see /home/ubuntu/app/main.py\n")
    assert scan_upload_set(tmp_path, ["data/train.parquet"], user_name="ubuntu", dataset_rows=True) == []
    assert [f.kind for f in scan_upload_set(tmp_path, ["notes.txt"], user_name="ubuntu")][:1] == [
        upload_scan.LOCAL_PATH]
    monkeypatch.setenv("HOME", "/home/bob")
    _parquet(tmp_path / "data" / "train.parquet", ["cd /home/bob/app && python main.py"])
    assert scan_upload_set(tmp_path, ["data/train.parquet"], user_name="bob", dataset_rows=True) == [
        Finding("data/train.parquet", "column pred", upload_scan.LOCAL_PATH, "/home/bob/app")]


WIDE_TEXT = ("log: C:\\Users\\bob\\runs\\x and /home/bob/runs/y\n-----BEGIN RSA PRIVATE KEY-----\n"
             f"AKIAIOSFODNN7EXAMPLE\nexport WANDB_API_KEY={KEY}\n")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_paths_keys_and_assignments_are_found_in_utf16_and_utf32_text(tmp_path, encoding):
    """PowerShell's `>` writes UTF-16, a numpy string array UTF-32: only the hf_ shape and known values were found
    there. Each is found once, at its first byte."""
    data = WIDE_TEXT.encode(encoding)
    (tmp_path / "log.txt").write_bytes(data)
    findings = scan_upload_set(tmp_path, ["log.txt"], user_name=USER)
    width = 2 if "16" in encoding else 4
    bom = len(data) - len(WIDE_TEXT) * width
    big = width - 1 if encoding.endswith("be") else 0  # a big-endian character ends its bytes
    expected = [(f"byte {bom + big + WIDE_TEXT.find(text) * width}", kind) for text, kind in [
        ("C:\\Users", upload_scan.LOCAL_PATH), ("/home/bob", upload_scan.LOCAL_PATH),
        ("-----BEGIN", upload_scan.SECRET), ("AKIA", upload_scan.SECRET), ("WANDB_API_KEY", upload_scan.SECRET)]]
    assert [(finding.where, finding.kind) for finding in findings] == expected


def test_a_numpy_string_array_is_read_as_utf32(tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "paths.npy", np.array(["/home/bob/data/x.jpg", "AKIAIOSFODNN7EXAMPLE"]))
    kinds = {finding.kind for finding in scan_upload_set(tmp_path, ["paths.npy"], user_name=USER)}
    assert kinds == {upload_scan.LOCAL_PATH, upload_scan.SECRET}


def test_the_context_patterns_tried_at_their_anchors_find_what_every_byte_finds():
    """`context_matches` tries each credential-by-context pattern only where its anchor lies (the scan of a file was
    1.7 times slower with every pattern tried at every byte): the matches are those of `finditer` over the same
    range, in the same order, on flags, headers, camelCase names, npm logins, W&B and Kaggle keys and URL
    parameters mixed with case flips, stray bytes and ranges that start or end inside them."""
    import random

    from modeling_croc.upload_scan_patterns import _CONTEXT_PATTERNS, context_matches

    rng = random.Random(7)
    values = [b"abcdef0123456789abcdef0123456789", b"0123456789abcdef0123456789abcdef01234567",
              b"A1b2C3d4E5f6G7h8I9j0kk", b"\"Zx9-Yy8_Ww7.Vv6+Uu5/Tt4\"", b"'q1w2e3r4t5y6u7i8o9p0'",
              b"dXNlcjpwYXNzd29yZA==", b"$KEY", b"<your key>", b"short", b"/run/secrets/hf", b"%2Fab12cd34ef56gh78"]
    names = [b"--api-key", b"--hub_token", b"--sort-key", b"--KEY", b"---token", b"x--token", b"x-api-key",
             b"X-Auth-Token", b"\"X-Goog-Api-Key\"", b"apiKey", b"\"accessToken\"", b"fooBarSecret", b"my2ApiKey",
             b"a_bToken", b"_authToken", b"//reg/:_authToken", b"wandb login", b"wandb  login --relogin",
             b"AUTHORIZATION", b"\"authorization\"", b"?sig", b"&token", b"?X-Amz-Signature", b"&Code", b"x?access_token"]
    separators = [b" ", b"=", b": ", b":", b"\": \"", b" = ", b"\t", b"\"=", b"': '", b": Basic ", b"=Token "]
    junk = [b"", b" ", b"a", b"_", b"-", b"\n", b"\xff", b"0", b"&", b"?", b"--",
            b"\"username\": \"bob\", \"key\": \"0123456789abcdef0123456789abcdef\""]
    matched = 0
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(1, 5)):
            parts += [rng.choice(junk), rng.choice(names), rng.choice(separators), rng.choice(values), rng.choice(junk)]
            if rng.random() < 0.3:
                parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))))
        data = b"".join(parts)
        if rng.random() < 0.3:  # case flips: the `(?i)` patterns and the case-sensitive anchors
            data = bytes(byte ^ 0x20 if rng.random() < 0.05 and chr(byte).isalpha() else byte for byte in data)
        start, end = (0, len(data)) if rng.random() < 0.4 else sorted(rng.randint(0, len(data)) for _ in range(2))
        every_byte = [(match.start(), match.end()) for pattern in _CONTEXT_PATTERNS
                      for match in pattern.finditer(data, start) if match.start() < end]
        assert [(match.start(), match.end()) for match in context_matches(data, start, end)] == every_byte, data
        matched += len(every_byte)
    assert matched > 900  # the cases reach the patterns, not only their misses
