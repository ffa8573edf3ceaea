"""The versioned prompt files (config/prompts/*.md) and the check every LLM answer passes before use."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*)\n\s*```$", re.S)


class AnswerError(ValueError):
    """An answer that cannot be used; ``status`` is the call-log status (empty/invalid_json/invalid_labels)."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt file: YAML front matter (version, labels) and a Markdown body."""

    version: str
    labels: dict[str, str]  # label name -> what it covers, in prompt order
    body: str
    path: str

    def render(self) -> str:
        """The system message: the body with ``{{labels}}`` replaced by the label list."""
        listing = "\n".join(f'- "{name}": {desc}' if desc else f'- "{name}"' for name, desc in self.labels.items())
        return self.body.replace("{{labels}}", listing).strip() + "\n"


def load_prompt(path: str | Path) -> Prompt:
    """Parse a prompt file::

        ---
        version: ct_rate_v1
        labels:
          Label name: what it covers      # or a plain list of names
        ---
        Markdown instructions containing {{labels}} and the word JSON.
    """
    text = Path(path).read_text(encoding="utf-8")
    parts = re.split(r"^---[ \t]*$\n?", text, maxsplit=2, flags=re.M)
    if len(parts) != 3 or parts[0].strip():
        raise ValueError(f"{path}: prompt file must start with a '---' front matter block closed by '---'")
    meta = yaml.safe_load(parts[1]) or {}
    version = meta.get("version")
    if not isinstance(version, str) or not version.strip():
        raise ValueError(f"{path}: front matter needs a 'version:' string")
    raw = meta.get("labels")
    if isinstance(raw, list):
        labels = {str(x): "" for x in raw}
    elif isinstance(raw, dict):
        labels = {str(k): "" if v is None else str(v).strip() for k, v in raw.items()}
    else:
        raise ValueError(f"{path}: front matter needs 'labels:' (a list, or a mapping name -> description)")
    if not labels or (isinstance(raw, list) and len(labels) != len(raw)):
        raise ValueError(f"{path}: labels must be non-empty and unique")
    body = parts[2]
    if "{{labels}}" not in body:
        raise ValueError(f"{path}: body must contain the {{{{labels}}}} placeholder")
    if "json" not in body.lower():
        raise ValueError(f"{path}: body must mention JSON (required by response_format json_object)")
    return Prompt(version.strip(), labels, body, str(path))


def validate_answer(content: str | None, labels: Sequence[str]) -> dict[str, bool]:
    """{label: bool} from a model answer, or AnswerError. Details name labels/types, never answer text."""
    if content is None or not content.strip():
        raise AnswerError("empty", "no content")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnswerError("invalid_json", f"not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict):
        raise AnswerError("invalid_json", f"JSON {type(obj).__name__}, not an object")
    missing = [name for name in labels if name not in obj]
    if missing:
        raise AnswerError("invalid_labels", f"missing labels {missing}")
    wrong = {name: type(obj[name]).__name__ for name in labels if not isinstance(obj[name], bool)}
    if wrong:
        raise AnswerError("invalid_labels", f"non-boolean values {wrong}")
    return {name: obj[name] for name in labels}
