"""The pattern tables of the upload scan (`upload_scan.py`, whose docstring says what it looks for): the shapes
of tokens and credentials, the roots of local paths, the bytes around a path. Imports nothing of the scanner."""

from __future__ import annotations

import re

# Roots under which every path is local to one machine (or one user), whatever follows.
LOCAL_ROOTS = ("home", "Users", "root", "tmp", "mnt", "scratch", "var/folders", "private/var", "private/tmp", "gpfs",
               "lustre", "fsx", "Volumes", "media")
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
TOKEN_ENVIRONMENT = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# The same shape in UTF-16 (what PowerShell's `>` writes), little- and big-endian: every other byte is zero.
_UTF16_TOKEN_PATTERNS = (re.compile(rb"h\x00f\x00_\x00(?:[A-Za-z0-9]\x00){30,}"),
                         re.compile(rb"\x00h\x00f\x00_(?:\x00[A-Za-z0-9]){30,}"))
# Other secrets a user keeps next to a run (an SSH, PGP or TLS key, a launch script exporting a cloud or tracker key):
# the scanner knows their shape, not their value. Not looked for in row values (a dataset of code may quote them).
# The names are the endings of `_SECRET_ENVIRONMENT` that always name a credential (NEPTUNE_API_TOKEN, SLACK_BOT_TOKEN,
# DB_PASSWORD, CLIENT_SECRET); any other `_KEY` is `_OTHER_KEY_ASSIGNMENT`'s.
_KEY_NAMES = rb"(?:API_KEY|ACCESS_KEY|SECRET_KEY|ACCOUNT_KEY|TOKEN|SECRET)"
_PASSWORD_NAMES = rb"(?:PASSWORD|PASSWD)"
# What is never a credential's value, though a credential's name holds it: a special token or a placeholder
# (`"image_token": "<|image_pad|>"`, `[MASK]`, `]<]start of image[>[`, `<your key>`), a shell or template reference
# (`$WANDB_API_KEY`, `${{ secrets.HF_TOKEN }}`, `%(password)s`).
_NOT_A_VALUE = rb"(?![<\[\]{$%])"
# Quoted: any characters but the quote on one line (a password holds punctuation, even spaces). A key's value is not
# words alone (`TOKEN = "a Hugging Face token"`, `"unk_token": "unknown_token_id"`, `api_key="your-api-key"`): keys
# have digits or symbols; a passphrase may be words.
_PASSWORD_QUOTED = rb"(?:\"" + _NOT_A_VALUE + rb"[^\"\r\n]{16,512}\"|'" + _NOT_A_VALUE + rb"[^'\r\n]{16,512}')"
_KEY_QUOTED = (rb"(?:\"" + _NOT_A_VALUE + rb"(?![A-Za-z _.\-]+\")[^\"\r\n]{16,512}\"|'" + _NOT_A_VALUE
               + rb"(?![A-Za-z _.\-]+')[^'\r\n]{16,512}')")
# Bare: up to the next space, quote, comma or semicolon (a trailing `# comment` is not part of it). Not code or a
# word: an attribute of a lower-case object (`password = self.raw_password`; a JWT's first part has capitals), a name
# without a digit (`IMAGE_TOKEN = DEFAULT_IMAGE_PATCH_TOKEN`) or a snake_case one (`mask2_token=mask2_token,`).
_BARE_VALUE = (_NOT_A_VALUE + rb"(?![a-z_][a-z0-9_]*\.[A-Za-z_])(?![A-Za-z_.\-]+(?![^\s,;]))"
               rb"(?![a-z][a-z0-9]*_[a-z0-9_]*(?![^\s,;]))"
               rb"[^\s\"'`,;()\[\]{}<>]{16,512}(?![^\s,;])")

