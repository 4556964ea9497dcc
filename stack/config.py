"""Typed configuration sections: one pydantic model each, unknown keys refused with the valid ones listed.

Every section of a run's configuration (model, train, eval, ckpt, monitor, data) is validated
through `parse_section`, so a typo in a TOML file or a `--set` is one clear line, never a
silently ignored key.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.errors import BadInput

S = TypeVar("S", bound=BaseModel)


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_section(cls: type[S], name: str, data: dict[str, Any]) -> S:
    """Validate `data` as section `name`; problems become one-line BadInput naming valid keys."""
    unknown = sorted(set(data) - set(cls.model_fields))
    if unknown:
        raise BadInput(
            f"unknown {name} config key(s) {', '.join(unknown)}; valid keys: {', '.join(cls.model_fields)}"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        where = f"{name}.{where}" if where else name
        if first["type"] == "missing":  # pydantic's "Field required" names no way to give it
            raise BadInput(
                f"config {where} is not set: give it with --set {where}=VALUE, in a --config FILE, or "
                "with a --preset that sets it"
            ) from None
        raise BadInput(f"config {where}: {first['msg']}") from None
