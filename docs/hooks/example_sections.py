"""A griffe extension for the API pages, adapting jaxkeops's plain-text docstrings to Markdown
without changing them:

- their doctests are titled `Example:`, which Google style reads as a note (an admonition
  rendered as Markdown, where `>>>` lines and `[...]` outputs are mangled): the title becomes
  `Examples:`, the section griffe renders as Python code;
- their prose writes shapes as `(*batch, M, D)` and products as `x ** 2`, which Markdown would
  read as emphasis: outside code spans and before the examples, `*` is escaped.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_TITLE = re.compile(r"^(\s*)Examples?:[ \t]*$", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")


# `*args:` / `**options (dict):` starting an entry of an Args section: a name, not emphasis.
_STARRED_PARAMETER = re.compile(r"^(\s*\*{1,2}\w+)")


def _escape_line(line: str) -> str:
    parameter = _STARRED_PARAMETER.match(line)
    head, rest = (parameter.group(1), line[parameter.end():]) if parameter else ("", line)
    pieces = _CODE_SPAN.split(rest)
    return head + "".join(piece if piece.startswith("`") else piece.replace("*", r"\*")
                          for piece in pieces)


def _escape_stars(prose: str) -> str:
    return "\n".join(_escape_line(line) for line in prose.split("\n"))


def markdown_docstring(text: str) -> str:
    """`text` with its example sections titled `Examples:` and its prose's stars escaped."""
    match = _EXAMPLE_TITLE.search(text)
    prose, examples = (text, "") if match is None else (text[:match.start()],
                                                        text[match.start():])
    return _escape_stars(prose) + _EXAMPLE_TITLE.sub(r"\1Examples:", examples)


class ExampleSections(griffe.Extension):
    """Applies `markdown_docstring` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
