"""Size limits of STYLE.md for src/fullchain/**/*.py, run by `make lint`.

Files: warn above 400 lines, fail above 600. Functions (def line to last line, found with
`ast`): warn above 40 lines, fail above 80. Prints a table; exits 1 on any failure.
Usage: python bench/check_size.py [ROOT]   (ROOT defaults to src/fullchain)
"""

import ast
import sys
from pathlib import Path

FILE_LIMITS = (400, 600)  # (warn above, fail above), in lines
FUNCTION_LIMITS = (40, 80)


def judge(lines: int, limits: tuple[int, int]) -> str | None:
    """'FAIL', 'warn' or None for a span of ``lines`` against (warn, fail) limits."""
    warn, fail = limits
    return "FAIL" if lines > fail else "warn" if lines > warn else None


def check_file(path: Path, shown: str) -> list[tuple[str, int, int, str]]:
    """(level, lines, limit, where) for the file itself and each oversized function in it."""
    text = path.read_text(encoding="utf-8")
    rows = []
    lines = len(text.splitlines())
    if level := judge(lines, FILE_LIMITS):
        rows.append((level, lines, FILE_LIMITS[level == "FAIL"], shown))
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            span = node.end_lineno - node.lineno + 1
            if level := judge(span, FUNCTION_LIMITS):
                limit = FUNCTION_LIMITS[level == "FAIL"]
                rows.append((level, span, limit, f"{shown}:{node.lineno} {node.name}()"))
    return rows


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "src" / "fullchain"
    rows = []
    for path in sorted(root.rglob("*.py")):
        rows += check_file(path, str(path.relative_to(root.parent)))
    if rows:
        print(f"{'level':<6}{'lines':>6}{'limit':>7}  where")
        for level, lines, limit, where in sorted(rows, key=lambda r: (r[0] != "FAIL", -r[1])):
            print(f"{level:<6}{lines:>6}{limit:>7}  {where}")
    failures = sum(row[0] == "FAIL" for row in rows)
    print(f"size check: {failures} over the hard limit, {len(rows) - failures} warnings")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
