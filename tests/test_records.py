"""Every figure the docs state equals its record in docs/records/, to the precision the docs print it.

A record is one measuring command: ``{"command", "commit", "machine", "date", "figures", "claims"}`` (plus
``"extract"`` for the fast ones that ``python tests/regenerate_records.py`` reruns, ``"source"`` for the slow ones
taken from a documented measurement). Figures are stored as the code computes them: accuracies and other shares
as fractions (0.535), ratios as ratios (2.35), counts as ints, rates and times in the unit the docs name.

``claims`` maps a page to the passages that state the record's figures, each a ``str.format`` template over the
figures, where a field may scale its figure: ``**{best_val_acc:.1%} validation accuracy**`` or
``{test_s0*100:.1f}`` (a percent column without the sign) or ``{flops/1e6:.1f}M``. The rendered passage must be
in the page (whitespace as Markdown reads it), and the record's command in the same section, or, in README's
headline table, in the same row. Every bold figure of that table is a claim of some record, or its row says
"measured once on <date>".
"""

from __future__ import annotations

import copy
import json
import re
import string
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "docs" / "records").glob("*.json"))}
FIELD = re.compile(r"^(\w+)(?:([*/])(\d+(?:e\d+)?))?$")
HEADLINE = "## Headline results"


def norm(text: str) -> str:
    """Text as Markdown reads it: continuation lines joined, runs of whitespace one space."""
    return " ".join(text.replace("\\\n", " ").split())


class Figures(string.Formatter):
    def get_field(self, field_name, args, kwargs):
        match = FIELD.match(field_name)
        assert match, f"bad field {{{field_name}}}: expected NAME, NAME*K or NAME/K"
        name, op, k = match.groups()
        value = kwargs[name]
        return (value if op is None else value * float(k) if op == "*" else value / float(k)), field_name


def render(template: str, figures: dict) -> str:
    return norm(Figures().vformat(template, (), figures))


def sections(markdown: str) -> list[str]:
    """The page cut at its ``#``/``##`` headings (outside code fences), each part normalised."""
    parts, fenced, current = [], False, []
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        if not fenced and re.match(r"#{1,2} ", line) and current:
            parts, current = [*parts, "\n".join(current)], []
        current.append(line)
    return [norm(p) for p in [*parts, "\n".join(current)]]


def headline_rows(readme: str) -> list[str]:
    table = readme.split(HEADLINE, 1)[1].split("\n## ", 1)[0]
    return [norm(line) for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


def claim_errors(records: dict, pages: dict[str, str]) -> list[str]:
    """Each claim whose rendered text is not in its page, or not next to its record's command."""
    errors = []
    rows = headline_rows(pages["README.md"])
    for name, record in records.items():
        command = norm(record["command"])
        for page, templates in record["claims"].items():
            for template in templates:
                try:
                    text = render(template, record["figures"])
                except KeyError as missing:
                    errors.append(f"{name}: {page} claim {template!r} names no figure {missing}")
                    continue
                where = [s for s in sections(pages[page]) if text in s]
                if not where:
                    errors.append(f"{name}: {page} should say {text!r} (record {name}.json)")
                elif page == "README.md" and any(text in r for r in rows):
                    if not any(text in r and f"`{command}" in r for r in rows):
                        errors.append(f"{name}: README's row with {text!r} should give the command `{command}`")
                elif not any(command in s for s in where):
                    errors.append(f"{name}: {page}: the section with {text!r} should give the command {command!r}")
    return errors


def read_pages(records: dict) -> dict[str, str]:
    return {page: (ROOT / page).read_text() for r in records.values() for page in r["claims"]} | {
        "README.md": (ROOT / "README.md").read_text()}


def test_every_record_says_what_measured_it_where_and_when():
    assert RECORDS, "no records in docs/records/"
    for name, r in RECORDS.items():
        for key in ("command", "commit", "machine", "date", "figures", "claims"):
            assert r.get(key), f"{name}.json: {key!r} is missing or empty"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["date"]), f"{name}.json: date {r['date']!r} is not YYYY-MM-DD"
        assert all(isinstance(v, int | float) for v in r["figures"].values()), f"{name}.json: a figure is no number"
        assert ("extract" in r) != ("source" in r), f"{name}.json: either rerun (extract) or documented (source)"
        if "extract" in r:
            assert r["extract"].keys() == r["figures"].keys(), f"{name}.json: extract and figures name other figures"


def test_every_claimed_figure_equals_its_record():
    errors = claim_errors(RECORDS, read_pages(RECORDS))
    fix = "rerun python tests/regenerate_records.py, or fix the page"
    assert not errors, f"docs and records disagree ({fix}):\n" + "\n".join(errors)


def test_every_bold_figure_of_the_headline_table_has_a_record_or_says_measured_once():
    pages = read_pages(RECORDS)
    claimed = [render(t, r["figures"]) for r in RECORDS.values() for t in r["claims"].get("README.md", [])]
    for row in headline_rows(pages["README.md"]):
        for bold in re.findall(r"\*\*[^*]*\d[^*]*\*\*", row):
            backed = any(bold in text and text in row for text in claimed) or "measured once on" in row
            assert backed, f"README headline figure {bold} has no record claim and its row says no 'measured once on'"


def test_a_changed_figure_or_page_is_caught():
    records, pages = copy.deepcopy(RECORDS), read_pages(RECORDS)
    assert claim_errors(records, pages) == []
    records["main_job"]["figures"]["best_val_acc"] += 0.01
    assert any(e.startswith("main_job") for e in claim_errors(records, pages)), "a changed record went unnoticed"
    bold = render("**{best_val_acc:.1%} validation accuracy**", RECORDS["main_job"]["figures"])
    pages["README.md"] = pages["README.md"].replace(bold, bold.replace("%", "1%"))
    assert claim_errors(RECORDS, pages), "a changed README figure went unnoticed"


def test_scaled_fields_format_as_printed():
    text = render("{a:.1%} {a*100:.1f} {n/1e6:.1f}M {n:,}", {"a": 0.5353, "n": 394589184})
    assert text == "53.5% 53.5 394.6M 394,589,184", f"scaled fields rendered as {text!r}"
