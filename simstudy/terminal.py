"""The terminal console: user text is shown as it is, never interpreted.

Model errors, file names, parameter values and data cells reach the console. Rich reads
`[...]` in a string as markup (a path like `[/tmp/data.csv]` raised `MarkupError` and lost
the final status line; `[bold red]` restyled the line) and `:name:` as an emoji, and a
terminal acts on control characters. Here no string is markup, and control and
bidirectional characters are shown as escapes (`simstudy.display.visible`); simstudy's
own styles are `Text` spans (`labelled`).

```python
>>> console = TerminalConsole(stderr=True)
>>> console.print(labelled("error:", "red", "no file [/tmp/data.csv]"))
```
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from simstudy.display import visible


class TerminalConsole(Console):
    """A Rich console on which no string is markup, an emoji code or a terminal control."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Render a string as plain text, its invisible characters as escapes."""
        kwargs.update(markup=False, emoji=False)
        return super().render_str(visible(text), **kwargs)


def labelled(label: str, style: str, text: str) -> Text:
    """Return `label` in `style`, a space, then `text` as it is (escapes for controls)."""
    return Text.assemble((label, style), " ", visible(text))


def plain(text: str) -> Text:
    """Return user text as a Text of its own: no markup, controls as escapes."""
    return Text(visible(text))