# Any other name ending in `_KEY` (KAGGLE_KEY, AZURE_OPENAI_KEY, "openai_key": ...) names a credential as often as a
# lookup key (CACHE_KEY=images, SORT_KEY=id, "image_key": "pixel_values", "cache_key": "llava-v1.5-7b-336px"): its
# value counts only when shaped like a key, a run of 16 or more letters and digits with at least two of each (hex,
# base62, the body of base64 or of `proj-...`), never a dotted name or path.
_KEY_RUN = rb"(?=[A-Za-z0-9]{16})(?=(?:[A-Za-z]*[0-9]){2})(?=(?:[0-9]*[A-Za-z]){2})[A-Za-z0-9]{16,512}"
_KEY_LIKE = (rb"[A-Za-z0-9+/=_\-]{0,64}?" + _KEY_RUN + rb"[A-Za-z0-9+/=_\-]{0,256}(?![A-Za-z0-9+/=_\-])"
             rb"(?!\.[A-Za-z0-9])")
_OTHER_KEY_ASSIGNMENT = re.compile(rb"(?<![A-Za-z0-9_])(?:[A-Z][A-Z0-9_]*_KEY|[a-z][a-z0-9_]*_key)[\"']?[ \t]*"
                                   rb"[=:][ \t]*[\"']?" + _KEY_LIKE)


def _assignments(names: bytes, quoted: bytes) -> list[re.Pattern[bytes]]:
    """A value (`quoted`, or bare where no code is expected) assigned to a credential's name (`names`, the endings
    in upper case)."""
    value = rb"(?:" + quoted + rb"|" + _BARE_VALUE + rb")"
    lower = names.lower()
    return [
        # NAME=value, "NAME": "value", the name bare (API_KEY=..., PASSWORD=...) or prefixed (WANDB_API_KEY=...), or
        # subscripted (os.environ["WANDB_API_KEY"] = ...)
        # (`\"` where a notebook's JSON holds the line)
        re.compile(rb"(?<![A-Za-z0-9_])(?:[A-Z][A-Z0-9_]*_)?" + names + rb"\\?[\"']?\]?[ \t]*[=:][ \t]*\\?" + value),
        # a Kubernetes or GitHub Actions env entry: `- name: WANDB_API_KEY` with `value: ...` on the next line
        re.compile(rb"(?<![A-Za-z0-9_])name:[ \t]*[\"']?(?:[A-Z][A-Z0-9_]*_)?" + names + rb"[\"']?[ \t]*\r?\n[ \t]*"
                   rb"value:[ \t]*" + value),
        # set by a call, given a key-like string: os.environ.setdefault("WANDB_API_KEY", "..."), os.putenv(...)
        # (from its opening quote, which the search skips to: a leading optional name is slow on binary bytes)
        re.compile(rb"[\"'](?:[A-Za-z0-9_]*_)?(?:" + names + rb"|" + lower + rb")[\"'][ \t]*,[ \t]*" + _KEY_QUOTED),
        # the same names in lower case as a JSON key ("api_key": "...") or a YAML / INI line (aws_secret_access_key =
        # ..., a kubeconfig's `token: ...`, followed by a comment or not)
        re.compile(rb"\"(?:[a-z0-9_]*_)?" + lower + rb"\"[ \t]*:[ \t]*" + quoted),
        re.compile(rb"(?m)^[ \t]*(?:[a-z0-9_]*_)?" + lower + rb"[ \t]*[:=][ \t]*" + value),
        # ... or in code, given a string: `openai.api_key = "..."`, `login(token="...")`
        re.compile(rb"(?<![A-Za-z0-9_])(?:[a-z0-9_]*_)?" + lower + rb"[\"']?\]?[ \t]*=[ \t]*" + quoted),
    ]


# A value a command line, header or URL gives a credential: quoted, or bare but neither a word, code nor a path
# (`--token /run/secrets/hf` names a file; `--api-key $KEY` a variable).
_FLAG_VALUE = rb"(?:" + _KEY_QUOTED + rb"|(?![/~.])" + _BARE_VALUE + rb")"
# The credential words of a flag, header or URL parameter, any case, `-` or `_` between their parts.
_CREDENTIAL_WORDS = (rb"(?:api[_\-]?key|access[_\-]?key|secret[_\-]?key|account[_\-]?key|private[_\-]?key|auth[_\-]?token"
                     rb"|access[_\-]?token|refresh[_\-]?token|token|secret|password|passwd)")
