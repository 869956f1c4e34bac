"""A character-level pushdown matcher for JSON grammars (`serve.json_schema` nodes), the core of
guided decoding: `response_format` json_object and json_schema, and forced tool calls.

A state is a set of alternatives (for anyOf, enums, free values); each alternative is a stack of
immutable frames, top last. `advance(state, text)` feeds characters; an empty state means the
text can no longer match. `closing(state)` is a short text that completes the value (so that a
reply can always be finished before max_tokens). Whitespace: none, except one optional space
after `:` and `,` (compact output; no runaway newlines).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from fullchain.serve.json_schema import Node, free_nodes

State = frozenset  # of stacks: tuple[frame, ...]
INVALID, PARTIAL, COMPLETE = 0, 1, 2
VAL, OBJ, ARR, STR, NUM, LIT, TEXT = range(7)  # frame kinds (frame[0])
OPEN, KEY, COLON, VALUE, AFTER, NEXT, NEXT_NS = range(7)  # object and array phases
NUM_DONE = ("0", "I", "F", "X")  # number states that can end here
MAX_DIGITS, MAX_EXP_DIGITS = 16, 2  # per part: no overflow to infinity
_NUM_MOVES = {"-": {"0": "0", **dict.fromkeys("123456789", "I")},
              "0": {".": ".", "e": "E", "E": "E"},
              "I": {**dict.fromkeys("0123456789", "I"), ".": ".", "e": "E", "E": "E"},
              ".": dict.fromkeys("0123456789", "F"),
              "F": {**dict.fromkeys("0123456789", "F"), "e": "E", "E": "E"},
              "E": {"+": "S", "-": "S", **dict.fromkeys("0123456789", "X")},
              "S": dict.fromkeys("0123456789", "X"),
              "X": dict.fromkeys("0123456789", "X")}
ANY_VALUE, FREE_OBJECT = free_nodes()


def start_state(alternatives: Iterable[Sequence[str | Node]]) -> State:
    """The state before any text, for alternatives that are each a sequence of fixed texts and
    JSON values (a tool call: prefix text, the arguments, suffix text)."""
    stacks = set()
    for parts in alternatives:
        frames = [(TEXT, p, 0) if isinstance(p, str) else (VAL, p, False) for p in parts if p]
        stacks.add(tuple(reversed(frames)))
    return frozenset(stacks)


def value_state(node: Node) -> State:
    return start_state([[node]])


def advance(state: State, text: str) -> State:
    for c in text:
        if not state:
            break
        state = frozenset(s for stack in state for s in _feed(stack, c))
    return state


def is_complete(state: State) -> bool:
    return any(_can_end(stack) for stack in state)


def closing(state: State) -> str | None:
    """A shortest-by-construction text that completes the match (None for a dead state)."""
    return min((_close(stack) for stack in state), key=len, default=None)


def accepts_non_ascii(state: State) -> bool:
    """Whether some non-ASCII character could come next (for a token that ends in the middle of
    a multi-byte character)."""
    for stack in state:
        if stack and stack[-1][0] == STR and stack[-1][3] == 0:
            cands, raw = stack[-1][1], stack[-1][2]
            if cands is None or any(len(c) > len(raw) and ord(c[len(raw)]) > 127 for c in cands):
                return True
    return False


def in_fixed_text(state: State) -> bool:
    """Whether some alternative is inside a fixed text (a tool-call tag), not a JSON value."""
    return any(stack and stack[-1][0] == TEXT for stack in state)


def json_prefix_state(text: str) -> int:
    """INVALID, PARTIAL (a prefix of a JSON object) or COMPLETE (one whole object)."""
    state = advance(value_state(FREE_OBJECT), text)
    return INVALID if not state else COMPLETE if is_complete(state) else PARTIAL


# ------------------------------------------------------------ feeding one character


def _feed(stack: tuple, c: str) -> list[tuple]:
    if not stack:
        return []  # the value is complete: nothing may follow
    top, below = stack[-1], stack[:-1]
    return _FEEDERS[top[0]](top, below, c)


def _feed_all(stacks: list[tuple], c: str) -> list[tuple]:
    return [s for stack in stacks for s in _feed(stack, c)]


def _resume(below: tuple, key: str | None = None) -> list[tuple]:
    """The stacks once the value on top of `below` is complete (`key`: it was an object key)."""
    if not below:
        return [()]
    top, rest = below[-1], below[:-1]
    if top[0] == OBJ:
        _, node, phase, seen, name = top
        if phase == KEY:
            name = json.loads(f'"{key}"')
            return [] if name in seen else [rest + ((OBJ, node, COLON, seen, name),)]
        return [rest + ((OBJ, node, AFTER, seen | {name}, None),)]
    if top[0] == ARR:
        return [rest + ((ARR, top[1], AFTER, top[3] + 1),)]
    return [below]  # a fixed text waits below the value


def _start(node: Node, c: str, below: tuple) -> list[tuple]:
    """Stacks after `c`, the first character of a value of `node`."""
    node = node.resolved()
    kind = node.kind
    if kind in ("anyof", "any"):
        return [s for option in node.options for s in _start(option, c, below)]
    if kind == "object":
        return [below + ((OBJ, node, OPEN, frozenset(), None),)] if c == "{" else []
    if kind == "array":
        return [below + ((ARR, node, OPEN, 0),)] if c == "[" else []
    if kind == "string":
        return [below + ((STR, None, None, 0),)] if c == '"' else []
    if kind == "enum":
        lits = tuple(lit for lit in node.literals if lit[0] == c)
        return _literal(lits, 1, below) if lits else []
    if c == "-":
        return [below + ((NUM, kind == "integer", "-", 0),)]
    if c in "0123456789":
        return [below + ((NUM, kind == "integer", "0" if c == "0" else "I", 1),)]
    return []


def _literal(lits: tuple, pos: int, below: tuple) -> list[tuple]:
    if all(len(lit) == pos for lit in lits):  # nothing longer can follow: done now
        return _resume(below)
    return [below + ((LIT, lits, pos),)]


def _feed_val(top: tuple, below: tuple, c: str) -> list[tuple]:
    if c == " " and top[2]:
        return [below + ((VAL, top[1], False),)]
    return _start(top[1], c, below)


def _feed_obj(top: tuple, below: tuple, c: str) -> list[tuple]:
    _, node, phase, seen, name = top
    if phase in (OPEN, NEXT, NEXT_NS):
        if c == " " and phase == NEXT:
            return [below + ((OBJ, node, NEXT_NS, seen, None),)]
        if c == '"':
            cands = None if node.extra is not None else tuple(
                node.key_text[k] for k in node.props if k not in seen)
            return [] if cands == () else [
                below + ((OBJ, node, KEY, seen, None), (STR, cands, "", 0))]
        if c == "}" and phase == OPEN and not node.required:
            return _resume(below)
        return []
    if phase == COLON:
        child = node.props.get(name, node.extra)
        return [below + ((OBJ, node, VALUE, seen, name), (VAL, child, True))] if c == ":" else []
    if c == "," and (node.extra is not None or any(k not in seen for k in node.props)):
        return [below + ((OBJ, node, NEXT, seen, None),)]
    if c == "}" and all(k in seen for k in node.required):
        return _resume(below)
    return []


def _feed_arr(top: tuple, below: tuple, c: str) -> list[tuple]:
    _, node, phase, count = top
    if phase == OPEN:
        if c == "]" and node.min_items == 0:
            return _resume(below)
        if node.max_items == 0:
            return []
        return _start(node.items, c, below + ((ARR, node, VALUE, 0),))
    if c == "," and (node.max_items is None or count < node.max_items):
        return [below + ((ARR, node, VALUE, count), (VAL, node.items, True))]
    if c == "]" and count >= node.min_items:
        return _resume(below)
    return []


def _feed_str(top: tuple, below: tuple, c: str) -> list[tuple]:
    _, cands, raw, esc = top
    if esc == -1:  # after a backslash
        if c not in '"\\/bfnrtu':
            return []
        esc = 4 if c == "u" else 0
    elif esc > 0:
        if c not in "0123456789abcdefABCDEF":
            return []
        esc -= 1
    elif c == '"':
        if cands is not None and raw not in cands:
            return []
        return _resume(below, raw) if raw is not None else _resume(below)
    elif c == "\\":
        esc = -1
    elif c < " ":
        return []
    if raw is not None:
        raw += c
        if cands is not None:
            cands = tuple(x for x in cands if x.startswith(raw))
            if not cands:
                return []
    return [below + ((STR, cands, raw, esc),)]


def _feed_num(top: tuple, below: tuple, c: str) -> list[tuple]:
    _, integer, sub, digits = top  # digits: of the current part (integer, fraction, exponent)
    nxt = _NUM_MOVES[sub].get(c)
    if integer and c in ".eE":
        nxt = None
    if nxt is not None and not c.isdigit():
        return [below + ((NUM, integer, nxt, 0),)]
    if nxt is not None and digits < (MAX_EXP_DIGITS if sub in "ESX" else MAX_DIGITS):
        return [below + ((NUM, integer, nxt, digits + 1),)]
    return _feed_all(_resume(below), c) if sub in NUM_DONE else []


def _feed_lit(top: tuple, below: tuple, c: str) -> list[tuple]:
    _, lits, pos = top
    out = _feed_all(_resume(below), c) if any(len(lit) == pos for lit in lits) else []
    nxt = tuple(lit for lit in lits if len(lit) > pos and lit[pos] == c)
    return out + (_literal(nxt, pos + 1, below) if nxt else [])


def _feed_text(top: tuple, below: tuple, c: str) -> list[tuple]:
    _, text, pos = top
    if text[pos] != c:
        return []
    return [below] if pos + 1 == len(text) else [below + ((TEXT, text, pos + 1),)]


_FEEDERS = {VAL: _feed_val, OBJ: _feed_obj, ARR: _feed_arr, STR: _feed_str, NUM: _feed_num,
            LIT: _feed_lit, TEXT: _feed_text}


# ------------------------------------------------------------ ending


def _lazily_done(frame: tuple) -> bool:
    """A number or literal that is complete here but could still grow."""
    return (frame[0] == NUM and frame[2] in NUM_DONE) or (
        frame[0] == LIT and any(len(lit) == frame[2] for lit in frame[1]))


def _can_end(stack: tuple) -> bool:
    if not stack:
        return True
    return _lazily_done(stack[-1]) and any(_can_end(s) for s in _resume(stack[:-1]))


def _close(stack: tuple) -> str:
    out = []
    while stack:
        top, below = stack[-1], stack[:-1]
        if top[0] == STR and below and below[-1][0] == OBJ and below[-1][2] == KEY:
            text, raw = _finish_key(top, below[-1])
            out.append(text)
            stack = _resume(below, raw)[0]
            continue
        out.append(_finish(top))
        stack = _resume(below)[0]
    return "".join(out)


def _finish_key(top: tuple, obj: tuple) -> tuple[str, str]:
    """(text that closes the key being written, the key's raw text): a required key still
    missing if one fits, else the shortest allowed one."""
    _, cands, raw, esc = top
    node, seen = obj[1], obj[3]
    if cands is not None:
        missing = [node.key_text[k] for k in node.required if k not in seen]
        fitting = [k for k in missing if k in cands] or sorted(cands, key=len)
        return fitting[0][len(raw):] + '"', fitting[0]
    pending = "n" if esc == -1 else "0" * esc
    base = raw + pending
    for suffix in _fresh_names():
        if json.loads(f'"{base + suffix}"') not in seen:
            return pending + suffix + '"', base + suffix


def _fresh_names() -> Iterable[str]:
    yield ""
    i = 0
    while True:
        yield str(i)
        i += 1


def _finish(frame: tuple) -> str:
    """Text that completes `frame` as a value (its own closing, not its parents')."""
    kind = frame[0]
    if kind == VAL:
        return frame[1].resolved().shortest
    if kind == STR:
        return ("n" if frame[3] == -1 else "0" * frame[3]) + '"'
    if kind == NUM:
        return "" if frame[2] in NUM_DONE else "0"
    if kind == LIT:
        return min((lit[frame[2]:] for lit in frame[1] if len(lit) >= frame[2]), key=len)
    if kind == TEXT:
        return frame[1][frame[2]:]
    if kind == ARR:
        node, count = frame[1], frame[3]
        item = node.items.resolved().shortest
        need = max(0, node.min_items - count)
        if frame[2] == OPEN:
            return ",".join([item] * need) + "]"
        return f",{item}" * need + "]"
    return _finish_object(frame)


def _finish_object(frame: tuple) -> str:
    _, node, phase, seen, name = frame
    if phase == COLON:
        value = node.props.get(name, node.extra).resolved().shortest
        return ":" + value + _finish_object((OBJ, node, AFTER, seen | {name}, None))
    missing = [k for k in node.required if k not in seen]
    pairs = [f'"{node.key_text[k]}":{node.props[k].resolved().shortest}' for k in missing]
    if phase in (NEXT, NEXT_NS) and not pairs:  # after a comma a key must come
        if node.extra is not None:
            key = next(k for k in _fresh_names() if k not in seen and k not in node.props)
            pairs = [f'"{key}":{node.extra.resolved().shortest}']
        else:
            options = [f'"{node.key_text[k]}":{v.resolved().shortest}'
                       for k, v in node.props.items() if k not in seen]
            pairs = [min(options, key=len)]
    if phase == AFTER:
        return "".join("," + p for p in pairs) + "}"
    return ",".join(pairs) + "}"
