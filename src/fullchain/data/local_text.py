"""Real text found on this machine, for the demo's data stage: the Python standard library's
docstrings (one Markdown file per module) and the Debian package copyright files (many of them
are near-copies of the same licences: real work for dedup)."""

from __future__ import annotations

import ast
import json
import sysconfig
from pathlib import Path


def _module_doc(path: Path) -> str:
    """A module's docstrings as Markdown: the module's, then each class's and function's."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    parts = []
    if doc := ast.get_docstring(tree):
        parts.append(f"# {path.stem}\n\n{doc}")
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and (doc := ast.get_docstring(node)):
            parts.append(f"## {node.name}\n\n{doc}")
    return "\n\n".join(parts)


# packages of every Debian base system: taken first, so that what else is installed (CI adds
# chromium and its libraries) does not change a small selection, nor the demo's losses. The
# first ones come in groups built from one source package, whose copyright files are identical:
# duplicates that the quick demo's dedup must find.
_BASE_PACKAGES = (
    "libpam0g", "libpam-modules", "libpam-runtime", "libtinfo6", "ncurses-base", "ncurses-bin",
    "libsemanage2", "libsemanage-common", "libaudit1", "libaudit-common",
    "base-files", "bash", "coreutils", "dpkg", "apt", "libc6", "tar", "gzip", "sed", "grep",
    "findutils", "diffutils", "debianutils", "hostname", "login", "passwd", "util-linux",
    "mount", "perl-base", "sensible-utils", "init-system-helpers", "bsdutils",
    "dash", "debconf", "gpgv", "libacl1", "libattr1", "libblkid1", "libbz2-1.0", "libcrypt1",
    "libgcc-s1", "liblz4-1", "liblzma5", "libmount1", "libselinux1", "libsmartcols1",
    "libstdc++6", "libuuid1", "libzstd1", "zlib1g", "mawk")


def _copyright_files(root: Path = Path("/usr/share/doc")) -> list[Path]:
    """The Debian base packages' copyright files, then every other package's, by name."""
    base = [root / name / "copyright" for name in _BASE_PACKAGES]
    base = [p for p in base if p.is_file()]
    taken = set(base)
    others = sorted(p for p in root.glob("*/copyright") if p not in taken)
    return base + others


def write_local_text(out: Path, *, max_modules: int = 120, max_copyrights: int = 200) -> dict:
    """Write ``out/stdlib/*.md`` and ``out/licenses/*.txt``; return how many of each."""
    out = Path(out)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (out / "stdlib").mkdir(parents=True, exist_ok=True)
    modules = 0
    for path in sorted(stdlib.glob("*.py"))[:max_modules]:
        text = _module_doc(path)
        if text:
            (out / "stdlib" / f"{path.stem}.md").write_text(text + "\n", encoding="utf-8")
            modules += 1
    (out / "licenses").mkdir(parents=True, exist_ok=True)
    copyrights = 0
    for path in _copyright_files()[:max_copyrights]:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        (out / "licenses" / f"{path.parent.name}.txt").write_bytes(data)
        copyrights += 1
    return {"stdlib_modules": modules, "copyright_files": copyrights}


def write_forum(out: Path, eval_file: Path, *, leaks: int = 3) -> int:
    """A small 'forum dump' JSONL: a few posts that copy eval questions verbatim (planted leaks
    the decontamination step must catch), a cross-posted message (a near duplicate), one
    malformed line and one post in French."""
    rows = [json.loads(line) for line in eval_file.read_text(encoding="utf-8").splitlines()]
    questions = [r["question"] for r in rows if r.get("lang") == "en"][:leaks]
    lines = [json.dumps({"id": f"forum-{i}", "text": f"Quiz night! Here is one I was asked: {q} "
                         "Nobody at our table knew the answer, so we guessed and moved on to "
                         "the next round, which was about the history of the old harbour."})
             for i, q in enumerate(questions)]
    # a cross-post: the same message in two threads, with another greeting (a near duplicate)
    post = ("we walked along the old harbour wall this morning and counted the fishing boats "
            "that came back before noon. The light was soft, the water was calm, and the market "
            "by the lighthouse was already busy with people buying bread, cheese and the first "
            "apples of the season. If you visit the town in autumn, take the small ferry across "
            "the bay in the late afternoon, when the cliffs turn gold and the gulls follow the "
            "boats home.")
    for i, greeting in enumerate(["Hello everyone, ", "Hi all, and sorry for the cross-post: "]):
        lines.append(json.dumps({"id": f"forum-harbour-{i}", "text": greeting + post}))
    lines.append('{"id": "forum-broken", "text": "an unterminated post')
    lines.append(json.dumps({"id": "forum-fr", "text": "Bonjour à tous, je cherche un bon "
                             "livre sur l'histoire de la ville et de son port, merci beaucoup."}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(questions)