# A URL parameter's value that is a credential: 16 or more URL characters with two digits and two letters at least
# (a signature is hex or URL-encoded base64; `?token=abc` or `?sig=false` is not one).
_URL_SECRET = (rb"(?=(?:[A-Za-z%._~+/=\-]*[0-9]){2})(?=(?:[0-9%._~+/=\-]*[A-Za-z]){2})[A-Za-z0-9%._~+/=\-]{16,}")
# Credentials known by what stands around them. Each counts only where no other finding lies in it: the key of
# `--openai_api_key sk-...` is reported by its own shape, a known value where it stands (kaggle.json's key).
_CONTEXT_PATTERNS = (
    # a command-line flag: `--wandb_api_key VALUE`, `--api-key=VALUE`, `--hub-token "..."`
    re.compile(rb"(?i)(?<![A-Za-z0-9_\-])--(?:[a-z0-9]+[_\-])*" + _CREDENTIAL_WORDS + rb"(?:=|[ \t]+)" + _FLAG_VALUE),
    # any other `--...-key` flag, given a key-shaped value (as `_OTHER_KEY_ASSIGNMENT`: `--sort-key id` is not one)
    re.compile(rb"(?i)(?<![A-Za-z0-9_\-])--(?:[a-z0-9]+[_\-])*key(?:=|[ \t]+)[\"']?" + _KEY_LIKE),
    # an HTTP header naming a key or token (`x-api-key: ...`, `X-Auth-Token: ...`, `"X-Goog-Api-Key": "..."`)
    re.compile(rb"(?i)(?<![A-Za-z0-9_\-])x-(?:[a-z0-9]+-)*(?:key|token|secret|auth)[\"']?[ \t]*:[ \t]*[\"']?"
               + _NOT_A_VALUE + _KEY_LIKE),
    # a camelCase name in JavaScript, JSON or Java, given a string: `apiKey = "..."`, `"accessToken": "..."`
    re.compile(rb"(?<![A-Za-z0-9_])(?:apiKey|accessKey|secretKey|(?:[a-z][a-z0-9]*)(?:[A-Z][a-z0-9]*)*"
               rb"(?:ApiKey|AccessKey|SecretKey|Token|Secret|Password))[\"']?[ \t]*[:=][ \t]*" + _KEY_QUOTED),
    # an npm registry login (.npmrc's `//registry/:_authToken=...`, `_auth=...`)
    re.compile(rb"(?<![A-Za-z0-9])_auth(?:Token)?[ \t]*=[ \t]*[\"']?" + _NOT_A_VALUE + rb"[A-Za-z0-9+/=_\-]{16,}"),
    # `wandb login KEY` (a W&B key is 40 hex digits)
    re.compile(rb"(?<![A-Za-z0-9_])wandb[ \t]+login[ \t]+(?:--?[a-z\-]+[ \t]+)*[\"']?[0-9a-f]{40}(?![0-9A-Za-z])"),
    # a Kaggle API token file (kaggle.json: a user name, then a key of 32 hex digits)
    re.compile(rb"\"username\"[ \t]*:[ \t]*\"[^\"\r\n]{1,64}\"[ \t]*,[ \t\r\n]*\"key\"[ \t]*:[ \t]*\"[0-9a-f]{32}\""),
    # an HTTP header with a login (`Authorization: Basic dXNlcjpwYXNz`, the password in base64) or a plain token
    re.compile(rb"(?i)(?<![A-Za-z0-9_])authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:basic|token)[ \t]+" + _NOT_A_VALUE
               + rb"[A-Za-z0-9+/._\-]{12,}={0,2}"),
    # a credential in a URL's query (a signed URL: Azure SAS `sig=`, `X-Goog-Signature=`, `X-Amz-Signature=`; a
    # Jupyter `?token=`, `access_token=`)
    re.compile(rb"(?i)(?<=[?&])(?:x-(?:goog|amz)-signature|x-amz-security-token|sig|signature|" + _CREDENTIAL_WORDS
               + rb"|key|code)=" + _URL_SECRET),
)

