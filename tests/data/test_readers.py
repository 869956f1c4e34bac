"""Readers: every format, and bad input counted and reported instead of crashing."""

import gzip
import json

import pytest

from fullchain.data.extract import docx_text, html_text, pdf_text
from fullchain.data.readers import list_inputs, plan_shards, read_file


def read_all(path):
    rejects = []
    f = list_inputs([str(path)])[0]
    docs = list(read_file(f, lambda p, line, why: rejects.append((p, line, why))))
    return docs, rejects


def test_jsonl_plain_gz_zst_with_bad_lines(tmp_path):
    import zstandard
    lines = [json.dumps({"id": "a", "text": "first"}), "{broken", json.dumps({"text": "no id"}),
             json.dumps({"id": "c"}), ""]
    raw = ("\n".join(lines) + "\n").encode()
    (tmp_path / "p.jsonl").write_bytes(raw)
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    for name in ("p.jsonl", "g.jsonl.gz", "z.jsonl.zst"):
        docs, rejects = read_all(tmp_path / name)
        assert [d["text"] for d in docs] == ["first", "no id"]
        assert docs[0]["id"] == "a" and docs[1]["id"].endswith(f"{name}:3")
        assert [(line, why.split(":")[0]) for _, line, why in rejects] == \
            [(2, "invalid_json"), (4, "no_text")]


def test_undecodable_truncated_and_empty_files(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n' * 100)[:30])
    bad = (tmp_path / "bad.jsonl")
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    for name, why in [("latin.txt", "not_utf8"), ("empty.md", "empty_file"),
                      ("cut.jsonl.gz", "unreadable"), ("bad.jsonl", "not_utf8")]:
        _, rejects = read_all(tmp_path / name)
        assert rejects and rejects[0][2].startswith(why), (name, rejects)
    assert read_all(bad)[1][0][1] == 2  # the line is named


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["one", None]}), tmp_path / "t.parquet")
    docs, rejects = read_all(tmp_path / "t.parquet")
    assert [(d["id"], d["text"]) for d in docs] == [("x", "one")]
    assert rejects[0][1:] == (2, "no_text: 'text' is not a string")


def test_text_markdown_folder_and_shard_plan(tmp_path):
    for i in range(5):
        (tmp_path / "docs" / f"{i}.md").parent.mkdir(exist_ok=True)
        (tmp_path / "docs" / f"{i}.md").write_text(f"# Title {i}\n\nBody {i}.", encoding="utf-8")
    (tmp_path / "docs" / "skip.bin").write_bytes(b"\0")
    files = list_inputs([str(tmp_path / "docs")])
    assert [f["source"] for f in files] == ["docs"] * 5
    shards = plan_shards(files, shard_bytes=40)
    assert sum(len(s) for s in shards) == 5 and len(shards) > 1
    docs = list(read_file(files[0], lambda *a: None))
    assert docs[0]["text"] == "# Title 0\n\nBody 0."


def test_document_ids_do_not_depend_on_where_the_corpus_lies(tmp_path):
    """Ids (and so the train/val split) are the same wherever the corpus is copied."""
    import shutil
    (tmp_path / "a" / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "docs" / "sub" / "x.md").write_text("some text", encoding="utf-8")
    (tmp_path / "a" / "rows.jsonl").write_text('{"text": "a row"}\n', encoding="utf-8")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")

    def ids(root):
        given = [str(root / "docs"), str(root / "rows.jsonl"), str(root / "docs" / "*" / "*.md")]
        return [d["id"] for f in list_inputs(given) for d in read_file(f, lambda *a: None)]

    assert ids(tmp_path / "a") == ids(tmp_path / "elsewhere" / "b") == \
        ["docs/sub/x.md", "rows.jsonl:1", "docs/sub/x.md"]


def test_html_main_text_without_boilerplate():
    body = " ".join(f"Paragraph {i} tells the story of the river and the old mill." for i in
                    range(6))
    html = f"""<html><head><title>t</title><script>var x = 1;</script></head><body>
    <nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
    <article><h1>The River Mill</h1><p>{body}</p><p>Second paragraph about the miller and his
    family, who lived there for many years.</p></article>
    <footer>Copyright 2024 Example Corp. All rights reserved. Privacy policy.</footer>
    </body></html>"""
    text = html_text(html)
    assert "The River Mill" in text and "Paragraph 5" in text
    assert text.index("The River Mill") < text.index("Paragraph 0") < text.index("miller")
    assert "var x" not in text and "About us" not in text and "Copyright" not in text


def _pdf(path, pages, *, password=None):
    from fpdf import FPDF
    pdf = FPDF()
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    for heading, paras in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 20)
        pdf.cell(0, 12, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 11)
        for para in paras:
            pdf.multi_cell(0, 6, para)
            pdf.ln(4)
    pdf.output(str(path))


def test_pdf_text_in_order_with_headings(tmp_path):
    pages = [("Chapter One", ["The first paragraph is about rivers.",
                              "The second is about hills."]),
             ("Chapter Two", ["A third paragraph on page two.", "Name | Age | City"])]
    _pdf(tmp_path / "a.pdf", pages)
    text = pdf_text(tmp_path / "a.pdf")
    order = ["# Chapter One", "rivers", "hills", "# Chapter Two", "page two", "Name | Age | City"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions), text


def test_broken_and_encrypted_pdf_are_rejected(tmp_path):
    _pdf(tmp_path / "good.pdf", [("Title", ["Some text here."])])
    (tmp_path / "broken.pdf").write_bytes((tmp_path / "good.pdf").read_bytes()[:200])
    _pdf(tmp_path / "locked.pdf", [("Secret", ["Hidden text."])], password="pw")
    _, rejects = read_all(tmp_path / "broken.pdf")
    assert rejects[0][2].startswith(("broken_pdf", "no_text_extracted"))
    _, rejects = read_all(tmp_path / "locked.pdf")
    assert rejects[0][2].startswith("encrypted_pdf"), rejects


def test_docx(tmp_path):
    docx = pytest.importorskip("docx")
    d = docx.Document()
    d.add_heading("Report", level=1)
    d.add_paragraph("The opening paragraph.")
    table = d.add_table(rows=2, cols=2)
    for r, row in enumerate([("a", "b"), ("c", "d")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_heading("Details", level=2)
    d.add_paragraph("Closing words.")
    d.save(tmp_path / "r.docx")
    assert docx_text(tmp_path / "r.docx") == \
        "# Report\n\nThe opening paragraph.\n\na | b\nc | d\n\n## Details\n\nClosing words."
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not a zip")
    assert read_all(tmp_path / "bad.docx")[1][0][2].startswith("broken_docx")
