"""The JSON grammar matcher and the schema compiler, without a model: texts it accepts and
rejects, and random character walks whose closing always gives JSON that validates."""

import json
import random

import pytest

from fullchain.serve.json_mode import (
    COMPLETE,
    FREE_OBJECT,
    INVALID,
    PARTIAL,
    advance,
    closing,
    is_complete,
    json_prefix_state,
    start_state,
    value_state,
)
from fullchain.serve.json_schema import SchemaError, compile_schema

jsonschema = pytest.importorskip("jsonschema")

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pet"],
          "properties": {
              "name": {"type": "string"},
              "age": {"type": "integer"},
              "pet": {"type": "object", "additionalProperties": False,
                      "required": ["kind", "weight"],
                      "properties": {"kind": {"enum": ["cat", "dog", "axolotl"]},
                                     "weight": {"type": "number"}}},
              "nick": {"type": ["string", "null"]}}}
SCHEMAS = {
    "nested": PERSON,
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", 7, None]},
                                              "mode": {"const": "fast"}},
             "required": ["color", "mode"], "additionalProperties": False},
    "array": {"type": "object", "properties": {"xs": {"type": "array", "minItems": 2,
                                                      "maxItems": 4,
                                                      "items": {"type": "integer"}},
                                               "flags": {"type": "array",
                                                         "items": {"type": "boolean"}}},
              "required": ["xs", "flags"], "additionalProperties": False},
    "anyof_ref": {"$defs": {"node": {"type": "object", "additionalProperties": False,
                                     "properties": {"v": {"type": "integer"},
                                                    "kids": {"type": "array",
                                                             "items": {"$ref": "#/$defs/node"}}},
                                     "required": ["v"]}},
                  "anyOf": [{"$ref": "#/$defs/node"}, {"type": "array", "maxItems": 2,
                                                       "items": {"type": "string"}}]},
    "free": {"type": "object"},
    "extra_schema": {"type": "object", "additionalProperties": {"type": "number"},
                     "properties": {"id": {"type": "string"}}, "required": ["id"]},
}
ALPHABET = list('{}[]",: -0123456789.eE+tfnrulsab\\/xyzcgdké') + ['"name"', '"age"', "true"]


def test_free_object_prefixes():
    assert json_prefix_state('{"a": [1, 2.5e3, "x\\n", {"b": null}], "c": true}') == COMPLETE
    assert json_prefix_state('{"a": [1, 2') == PARTIAL
    for bad in ('{"a" :1}', '{"a":01}', '{"a":1,}', "[1]", '{"a":"\\u12"}', '{"a":tru}',
                '{"a":1}}', '{\n"a":1}'):
        assert json_prefix_state(bad) == INVALID, bad


def test_schema_accepts_and_rejects():
    node = compile_schema(PERSON)
    ok = '{"pet": {"kind": "dog", "weight": -1.5e2}, "name": "Al", "age": 3, "nick": null}'
    assert is_complete(advance(value_state(node), ok))
    for bad in ('{"age": 1.5', '{"pet": {"kind": "do"}', '{"color"', '{"name": 1',
                '{"name": "a", "name"', '{"name": "a", "age": 1, "pet": {"kind": "cat", '
                '"weight": 1}}x'):
        assert not advance(value_state(node), bad), bad
    missing = '{"name": "a", "age": 1}'
    assert not advance(value_state(node), missing)  # "}" before the required pet


def test_tool_call_sequence():
    node = compile_schema(PERSON["properties"]["pet"])
    start = start_state([['<tool_call>\n{"name": "a", "arguments": ', node, "}\n</tool_call>"],
                         ['<tool_call>\n{"name": "b", "arguments": ', node, "}\n</tool_call>"]])
    state = advance(start, '<tool_call>\n{"name": "b", "arguments": {"kind":"cat"')
    assert len(state) == 1
    rest = closing(state)
    assert rest == ',"weight":0}}\n</tool_call>'
    assert is_complete(advance(state, rest))


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_walks_close_into_valid_json(name):
    """Walk random valid characters, then append the closing: the text must validate."""
    schema = SCHEMAS[name]
    start = value_state(compile_schema(schema))
    rng = random.Random(name)
    for _ in range(60):
        text, state = "", start
        for _ in range(rng.randrange(0, 80)):
            options = [(c, s) for c in ALPHABET if (s := advance(state, c))]
            if not options:
                break
            c, state = rng.choice(options)
            text += c
        rest = closing(state)
        assert rest is not None, text
        final = advance(state, rest)
        assert is_complete(final), (text, rest)
        jsonschema.validate(json.loads(text + rest), schema)


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "string", "pattern": "^a"}, "pattern"),
    ({"type": "integer", "minimum": 3}, "minimum"),
    ({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}, "maxLength"),
    ({"oneOf": [{"type": "string"}]}, "oneOf"),
    ({"type": "object", "patternProperties": {"a": {}}}, "patternProperties"),
    ({"$ref": "https://example.com/s.json"}, "$ref"),
    ({"$ref": "#/$defs/missing"}, "$ref"),
    ({"type": "date"}, "type"),
    ({"$defs": {"a": {"type": "object", "required": ["a"], "additionalProperties": False,
                      "properties": {"a": {"$ref": "#/$defs/a"}}}}, "$ref": "#/$defs/a"},
     "$ref"),
])
def test_unsupported_schemas_name_the_keyword(schema, keyword):
    with pytest.raises(SchemaError) as e:
        compile_schema(schema)
    assert e.value.keyword == keyword and keyword in str(e.value)


def test_annotations_are_accepted_and_free_object_is_json_object():
    node = compile_schema({"title": "T", "description": "d", "type": "object",
                           "properties": {"when": {"type": "string", "format": "date-time",
                                                   "default": "x", "examples": ["y"]}}})
    assert is_complete(advance(value_state(node), '{"when":"now"}'))
    assert not advance(value_state(node), '{"other"')  # only the listed properties
    assert is_complete(advance(value_state(FREE_OBJECT), '{"other":[]}'))


def test_endless_optional_recursion_is_never_entered():
    schema = {"$defs": {"loop": {"type": "object", "required": ["next"],
                                 "properties": {"next": {"$ref": "#/$defs/loop"}}}},
              "type": "object", "additionalProperties": False,
              "properties": {"a": {"$ref": "#/$defs/loop"}, "b": {"type": "integer"}}}
    state = value_state(compile_schema(schema))
    assert not advance(state, '{"a"')
    assert is_complete(advance(state, '{"b":1}'))