# Where each `_CONTEXT_PATTERNS` pattern can start, found by a search that runs at memchr speed (a literal, or a
# class of a few bytes): a pattern that opens with a lookbehind or `(?i)` is otherwise tried at every byte of a
# chunk, which made the scan of a file 1.7 times slower. Each anchor is found wherever its pattern can match (a
# superset), and the pattern is then tried only there, as `finditer` would (`context_matches`), so the matches are
# the same. Per pattern: the anchor, whether it is searched in the lower-cased bytes (a `(?i)` pattern), and where
# the pattern's match would start: that many bytes after the anchor, or (None) at the start of the run of letters
# and digits before it (the camelCase name, whose ending and `=` or `:` the anchor is).
_CONTEXT_ANCHORS = (
    (re.compile(rb"--"), False, 0),
    (re.compile(rb"--"), False, 0),
    (re.compile(rb"x-"), True, 0),
    (re.compile(rb"(?:Key|Token|Secret|Password)[\"']?[ \t]*[:=][ \t]*[\"']"), False, None),
    (re.compile(rb"_auth"), False, 0),
    (re.compile(rb"wandb"), False, 0),
    (re.compile(rb"\"username\""), False, 0),
    (re.compile(rb"authorization"), True, 0),
    (re.compile(rb"[?&][a-z]"), True, 1),  # every name the pattern allows after `?` or `&` opens with a letter
)
if len(_CONTEXT_ANCHORS) != len(_CONTEXT_PATTERNS):  # paired by position: a pattern without an anchor is never run
    raise AssertionError("every _CONTEXT_PATTERNS entry needs its _CONTEXT_ANCHORS entry")
_ALNUM_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

