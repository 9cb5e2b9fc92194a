"""Model-fact citations point into the project's own docs/models.md, never at an outside spec."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS_DOC = ROOT / "docs" / "models.md"
# Where no reference to the external spec may appear.
SCANNED = ("vpr_ros", "docs", "README.md", "config", "launch")
# Where docs/models.md citations are checked against its headings.
CITING = ("vpr_ros", "docs")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".rst", ".cfg", ".toml", ".xml", ".msg"}

# "docs/models.md §5.5", "docs/models.md §4.3, §4.4", "docs/models.md §5.2/5.3", "... §5.5 step 4".
CITATION = re.compile(r"docs/models\.md((?:\s*(?:,|/|and)?\s*§?\d+(?:\.\d+)+)+)")
SECTION_NUMBER = re.compile(r"\d+(?:\.\d+)+")
HEADING = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def _files(names: tuple[str, ...]):
    for name in names:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts:
                    yield f


def _sections() -> set[str]:
    return set(HEADING.findall(MODELS_DOC.read_text(encoding="utf-8")))


def test_models_doc_exists_with_numbered_sections():
    sections = _sections()
    for model in ("1", "2", "3", "4", "5", "6", "7"):
        assert model in sections, f"docs/models.md has no section {model}"
        assert any(s.startswith(model + ".") for s in sections), f"section {model} has no subsections"


def test_nothing_mentions_the_external_spec():
    offenders = [
        f"{f.relative_to(ROOT)}:{n}"
        for f in _files(SCANNED)
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if "models_spec" in line
    ]
    assert not offenders, "cite docs/models.md instead of models_spec: " + ", ".join(offenders)


def test_every_models_doc_citation_names_an_existing_section():
    sections = _sections()
    citations, missing = 0, []
    for f in _files(CITING):
        text = f.read_text(encoding="utf-8", errors="replace")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            for number in SECTION_NUMBER.findall(match.group(1)):
                citations += 1
                if number not in sections:
                    missing.append(f"{f.relative_to(ROOT)}:{line} §{number}")
    assert citations, "no docs/models.md citations found (the pattern no longer matches?)"
    assert not missing, "citations of sections docs/models.md does not have: " + ", ".join(missing)


def test_citation_pattern():
    def numbers(text: str) -> list[str]:
        return [n for m in CITATION.finditer(text) for n in SECTION_NUMBER.findall(m.group(1))]

    assert numbers("(docs/models.md §5.5 step 4)") == ["5.5"]
    assert numbers("(docs/models.md §4.3, §4.4)") == ["4.3", "4.4"]
    assert numbers("(docs/models.md §5.2/5.3)") == ["5.2", "5.3"]
    assert numbers("see docs/models.md") == []
