"""Text extraction from HTML (main text, boilerplate removed), PDF (Markdown-like: headings by
font size, paragraphs, page order) and DOCX (headings, paragraphs, tables as text).

Each raises ExtractError with a short reason for a file it cannot read, which the reader writes
to the rejects file.
"""

from __future__ import annotations

import statistics
from pathlib import Path


class ExtractError(Exception):
    """A file whose text cannot be extracted; the message is the reject reason."""


def html_text(html: str) -> str:
    """Main text of a web page with trafilatura: navigation, footers and ads removed;
    headings, lists and tables kept as Markdown-like text."""
    try:
        import trafilatura
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ExtractError("html_needs_trafilatura: pip install 'fullchain[data]'") from e
    text = trafilatura.extract(html, output_format="markdown", include_tables=True,
                               include_comments=False, favor_recall=True, deduplicate=False)
    return text or ""


def _line_size(line) -> float:
    from pdfminer.layout import LTChar
    sizes = [c.size for c in line if isinstance(c, LTChar)]
    return statistics.median(sizes) if sizes else 0.0


def _pdf_lines(path: str | Path, max_pages: int) -> list[tuple[int, str, float]]:
    """(block number, text, font size) per text line, in page and reading order."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTTextContainer
    out: list[tuple[int, str, float]] = []
    block = 0
    for i, page in enumerate(extract_pages(str(path), laparams=LAParams())):
        if i >= max_pages:
            break
        boxes = [el for el in page if isinstance(el, LTTextContainer)]
        boxes.sort(key=lambda el: (-el.y1, el.x0))  # top to bottom, then left to right
        for box in boxes:
            block += 1
            out += [(block, line.get_text().strip(), _line_size(line)) for line in box
                    if line.get_text().strip()]
    return out


def pdf_text(path: str | Path, *, max_pages: int = 500) -> str:
    """Text of a PDF, page by page, as Markdown-like blocks: lines set in a font clearly larger
    than the body's become ``#`` (largest) or ``##`` headings; other text boxes are paragraphs."""
    try:
        lines = _pdf_lines(path, max_pages)
    except ImportError as e:  # pragma: no cover
        raise ExtractError("pdf_needs_pdfminer: pip install 'fullchain[data]'") from e
    except Exception as e:  # noqa: BLE001 - a broken PDF may raise anything; never crash the run
        name = type(e).__name__
        reason = "encrypted_pdf" if "Encrypt" in name or "Password" in name else "broken_pdf"
        raise ExtractError(f"{reason}: {name}: {e}"[:300]) from e
    if not lines:
        return ""
    body = statistics.median(s for _, _, s in lines)
    top = max(s for _, _, s in lines)
    blocks: list[str] = []
    key = None
    for block, text, size in lines:
        heading = size > body * 1.15
        if (block, heading) != key or heading:
            blocks.append(("# " if size >= top * 0.99 else "## ") * heading + text)
        else:
            blocks[-1] += " " + text
        key = (block, heading)
    return "\n\n".join(blocks)


def docx_text(path: str | Path) -> str:
    """Text of a DOCX in body order: ``Heading N`` styles become ``#``×N, tables become rows of
    cells joined by `` | ``."""
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError as e:  # pragma: no cover
        raise ExtractError("docx_needs_python_docx: pip install 'fullchain[data]'") from e
    try:
        document = docx.Document(str(path))
        out = []
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph) and block.text.strip():
                style = block.style.name if block.style is not None else ""
                level = int(style.split()[-1]) if style.startswith("Heading ") and \
                    style.split()[-1].isdigit() else 0
                out.append("#" * level + " " * bool(level) + block.text.strip())
            elif isinstance(block, Table):
                out.append("\n".join(" | ".join(c.text.strip() for c in row.cells)
                                     for row in block.rows))
    except Exception as e:  # noqa: BLE001 - a broken DOCX (bad zip, bad XML) must not crash
        raise ExtractError(f"broken_docx: {type(e).__name__}: {e}"[:300]) from e
    return "\n\n".join(out)