SECRET_PATTERNS = (
    re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),  # PEM, OpenSSH and PGP (`... KEY BLOCK`)
    re.compile(rb"PuTTY-User-Key-File-[0-9]+:"),  # a PuTTY .ppk file holds the private key
    re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),  # an AWS access key id
    re.compile(rb"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),  # GitHub
    # an OpenAI or Anthropic API key (`sk-...`, `sk-proj-...`, `sk-ant-api03-...`): passed bare to an evaluation judge
    re.compile(rb"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{32,}"),
    # an Azure storage or service bus connection string's key
    re.compile(rb"(?<![A-Za-z0-9_])(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{20,}={0,2}"),
    # a Stripe, Slack or Google API key, bare (a webhook test script, a notebook cell)
    re.compile(rb"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}"),
    re.compile(rb"(?<![A-Za-z0-9_])xox[abposr]-[0-9A-Za-z\-]{20,}"),
    # an npm, GitLab or PyPI token, bare (an .npmrc, a CI script, a .pypirc)
    re.compile(rb"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    re.compile(rb"(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_\-]{20,}"),
    re.compile(rb"(?<![A-Za-z0-9_])pypi-AgE[A-Za-z0-9_\-]{50,}"),
    re.compile(rb"(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
    # a password or token in a URL (`postgres://me:s3cret@db`, a `.git-credentials` line, a private pip index);
    # letters alone (`user:password@host`) are a placeholder, as for a key
    re.compile(rb"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s/:@\"'<>]{1,64}:" + _NOT_A_VALUE
               + rb"(?![A-Za-z_\-]+@)[^\s/@\"'<>]{6,256}@[A-Za-z0-9\[]"),
    # an HTTP header with a bearer token (a curl line in a launch script)
    re.compile(rb"(?i)(?<![A-Za-z0-9_])authorization[\"']?[ \t]*[:=][ \t]*[\"']?bearer[ \t]+" + _NOT_A_VALUE
               + rb"[A-Za-z0-9._~+/\-]{20,}"),
    # a docker config.json's registry login ("auth": base64 of user:password)
    re.compile(rb"\"auth\"[ \t]*:[ \t]*\"[A-Za-z0-9+/]{16,}={0,2}\""),
    *_assignments(_KEY_NAMES, _KEY_QUOTED),
    *_assignments(_PASSWORD_NAMES, _PASSWORD_QUOTED),
    _OTHER_KEY_ASSIGNMENT,
    re.compile(rb"(?<![A-Za-z0-9_])login\((?:[^()\r\n]*,)?[ \t]*key[ \t]*=[ \t]*" + _KEY_QUOTED),  # wandb.login(key=)
    # a .netrc entry (wandb login writes one)
    re.compile(rb"(?<![A-Za-z0-9_])machine[ \t\r\n]+\S+[ \t\r\n]+login[ \t\r\n]+\S+[ \t\r\n]+password[ \t\r\n]+\S{8,}"),
    # ... its `default` entry, or the password before the login
    re.compile(rb"(?<![A-Za-z0-9_])(?:machine[ \t\r\n]+\S+|default)[ \t\r\n]+(?:login[ \t\r\n]+\S+[ \t\r\n]+)?"
               rb"password[ \t\r\n]+\S{8,}"),
)
_MIN_SECRET_LENGTH = 8  # shorter "tokens" (an empty or placeholder value) would match everywhere
# Environment variables that hold a credential of this process (WANDB_API_KEY, OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY,
# GITHUB_TOKEN): their values are looked for as they are, whatever their shape (a W&B key is 40 hex digits).
# Any name ending in KEY (KAGGLE_KEY, AZURE_OPENAI_KEY, OPENAI_KEY), or a personal access token (AZURE_DEVOPS_PAT):
# the value is looked for only as it is, and a benign name's value (CACHE_KEY=images) is short or found nowhere. Not
# `_CREDENTIALS`: GOOGLE_APPLICATION_CREDENTIALS holds the path of a key file, not a key.
_SECRET_ENVIRONMENT = re.compile(r"(?:^|_)(?:KEY|PAT|TOKEN|SECRET|PASSWORD|PASSWD)$")
# Such a value is looked for only from this length on: API keys and tokens are longer (W&B 40, AWS secret 40, GitHub
# 40+), while a short one is as likely a word every tokenizer's vocabulary and many captions hold (a local database's
# POSTGRES_PASSWORD=password refused every model folder, and no edit of the file could clear it).
_MIN_ENVIRONMENT_SECRET_LENGTH = 16
_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-+@%")
_WINDOWS_USERS = re.compile(rb":(?:\\\\|\\|/)(?:Users|users|USERS)(?:\\\\|\\|/)")
_RUN_DELIMITERS = frozenset(b" \t\r\n\"'`<>()[]{},;|=")


def context_matches(data: bytes, start: int, end: int) -> list[re.Match[bytes]]:
    """The matches of `_CONTEXT_PATTERNS` that start in `data[start:end]`, pattern by pattern, each as
    `pattern.finditer(data, start)` finds them (leftmost, not overlapping; lookbehinds see the bytes before `start`),
    the pattern tried only where its anchor (`_CONTEXT_ANCHORS`) lies."""
    lowered = None
    found = []
    for pattern, (anchor, in_lowered, shift) in zip(_CONTEXT_PATTERNS, _CONTEXT_ANCHORS):
        if in_lowered and lowered is None:
            lowered = data.lower()  # ASCII only, as `(?i)` on bytes: the same length, the same offsets
        haystack = lowered if in_lowered else data
        # Every anchor, overlapping ones too (a search from one byte past each hit): a run of `---` holds two.
        # The starts grow with the anchors (a camelCase anchor ends its run with `=` or `:`), so the first one past
        # `end` ends the search.
        candidates = []
        hit = anchor.search(haystack, max(start - (shift or 0), 0))
        while hit is not None:
            at = hit.start()
            if shift is None:
                while at > 0 and data[at - 1] in _ALNUM_BYTES:
                    at -= 1
            else:
                at += shift
            if at >= end:
                break
            candidates.append(at)
            hit = anchor.search(haystack, hit.start() + 1)
        resume = start  # where `finditer` would search on from: the end of its last match
        for at in sorted(set(candidates)):
            if at < resume:
                continue
            match = pattern.match(data, at)
            if match is not None:
                found.append(match)
                resume = match.end()
    return found
