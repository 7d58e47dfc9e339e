"""One document structure rendered twice: GitHub-flavoured Markdown and a single HTML page.

A `Document` is a title, introductory paragraphs and `Section`s whose blocks are paragraphs (str, with `code`
spans in backticks), `Table`s of preformatted cells and `Image`s (files referenced by relative paths), so the
two renderings always show the same content.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field


@dataclass
class Table:
    """Preformatted cells; rows whose index is in `highlight` are set in bold."""

    header: list[str]
    rows: list[list[str]]
    highlight: frozenset[int] = frozenset()


@dataclass
class Image:
    """A PNG in the output folder (`src` relative to it) with a caption (backtick spans are code, as in paragraphs)."""

    src: str
    caption: str


@dataclass
class Section:
    """A titled list of blocks: paragraphs (str), tables and images."""

    title: str
    blocks: list[str | Table | Image] = field(default_factory=list)


@dataclass
class Document:
    """The report: a title, introductory paragraphs and sections."""

    title: str
    intro: list[str]
    sections: list[Section]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown."""
    out = [f"# {doc.title}", ""]
    for p in doc.intro:
        out += [p, ""]
    for sec in doc.sections:
        out += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(_md_cell(c) for c in block.header) + " |")
                out.append("|" + "---|" * len(block.header))
                for i, row in enumerate(block.rows):
                    cells = [_md_cell(c) for c in row]
                    if i in block.highlight:
                        cells = [f"**{c}**" if c else c for c in cells]
                    out.append("| " + " | ".join(cells) + " |")
            elif isinstance(block, Image):
                alt = re.sub(r"[\[\]`]", "", block.caption)  # brackets would end the alt text early
                out.append(f"![{alt}]({block.src})\n\n*{block.caption}*")
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


def html_inline(text: str) -> str:
    """Escape `text` for HTML and turn backtick spans into <code> elements."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.hl{font-weight:bold;background:#fff7d6}"
    "code{background:#f3f3f3;padding:0 3px}figure{margin:1em 0}img{max-width:100%}figcaption{color:#555}"
)


def render_html(doc: Document) -> str:
    """The document as one HTML page with inline CSS; images stay separate files."""
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        f"<title>{html.escape(doc.title.replace('`', ''))}</title>\n<style>{_CSS}</style>\n</head>\n<body>",
        f"<h1>{html_inline(doc.title)}</h1>",
        *(f"<p>{html_inline(p)}</p>" for p in doc.intro),
    ]
    for sec in doc.sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        for block in sec.blocks:
            if isinstance(block, Table):
                out.append("<table>\n<tr>" + "".join(f"<th>{html_inline(c)}</th>" for c in block.header) + "</tr>")
                for i, row in enumerate(block.rows):
                    cls = ' class="hl"' if i in block.highlight else ""
                    out.append(f"<tr{cls}>" + "".join(f"<td>{html_inline(c)}</td>" for c in row) + "</tr>")
                out.append("</table>")
            elif isinstance(block, Image):
                src, alt = html.escape(block.src), html.escape(block.caption.replace("`", ""))
                cap = html_inline(block.caption)
                out.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{cap}</figcaption></figure>')
            else:
                out.append(f"<p>{html_inline(block)}</p>")
    out.append("</body>\n</html>\n")
    return "\n".join(out)
