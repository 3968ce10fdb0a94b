"""A minimal JSON Schema (draft-04) validator for the SARIF schema in this folder.

`jsonschema` is not a dependency of the project, so the tests validate
SARIF with this checker. It implements the keywords the SARIF 2.1.0 schema
uses: `$ref` (local `#/definitions/...`), `type`, `enum`, `properties`,
`required`, `additionalProperties`, `items`, `minItems`, `uniqueItems`,
`minimum`, `maximum`, `pattern`, `format` (`uri`, `uri-reference`,
`date-time`), `anyOf` and `oneOf`. Annotation keywords such as
`description` and `default` are ignored.

`sarif-schema-2.1.0.json` is the SARIF 2.1.0 schema in its `rtm.5` form,
as shipped in the npm package @microsoft/jest-sarif 1.0.0-beta.0 (MIT,
file `lib/schemas/sarif-2.1.0-rtm.5.json`), byte for byte.
"""

from __future__ import annotations

import datetime
import json
import re
import urllib.parse
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("sarif-schema-2.1.0.json")

_TYPES = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(instance, schema: dict, root: dict | None = None, where: str = "$") -> list[str]:
    """Return one message per violation of `schema` by `instance` (empty: valid)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        return validate(instance, _resolve(schema["$ref"], root), root, where)

    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES[name](instance) for name in names):
            return [f"{where}: expected {expected}, got {type(instance).__name__}"]

    errors: list[str] = []
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, dict):
        errors += _validate_object(instance, schema, root, where)
    if isinstance(instance, list):
        errors += _validate_array(instance, schema, root, where)
    if isinstance(instance, str):
        errors += _validate_string(instance, schema, where)
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{where}: {instance} is less than {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{where}: {instance} is more than {schema['maximum']}")

    if "anyOf" in schema and all(validate(instance, option, root, where) for option in schema["anyOf"]):
        errors.append(f"{where}: matches none of anyOf")
    if "oneOf" in schema:
        matching = sum(1 for option in schema["oneOf"] if not validate(instance, option, root, where))
        if matching != 1:
            errors.append(f"{where}: matches {matching} of oneOf, expected exactly 1")
    return errors


def _resolve(reference: str, root: dict) -> dict:
    if not reference.startswith("#/"):
        raise ValueError(f"only local references are supported, got {reference}")
    node = root
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _validate_object(instance: dict, schema: dict, root: dict, where: str) -> list[str]:
    errors = [f"{where}: missing required property {name!r}" for name in schema.get("required", [])
              if name not in instance]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, value in instance.items():
        if name in properties:
            errors += validate(value, properties[name], root, f"{where}.{name}")
        elif extra is False:
            errors.append(f"{where}: property {name!r} is not allowed")
        elif isinstance(extra, dict):
            errors += validate(value, extra, root, f"{where}.{name}")
    return errors


def _validate_array(instance: list, schema: dict, root: dict, where: str) -> list[str]:
    errors = []
    if len(instance) < schema.get("minItems", 0):
        errors.append(f"{where}: fewer than {schema['minItems']} items")
    if schema.get("uniqueItems"):
        encoded = [json.dumps(item, sort_keys=True) for item in instance]
        if len(set(encoded)) != len(encoded):
            errors.append(f"{where}: items are not unique")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(instance):
            errors += validate(item, items, root, f"{where}[{index}]")
    return errors


def _validate_string(instance: str, schema: dict, where: str) -> list[str]:
    errors = []
    if "pattern" in schema and not re.search(schema["pattern"], instance):
        errors.append(f"{where}: {instance!r} does not match {schema['pattern']}")
    form = schema.get("format")
    if form == "uri" and not urllib.parse.urlsplit(instance).scheme:
        errors.append(f"{where}: {instance!r} is not an absolute URI")
    elif form == "uri-reference" and (not instance or re.search(r"\s", instance)):
        errors.append(f"{where}: {instance!r} is not a URI reference")
    elif form == "date-time":
        try:
            datetime.datetime.fromisoformat(instance.replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"{where}: {instance!r} is not a date-time")
    return errors
