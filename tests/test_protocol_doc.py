"""docs/evaluation-protocol.md: every "rule N" that the code cites is stated there."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "evaluation-protocol.md"
SPEC = REPO_ROOT.parent / "shared" / "specs" / "evaluation-protocol.md"
CITATION = re.compile(r"\b[Rr]ules?\s+(\d+[a-z]?(?:\s*(?:[-–]|,|and)\s*\d+[a-z]?)*)")


def numbered_rules(text: str) -> set[str]:
    """'12' for a line '12. ...', '28b' for an indented 'b. ...' under rule 28."""
    rules, current = set(), None
    for line in text.splitlines():
        top = re.match(r"^(\d+)\. \S", line)
        sub = re.match(r"^\s+([a-z])\. \S", line)
        if top:
            current = top.group(1)
            rules.add(current)
        elif sub and current is not None:
            rules.add(current + sub.group(1))
    return rules


def cited_rules(text: str) -> set[str]:
    """Rule numbers of 'rule 53', 'rules 28-29', 'rules 18, 20, 21', 'rule 35a'."""
    cited = set()
    for match in CITATION.finditer(text):
        parts = re.split(r"\s*(?:,|and)\s*", match.group(1))
        for part in parts:
            ends = re.split(r"\s*[-–]\s*", part)
            if len(ends) == 2 and ends[0].isdigit() and ends[1].isdigit():
                cited.update(str(n) for n in range(int(ends[0]), int(ends[1]) + 1))
            else:
                cited.update(ends)
    return cited


def test_rules_are_numbered_one_to_sixty_eight():
    rules = numbered_rules(DOC.read_text(encoding="utf-8"))
    assert {r for r in rules if r.isdigit()} == {str(n) for n in range(1, 69)}
    assert {"28a", "28f", "35a", "35c"} <= rules


def test_every_citation_in_the_code_resolves():
    sources = [p for folder in ("isegm", "scripts", "tests", "models")
               for p in sorted((REPO_ROOT / folder).rglob("*.py"))]
    stated = numbered_rules(DOC.read_text(encoding="utf-8"))
    unresolved = {}
    for path in sources:
        for rule in cited_rules(path.read_text(encoding="utf-8")) - stated:
            unresolved.setdefault(rule, []).append(str(path.relative_to(REPO_ROOT)))
    assert not unresolved, f"cited rules missing from {DOC.name}: {unresolved}"
    assert len(sources) > 50


def test_citation_parser():
    assert cited_rules("see rules 28-29 and rule 35a; Rules 18, 20, 21") == \
        {"28", "29", "35a", "18", "20", "21"}
    assert numbered_rules("27. x\n28. y\n    a. z\n    b. w\n") == {"27", "28", "28a", "28b"}


def test_same_numbers_as_the_specification():
    if not SPEC.is_file():
        pytest.skip(f"the protocol specification is not beside the checkout ({SPEC})")
    assert numbered_rules(DOC.read_text(encoding="utf-8")) == \
        numbered_rules(SPEC.read_text(encoding="utf-8"))
