"""Config fields taken from the core models that define them: one definition of each setting."""

from copy import copy

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def field_of(model: type[BaseModel], name: str) -> FieldInfo:
    """The field as the core model defines it (default, bounds, description)."""
    return copy(model.model_fields[name])
