"""CNTK reader configs (BrainScript text) -> plain records: the config language alone.

A small parser (records, ``a:b`` arrays, ``$var$`` substitution, the legacy ImageReader form) that
knows nothing of the transforms: it returns dicts and lists, and ``transforms.transforms_from_config``
turns the ``{ type = ... }`` records into a Pipeline. So this module imports no image code, and the
import goes one way (transforms -> config).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

_TOKEN_RE = re.compile(r"""
    (?P<newline>\n) | (?P<space>[ \t\r\f\v]+) | (?P<comment>\#[^\n]*|//[^\n]*)
  | (?P<string>"[^"\n]*"|'[^'\n]*') | (?P<punct>[\[\]{}()=:;,])
  | (?P<word>[^\s\[\]{}()=:;,"'\#]+) | (?P<bad>.)""", re.X)
_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_VAR_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)\$")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int


def _scalar(word: str) -> Any:
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    if _NUMBER_RE.fullmatch(word):
        return int(word) if re.fullmatch(r"[-+]?\d+", word) else float(word)
    return word


class _Parser:
    """Recursive descent over BrainScript config: ``name = value`` members in ``[ ]`` or ``{ }``
    records, ``( a : b )`` arrays, ``a:b`` colon arrays, strings, numbers, bare words, ``#`` and
    ``//`` comments. ``[ {..} : {..} ]`` (brackets around records) is read as an array too."""

    def __init__(self, text: str, source: str):
        self.source, self.pos, self.tokens = source, 0, []
        line = 1
        for m in _TOKEN_RE.finditer(text):
            kind = m.lastgroup
            if kind == "bad":
                raise ValueError(f"{source}, line {line}: unexpected character {m.group()!r}")
            if kind in ("string", "punct", "word"):
                self.tokens.append(_Token(kind, m.group(), line))
            line += m.group().count("\n")
        self.last_line = self.tokens[-1].line if self.tokens else 1  # where an unclosed text ends

    def error(self, message: str, tok: _Token | None = None) -> ValueError:
        return ValueError(f"{self.source}, line {tok.line if tok else self.last_line}: {message}")

    def peek(self, *punct: str) -> _Token | None:
        """The next token; with ``punct``, only if it is one of those punctuation marks."""
        tok = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        if punct and (tok is None or tok.kind != "punct" or tok.text not in punct):
            return None
        return tok

    def take(self, what: str) -> _Token:
        tok = self.peek()
        if tok is None:
            raise self.error(f"unexpected end of text, expected {what}")
        self.pos += 1
        return tok

    def document(self) -> Any:
        """A whole text: members of an implicit top record, or one bare value (a transforms list)."""
        if self.peek("[", "(", "{"):
            value = self.value()
            if self.peek():
                raise self.error(f"unexpected {self.peek().text!r} after the value", self.peek())
            return value
        return self.members(None, None)

    def members(self, close: str | None, opened: _Token | None) -> dict:
        out: dict[str, Any] = {}
        while True:
            tok = self.peek()
            if tok is None:
                if close:
                    raise self.error(f"'{opened.text}' opened at line {opened.line} is not closed")
                return out
            self.pos += 1
            if tok.kind == "punct" and tok.text in ";,":
                continue
            if close and tok.kind == "punct" and tok.text == close:
                return out
            if tok.kind != "word":
                raise self.error(f"expected a name, got {tok.text!r}", tok)
            if self.peek("="):
                self.pos += 1
            elif not self.peek("[", "{", "("):
                raise self.error(f"expected '=' after {tok.text!r}", self.peek() or tok)
            out[tok.text] = self.value()

    def value(self) -> Any:
        items = [self.atom()]
        while self.peek(":"):
            self.pos += 1
            items.append(self.atom())
        return items if len(items) > 1 else items[0]

    def atom(self) -> Any:
        tok = self.take("a value")
        if tok.kind == "string":
            return tok.text[1:-1]
        if tok.kind == "word":
            return _scalar(tok.text)
        if tok.text == "{" or (tok.text == "[" and not self.peek("[", "{", "(")):
            return self.members("}" if tok.text == "{" else "]", tok)
        if tok.text in "[(":
            return self.array(")" if tok.text == "(" else "]", tok)
        raise self.error(f"unexpected {tok.text!r}", tok)

    def array(self, close: str, opened: _Token) -> list:
        if self.peek(close):
            self.pos += 1
            return []
        value = self.value()
        end = self.take(f"'{close}' closing the '{opened.text}' of line {opened.line}")
        if end.text != close:
            raise self.error(f"expected '{close}' closing the '{opened.text}' of line {opened.line}, "
                             f"got {end.text!r}", end)
        return value if isinstance(value, list) else [value]


def parse_config(text: str, source: str = "<config>") -> Any:
    """BrainScript config text -> nested dicts/lists/scalars (``a:b`` becomes a list)."""
    return _Parser(text, source).document()


_LEGACY_GROUPS = (  # legacy ImageReader feature keys, in the order CNTK applied the transforms
    ("Crop", ("cropType", "cropSize", "sideRatio", "areaRatio", "aspectRatio", "jitterType", "hflip")),
    ("Scale", ("width", "height", "channels", "interpolations", "scaleMode", "padValue")),
    ("Color", ("brightnessRadius", "contrastRadius", "saturationRadius")),
    ("Intensity", ("intensityFile", "intensityStdDev")),
    ("Mean", ("meanFile", "meanLayout")),
)


def _legacy_transforms(features: Mapping, where: str) -> list[dict]:
    """An old ImageReader ``features = [ width = .. cropType = .. ]`` block -> transform records."""
    known = {key for _, keys in _LEGACY_GROUPS for key in keys}
    unknown = sorted(set(features) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} in an ImageReader features block; "
                         f"known: {', '.join(sorted(known))}")
    out = []
    for type_name, keys in _LEGACY_GROUPS:
        record = {k: features[k] for k in keys if k in features}
        if record or type_name in ("Crop", "Scale"):
            out.append({"type": type_name, **record})
    return out


