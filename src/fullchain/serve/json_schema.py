"""JSON Schema -> the grammar nodes that guided decoding (`serve.json_mode`) matches text against.

The subset is what OpenAI strict mode and tool `parameters` use: `type` (one or a list) object /
array / string / number / integer / boolean / null; `properties`, `required`,
`additionalProperties` (false, true or a schema); `items`, `minItems`, `maxItems`; `enum` and
`const` at any level; `anyOf`; `allOf` with one member; local `$ref` ("#", "#/$defs/X",
"#/definitions/X", any JSON pointer into the document, recursion included). Annotations
(`title`, `description`, `default`, `examples`, `format`, ...) are accepted and not enforced,
as JSON Schema does by default. Any other keyword is a SchemaError naming it.
"""

from __future__ import annotations

import json
from typing import Any

from fullchain.config import FullchainError

ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "format", "$schema",
               "$id", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"}
STRUCTURE = {"type", "properties", "required", "additionalProperties", "items", "minItems",
             "maxItems", "enum", "const", "anyOf", "allOf", "$ref"}
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
MAX_NODES = 10_000


class SchemaError(FullchainError):
    """A schema outside the supported subset; `keyword` names the offending keyword."""

    def __init__(self, message: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class Node:
    """One grammar node. kind: any | object | array | string | number | integer | enum | anyof |
    ref. `shortest` is the shortest JSON text of the node (set once the graph is built)."""

    def __init__(self, kind: str, **fields: Any) -> None:
        self.kind = kind
        self.props: dict[str, Node] = fields.get("props", {})
        self.key_text: dict[str, str] = {k: _encode(k)[1:-1] for k in self.props}
        self.required: tuple[str, ...] = tuple(fields.get("required", ()))
        self.extra: Node | None = fields.get("extra")  # additionalProperties; None: none allowed
        self.items: Node | None = fields.get("items")
        self.min_items: int = fields.get("min_items", 0)
        self.max_items: int | None = fields.get("max_items")
        self.literals: tuple[str, ...] = tuple(fields.get("literals", ()))
        self.options: list[Node] = fields.get("options", [])
        self.target: Node | None = None  # of a ref
        self.shortest: str | None = None

    def resolved(self) -> Node:
        node = self
        while node.kind == "ref":
            node = node.target
        return node


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def free_nodes() -> tuple[Node, Node]:
    """(any JSON value, any JSON object): the nodes of `response_format: json_object`."""
    any_value = Node("any")
    obj = Node("object", extra=any_value)
    any_value.options = [obj, Node("array", items=any_value), Node("string"), Node("number"),
                         Node("enum", literals=("true", "false", "null"))]
    _set_shortest([any_value, obj, *any_value.options])
    return any_value, obj


def compile_schema(schema: Any) -> Node:
    """The grammar of `schema`; SchemaError names an unsupported keyword or a bad value."""
    return _Compiler(schema).build()


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Node] = {}
        self.nodes: list[Node] = []
        self.any_value, _ = free_nodes()

    def build(self) -> Node:
        node = self.compile(self.root, "#")
        for ref, ref_node in self.refs.items():
            if ref_node.target is None:
                ref_node.target = self.compile(self._pointer(ref), ref)
        _set_shortest(self.nodes)
        if node.shortest is None:
            raise SchemaError("the schema has no finite instance: a $ref recursion through "
                              "required properties or minItems never ends", "$ref")
        _prune(self.nodes)
        return node

    def new(self, kind: str, **fields: Any) -> Node:
        if len(self.nodes) >= MAX_NODES:
            raise SchemaError(f"the schema is too large (over {MAX_NODES} nodes)")
        node = Node(kind, **fields)
        self.nodes.append(node)
        return node

    def compile(self, schema: Any, where: str) -> Node:
        if schema is True or schema == {}:
            return self.any_value
        if not isinstance(schema, dict):
            raise SchemaError(f"{where}: a schema must be an object or true, got {schema!r}")
        unknown = [k for k in schema if k not in ANNOTATIONS | STRUCTURE]
        if unknown:
            raise SchemaError(f"{where}: JSON Schema keyword {unknown[0]!r} is not supported "
                              "by guided decoding", unknown[0])
        if "$ref" in schema:
            self._alone(schema, "$ref", where)
            return self._ref(schema["$ref"], where)
        if "allOf" in schema:
            self._alone(schema, "allOf", where)
            if not isinstance(schema["allOf"], list) or len(schema["allOf"]) != 1:
                raise SchemaError(f"{where}: allOf is supported with one member only", "allOf")
            return self.compile(schema["allOf"][0], f"{where}/allOf/0")
        if "anyOf" in schema:
            self._alone(schema, "anyOf", where)
            options = schema["anyOf"]
            if not isinstance(options, list) or not options:
                raise SchemaError(f"{where}: anyOf must be a non-empty list", "anyOf")
            return self.new("anyof", options=[self.compile(s, f"{where}/anyOf/{i}")
                                              for i, s in enumerate(options)])
        types = self._types(schema, where)
        if "enum" in schema or "const" in schema:
            return self._enum(schema, types, where)
        if len(types) > 1:
            return self.new("anyof", options=[self._typed(schema, t, where) for t in types])
        return self._typed(schema, types[0], where)

    def _alone(self, schema: dict, keyword: str, where: str) -> None:
        others = [k for k in schema if k in STRUCTURE and k != keyword]
        if others:
            raise SchemaError(f"{where}: {keyword!r} together with {others[0]!r} is not "
                              f"supported; move {others[0]!r} into the {keyword} member(s)",
                              others[0])

    def _types(self, schema: dict, where: str) -> list[str]:
        t = schema.get("type")
        if t is None:
            if "properties" in schema or "additionalProperties" in schema:
                return ["object"]
            if "items" in schema:
                return ["array"]
            return ["any"]
        types = [t] if isinstance(t, str) else t
        if not isinstance(types, list) or not types or any(x not in TYPES for x in types):
            raise SchemaError(f"{where}: type must be one of {list(TYPES)} or a list of them, "
                              f"got {t!r}", "type")
        return types

    def _typed(self, schema: dict, t: str, where: str) -> Node:
        if t == "any":
            return self.any_value
        if t == "object":
            return self._object(schema, where)
        if t == "array":
            return self._array(schema, where)
        if t == "boolean":
            return self.new("enum", literals=("true", "false"))
        if t == "null":
            return self.new("enum", literals=("null",))
        return self.new(t)  # string, number, integer

    def _object(self, schema: dict, where: str) -> Node:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, dict):
            raise SchemaError(f"{where}: properties must be an object", "properties")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{where}: required must be a list of names", "required")
        # no additionalProperties next to properties: generate only the listed ones (valid
        # either way; xgrammar's strict mode does the same)
        extra = schema.get("additionalProperties", not props)
        extra_node = None if extra is False else self.compile(
            extra, f"{where}/additionalProperties")
        missing = [r for r in required if r not in props]
        if missing and schema.get("additionalProperties") is False:
            raise SchemaError(f"{where}: required names {missing[0]!r}, which is not in "
                              "properties and additionalProperties is false", "required")
        nodes = {k: self.compile(s, f"{where}/properties/{k}") for k, s in props.items()}
        nodes.update({k: extra_node or self.any_value for k in missing})
        return self.new("object", props=nodes, required=list(dict.fromkeys(required)),
                        extra=extra_node)

    def _array(self, schema: dict, where: str) -> Node:
        items = self.compile(schema.get("items", True), f"{where}/items")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        for key, value in (("minItems", low), ("maxItems", high)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise SchemaError(f"{where}: {key} must be an integer >= 0", key)
        if high is not None and high < low:
            raise SchemaError(f"{where}: maxItems is below minItems", "maxItems")
        return self.new("array", items=items, min_items=low, max_items=high)

    def _enum(self, schema: dict, types: list[str], where: str) -> Node:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list):
            raise SchemaError(f"{where}: enum must be a list", "enum")
        kept = [v for v in values if "any" in types or any(_is_type(v, t) for t in types)]
        if not kept:
            raise SchemaError(f"{where}: no enum/const value has the schema's type", "enum")
        return self.new("enum", literals=list(dict.fromkeys(_encode(v) for v in kept)))

    def _ref(self, ref: Any, where: str) -> Node:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"{where}: only local $ref ('#/$defs/Name') is supported, got "
                              f"{ref!r}", "$ref")
        if ref not in self.refs:
            self._pointer(ref)  # fail now on a bad pointer
            self.refs[ref] = self.new("ref")
        return self.refs[ref]

    def _pointer(self, ref: str) -> Any:
        target = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise SchemaError(f"$ref {ref!r} points to nothing in the schema", "$ref")
            target = target[part]
        return target


