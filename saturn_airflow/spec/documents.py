"""Reading the contract documents (workload YAML, profile table and plan JSON) into their models.

Every way a document can be wrong (unreadable, malformed, the wrong shape, a bad field) becomes one
SaturnInputError line that names the source, so the three contracts fail the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError

from saturn_airflow.errors import SaturnInputError, pydantic_message

M = TypeVar("M", bound=BaseModel)


def decode_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SaturnInputError(f"{source}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def decode_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise SaturnInputError(f"{source}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None


def parse_document(model: type[M], data: Union[dict, str], source: str, *, decode: Callable[[str, str], Any],
                   expects: Optional[str] = None) -> M:
    """`data` (decoded text or an already parsed dict) validated as `model`; `expects` names the shape
    a non-mapping should have been."""
    if isinstance(data, str):
        data = decode(data, source)
    if expects is not None and not isinstance(data, dict):
        raise SaturnInputError(f"{source}: expected {expects}, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SaturnInputError(pydantic_message(source, e)) from None


def read_document(path: Union[str, Path]) -> tuple[str, str]:
    """(text, source) of a document file; SaturnInputError when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(), str(path)
    except OSError as e:
        raise SaturnInputError(f"{path}: cannot read: {e.strerror}") from None
