"""Values that may be secrets: a pasted API key where a variable's name belongs, credentials inside a URL.

Config checks refuse them without repeating them (``looks_like_secret``, ``url_secrets``); whatever prints a URL
prints it through ``redact_url``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from urllib.parse import parse_qsl, urlsplit, urlunsplit

#: prefixes of common API keys and tokens (OpenAI, Groq, Hugging Face, GitHub, AWS, Google, Anthropic, Stripe ...)
KEY_PREFIXES = ("sk-", "sk_", "gsk_", "hf_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xai-",
                "xox", "AKIA", "ASIA", "AIza", "pk_", "rk_", "pplx-", "nvapi-", "r8_", "fw_", "csk-")
#: query parameters that carry credentials (Azure's api-key, signed URLs' sig, ...)
SECRET_QUERY = re.compile(r"(?i)(key|token|secret|passw|pwd|auth|sig|credential|session)")


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters, bits per character."""
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values()) if text else 0.0


def looks_like_secret(value: str) -> bool:
    """A known key prefix, or a long random-looking run: 20+ characters without '_' mixing letters and digits, or
    lower and upper case, at more than 3.5 bits a character. Variable names (OPENAI_API_KEY, HF_TOKEN) are neither."""
    if value.startswith(KEY_PREFIXES):
        return True
    for run in re.split(r"[_\W]+", value):
        mixed = (re.search(r"[A-Za-z]", run) and re.search(r"\d", run)) or (re.search(r"[a-z]", run)
                                                                           and re.search(r"[A-Z]", run))
        if len(run) >= 20 and mixed and entropy_bits(run) > 3.5:
            return True
    return False


def url_secrets(url: str) -> list[str]:
    """What in a URL is a credential: its user / password part, query parameters named like a key or holding one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = ["user:password part"] if parts.username or parts.password else []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_QUERY.search(name) or looks_like_secret(value):
            found.append(f"query parameter {name!r}")
    return found


def redact_url(url: str) -> str:
    """The URL with its user / password part and every query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if parts.username or parts.password:
        netloc = "***@" + netloc
    query = "&".join(f"{name}=***" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment and "***"))
