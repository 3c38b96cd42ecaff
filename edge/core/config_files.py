"""A YAML config file read into a pydantic model, and the one error a config file gives."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used: 'FILE: key.sub: message'.

    `key` is the dotted key that is wrong, None where the file as a whole is (unreadable,
    not YAML); `more` are further (key, message) problems, joined with '; '.
    """

    def __init__(
        self, path: str | Path, key: str | None, message: str, *more: tuple[str | None, str]
    ):
        self.path = path
        self.key = key
        self.message = message
        self.problems = ((key, message), *more)
        text = "; ".join(m if k is None else f"{k}: {m}" for k, m in self.problems)
        super().__init__(f"{path}: {text}")


def load_yaml_model(path: str | Path, model: type[Model]) -> Model:
    """The YAML file at `path` validated as `model` (an empty file gives its defaults);
    `ConfigError` naming the file, and each wrong key, otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, f"not UTF-8 text: {e}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(path, None, f"not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(path, None, "the top level must be a mapping of keys")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        (key, message), *rest = [
            (".".join(str(p) for p in err["loc"]) or "(top)", err["msg"]) for err in e.errors()
        ]
        raise ConfigError(path, key, message, *rest) from None
