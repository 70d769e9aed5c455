"""The terminal console: strings are never markup, emoji codes or terminal controls."""

from __future__ import annotations

import io

from rich.table import Table

from simstudy.display import visible
from simstudy.terminal import TerminalConsole, labelled, plain

HOSTILE = "[/x] [bold red]red[/bold red] :smile: \x00 \u202eexe.txt \x1b[2J"


def rendered(*objects: object) -> str:
    output = io.StringIO()
    console = TerminalConsole(file=output, width=200, color_system="truecolor")
    console.print(*objects)
    return output.getvalue()


def test_a_string_with_markup_and_controls_prints_as_written_with_escapes() -> None:
    text = rendered(HOSTILE)
    assert "[/x] [bold red]red[/bold red] :smile: \\x00 \\u202eexe.txt \\x1b[2J" in text
    assert "\x00" not in text and "\u202e" not in text and "\x1b[2J" not in text


def test_table_cells_titles_and_labels_are_plain_text_too() -> None:
    table = Table(title=HOSTILE)
    table.add_column("cell")
    table.add_row(HOSTILE)
    table.add_row(plain(HOSTILE))
    text = rendered(table, labelled("error:", "red", HOSTILE))
    assert text.count(":smile:") == 4 and "\\u202e" in text
    assert "\x00" not in text and "\u202e" not in text
    assert "\x1b[31merror:" in text  # simstudy's own style still applies


def test_visible_keeps_text_newlines_and_tabs_and_escapes_the_rest() -> None:
    assert visible("a\tb\nc é ü 中") == "a\tb\nc é ü 中"
    assert visible("\x07\x85\u200b\u2066\ufeff") == "\\x07\\x85\\u200b\\u2066\\ufeff"