_PY_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
             "number": (int, float)}


def _is_type(value: Any, t: str) -> bool:
    if isinstance(value, bool) and t in ("number", "integer"):
        return False
    if t == "integer":
        return isinstance(value, int) or isinstance(value, float) and value.is_integer()
    return isinstance(value, _PY_TYPES[t])


def _shortest(node: Node) -> str | None:
    """The shortest text of `node` given its children's current `shortest` (None: unknown)."""
    kind = node.kind
    if kind in ("string",):
        return '""'
    if kind in ("number", "integer"):
        return "0"
    if kind == "enum":
        return min(node.literals, key=len)
    if kind == "ref":
        return node.target.shortest if node.target is not None else None
    if kind in ("anyof", "any"):
        found = [o.shortest for o in node.options if o.shortest is not None]
        return min(found, key=len) if found else None
    if kind == "array":
        if node.min_items == 0:
            return "[]"
        item = node.items.shortest
        return None if item is None else "[" + ",".join([item] * node.min_items) + "]"
    parts = []
    for key in node.required:
        value = node.props[key].shortest
        if value is None:
            return None
        parts.append(f'"{node.key_text[key]}":{value}')
    return "{" + ",".join(parts) + "}"


def _set_shortest(nodes: list[Node]) -> None:
    """Fixpoint over the (possibly recursive) graph: each pass can only shorten or fill in."""
    changed = True
    while changed:
        changed = False
        for node in nodes:
            text = _shortest(node)
            if text is not None and (node.shortest is None or len(text) < len(node.shortest)):
                node.shortest, changed = text, True


def _prune(nodes: list[Node]) -> None:
    """Drop the choices that could never be finished (optional members of an endless
    recursion), so that the matcher never enters them."""
    for node in nodes:
        if node.kind == "anyof":
            node.options = [o for o in node.options if o.shortest is not None]
        elif node.kind == "object":
            node.props = {k: v for k, v in node.props.items() if v.shortest is not None}
            node.key_text = {k: node.key_text[k] for k in node.props}
        elif node.kind == "array" and node.items.shortest is None:
            node.max_items = 0
