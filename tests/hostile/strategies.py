"""Hypothesis strategies for values no door may accept, whatever field they land in."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

# Characters refused in every string (C0 controls but TAB/LF/CR, DEL, C1, lone surrogates).
_POISON_CHARS = st.one_of(
    st.sampled_from(["\x00", "\x1b", "\x7f", "\x85", "\x0b", "\x0c"]),
    st.characters(min_codepoint=0x01, max_codepoint=0x08),
    st.characters(min_codepoint=0x0E, max_codepoint=0x1F),
    st.characters(min_codepoint=0x80, max_codepoint=0x9F),
    st.characters(categories=["Cs"]),
)
# Control characters only: what a URL can carry (lone surrogates arrive as invalid UTF-8, read as U+FFFD).
CONTROL_CHARS = st.one_of(
    st.sampled_from(["\x00", "\x1b", "\x7f", "\x85"]),
    st.characters(min_codepoint=0x01, max_codepoint=0x08),
    st.characters(min_codepoint=0x80, max_codepoint=0x9F),
)
# Characters outside every broker-field alphabet (Unicode digits, fullwidth letters...): refused by fields.
_FOREIGN_CHARS = st.one_of(
    st.characters(categories=["Nd"], exclude_characters="0123456789"),
    st.characters(min_codepoint=0xFF10, max_codepoint=0xFF5A),
    st.sampled_from(["\u2028", "\u200b", "\ufeff", "\u0663", "\uff14"]),
)
_ANY_TEXT = st.text(max_size=12)


@st.composite
def poisoned_text(draw, poison=_POISON_CHARS) -> str:
    """A string with at least one refused character somewhere in it."""
    return draw(_ANY_TEXT) + draw(poison) + draw(_ANY_TEXT)


def loose_numbers() -> st.SearchStrategy[str]:
    """Strings Python's Decimal/int would accept but a plain ASCII decimal field must not."""
    return st.one_of(
        st.text(alphabet=st.characters(categories=["Nd"], exclude_characters="0123456789"), min_size=1, max_size=6),
        st.builds(lambda a, b: f"{a}_{b}", st.integers(1, 999), st.integers(0, 999)),
        st.builds(lambda a, e: f"{a}e{e}", st.integers(1, 9), st.integers(-5, 5)),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "0x10", "1,5", "١٠", "４", "1 0", "--1", "1..0", ""]),
    )


class DeepJSON:
    """JSON nested `depth` levels deep, kept as a description (printing the real value would overflow
    Hypothesis' reporter); `body()` writes it out, `value()` builds it."""

    def __init__(self, depth: int, as_object: bool) -> None:
        self.depth, self.as_object = depth, as_object

    def __repr__(self) -> str:
        return f"DeepJSON(depth={self.depth}, as_object={self.as_object})"

    def text(self) -> str:
        if self.as_object:
            return '{"a":' * self.depth + "1" + "}" * self.depth
        return "[" * self.depth + "1" + "]" * self.depth

    def value(self) -> Any:
        value: Any = 1
        for _ in range(self.depth):
            value = {"a": value} if self.as_object else [value]
        return value


def deep_json(min_depth: int = 21, max_depth: int = 3000) -> st.SearchStrategy[DeepJSON]:
    """Lists or objects nested deeper than REQUEST_MAX_JSON_DEPTH (20)."""
    return st.builds(DeepJSON, st.integers(min_depth, max_depth), st.booleans())


def huge_ints() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(min_value=10**40, max_value=10**4000), st.integers(max_value=-(10**40)))


def hostile_value() -> st.SearchStrategy[Any]:
    """One value that no field of any endpoint accepts."""
    poison = poisoned_text()
    return st.one_of(
        poison,
        deep_json(),
        st.lists(poison, min_size=1, max_size=3),
        st.dictionaries(poison, st.integers(), min_size=1, max_size=2),
        st.dictionaries(st.text(max_size=5), poison, min_size=1, max_size=2),
    )


def hostile_query_value() -> st.SearchStrategy[str]:
    """A query or path value: refused characters, or characters outside the broker-field alphabets."""
    return st.one_of(poisoned_text(), poisoned_text(_FOREIGN_CHARS))


def percent(text: str) -> str:
    """Percent-encode any string, lone surrogates included (as the raw, invalid UTF-8 bytes a client could send)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def body(data: Any) -> bytes:
    """JSON bytes for any value: surrogates escaped as \\udXXX, huge ints written out, DeepJSON inlined."""
    import sys

    deep: dict[str, str] = {}

    def placeholder(obj: Any) -> str:
        if isinstance(obj, DeepJSON):
            token = f"@@deep{len(deep)}@@"
            deep[json.dumps(token)] = obj.text()
            return token
        raise TypeError(type(obj))

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        text = json.dumps(data, ensure_ascii=True, default=placeholder)
    finally:
        sys.set_int_max_str_digits(limit)
    for token, inner in deep.items():
        text = text.replace(token, inner)
    return text.encode()


def materialize(data: Any) -> Any:
    """`data` with every DeepJSON built into the real nested value (for in-process clients)."""
    if isinstance(data, DeepJSON):
        return data.value()
    if isinstance(data, dict):
        return {k: materialize(v) for k, v in data.items()}
    if isinstance(data, list):
        return [materialize(v) for v in data]
    return data