def _collect(node: Any, path: str, out: dict[str, list]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _collect(item, f"{path}[{i}]", out)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        sub = f"{path}.{key}" if path else key
        if key == "transforms":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) for item in items):
                raise ValueError(f"{sub}: expected a list of {{ type = ... }} records")
            out[path or key] = items
        elif isinstance(value, dict) and {"width", "height"} <= set(value) and "type" not in value:
            out[sub] = _legacy_transforms(value, sub)
        else:
            _collect(value, sub, out)


def _substitute(node: Any, variables: Mapping[str, Any]) -> Any:
    """Replace ``$name$`` in strings; a string that is exactly one variable takes its value's type."""
    if isinstance(node, dict):
        return {k: _substitute(v, variables) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, variables) for v in node]
    for _ in range(5):  # variables may refer to variables
        if not isinstance(node, str) or not _VAR_RE.search(node):
            break
        whole = _VAR_RE.fullmatch(node)
        if whole and whole.group(1) in variables:
            node = variables[whole.group(1)]
        else:
            node = _VAR_RE.sub(lambda m: str(variables.get(m.group(1), m.group())), node)
    return node


def find_pipelines(text: str, variables: Mapping[str, Any] | None = None,
                   source: str = "<config>") -> dict[str, list[dict]]:
    """Every transform list in a config text, by dotted path (e.g. ``Train.reader.deserializers[0].input.features``).

    A bare list (``[ {..} : {..} ]``) is named "". Legacy ImageReader feature blocks become
    Crop, Scale[, Color, Intensity, Mean] lists. ``$var$`` takes the text's top-level scalar
    assignments (``RootDir = .``), overridden by ``variables``.
    """
    tree = parse_config(text, source)
    if isinstance(tree, list) or (isinstance(tree, dict) and "type" in tree):
        found = {"": tree if isinstance(tree, list) else [tree]}
    else:
        found = {}
        _collect(tree, "", found)
    scalars = {k: v for k, v in tree.items() if not isinstance(v, (dict, list))} if isinstance(tree, dict) else {}
    return _substitute(found, {**scalars, **(variables or {})})


def pick_pipeline(found: dict[str, list], section: str | None, source: str) -> tuple[str, list]:
    """The one transform list of ``find_pipelines``' result that ``section`` names: (its path, its records)."""
    names = list(found)
    if section is not None:
        pattern = re.compile(rf"(^|\.){re.escape(section)}(\.|\[|$)")
        names = [n for n in names if n == section or pattern.search(n)]
    if len(names) == 1:
        return names[0], found[names[0]]
    listing = "; ".join(repr(n) for n in found) or "none"
    what = "no" if not names else "several"
    raise ValueError(f"{source}: {what} transform lists{f' match section {section!r}' if section else ''}; "
                     f"pass section= one of: {listing}")
