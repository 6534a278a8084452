"""A self-contained HTML report: headings, text, tables and figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import io
import os
from typing import TYPE_CHECKING

from cellweave._io_utils import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: .92em; }
img { max-width: 100%; border: 1px solid #eee; }
.table-wrap { max-width: 100%; overflow-x: auto; }
th { overflow-wrap: break-word; }
.win { background: #e6f4e6; } .lose { background: #fbeaea; }
"""


class HtmlReport:
    """Collects sections and writes one HTML file (atomically) with every plot embedded."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, *, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, df: pd.DataFrame, *, float_format: str = "{:.3f}", index: bool = False) -> None:
        """A table; a wide one scrolls inside the page instead of running past its edge."""
        if not index and df.columns.name is not None:
            # A pivot's column-axis name renders as an extra header cell over an empty column.
            df = df.rename_axis(columns=None)
        body = df.to_html(index=index, float_format=lambda x: float_format.format(x), border=0, na_rep="–")
        body = body.replace(" ± ", "\u00a0±\u00a0")  # "mean ± sd" never breaks over two lines
        self.parts.append(f'<div class="table-wrap">{body}</div>')

    def figure(self, fig: Figure, *, dpi: int = 100) -> None:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        self.parts.append(f'<img src="data:image/png;base64,{data}"/>')

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.render())
