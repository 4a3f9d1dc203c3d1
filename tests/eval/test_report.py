from keyvid.eval.report import COLUMNS, markdown_table


def test_markdown_header_has_one_heading_per_column():
    row = {k: 1.0 for k in COLUMNS} | {"run": "r", "videos": 2, "clips": 2}
    lines = [ln for ln in markdown_table([row]).splitlines() if ln.startswith("|")]
    header, rule, body = lines[:3]
    assert header.count("|") == rule.count("|") == body.count("|") == len(COLUMNS) + 1
    assert "AV-Align" in header
