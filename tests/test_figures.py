"""bfpo.figures: the one markdown-table builder, number formatter and figure writer."""

import pytest

from bfpo import figures


def test_markdown_table_text_default_alignment():
    text = figures.markdown_table(["judge", "n", "acc"], [["refusal", 10, "0.950"], ["keyword", 10, "0.900"]])
    assert text == ("| judge | n | acc |\n|---|---:|---:|\n| refusal | 10 | 0.950 |\n| keyword | 10 | 0.900 |")


def test_markdown_table_explicit_alignment_and_errors():
    assert figures.markdown_table(["a", "b"], [], align="lc") == "| a | b |\n|---|:---:|"
    with pytest.raises(ValueError, match="align"):
        figures.markdown_table(["a", "b"], [], align="l")
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        figures.markdown_table(["a", "b"], [["x", "y"], ["z"]])


def test_fmt_rate():
    assert figures.fmt_rate(None) == figures.MISSING == "–"
    assert figures.fmt_rate(0.12345) == "0.12"
    assert figures.fmt_rate(12.5, digits=1) == "12.5"
    assert figures.fmt_rate(None, missing="n/a") == "n/a"


def test_bar_chart_and_save_figure_write_a_png(tmp_path):
    fig, ax = figures.subplots(figsize=(4, 3))
    figures.bar_chart(
        ax, ["base", "bfpo"], {"harmful answered": [40.0, 10.0], "benign refused": [2.0, 5.0]}, annotate="{:.0f}"
    )
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [2.0, 5.0, 10.0, 40.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "bfpo"]
    path = figures.save_figure(fig, tmp_path / "sub" / "bars.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_bar_chart_stacked_puts_bars_on_top_of_each_other(tmp_path):
    fig, ax = figures.subplots()
    figures.bar_chart(ax, ["m1"], {"a": [0.25], "b": [0.5]}, stacked=True)
    bottoms = sorted(p.get_y() for p in ax.patches)
    assert bottoms == [0.0, 0.25]
    with pytest.raises(ValueError, match="series 'c' has 2 values for 1 categories"):
        figures.bar_chart(ax, ["m1"], {"c": [1, 2]})
    figures.save_figure(fig, tmp_path / "s.png")
