"""The typed blocks a page is made of, and their rendering through two Jinja2 templates
(templates/report.html.j2, templates/report.md.j2): shared by the reproduction page (`page.py`) and the
network page (`analyses/network.py`).
"""

from __future__ import annotations

import dataclasses

import jinja2
import markupsafe

from redundancy_jax.core.verdicts import FAILS, HOLDS, UNTESTABLE


@dataclasses.dataclass(frozen=True)
class Block:
  """One piece of the page: kind "h" (level, text), "p" (text, **bold** allowed), "banner" (text), "img"
  (path, caption), "link" (path, text) or "table" (header, rows, id)."""

  kind: str
  text: str = ""
  level: int = 2
  path: str = ""
  header: tuple = ()
  rows: tuple = ()
  id: str = ""


def _h(text, level=2):
  return Block("h", text, level=level)


def _p(text):
  return Block("p", text)


def _img(path, caption):
  return Block("img", caption, path=path)


def _link(path, text):
  return Block("link", text, path=path)


def _table(header, rows, table_id=""):
  return Block("table", header=tuple(str(h) for h in header), rows=tuple(tuple(str(c) for c in r) for r in rows),
               id=table_id)


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("redundancy_jax.reproduction", "templates"),
                          autoescape=jinja2.select_autoescape(["html.j2"]), keep_trailing_newline=True,
                          trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
_ENV.filters["bold"] = lambda text: markupsafe.Markup("").join(
  markupsafe.Markup("<b>{}</b>").format(part) if i % 2 else markupsafe.escape(part)
  for i, part in enumerate(str(text).split("**")))
_ENV.filters["cell"] = lambda text: str(text).replace("|", "\\|")
VERDICT_CLASSES = {HOLDS: "holds", FAILS: "does-not-hold", UNTESTABLE: "not-testable"}


def render(page: list[Block], template: str) -> str:
  """The page through `template` (report.html.j2 or report.md.j2)."""
  title = page[0].text if page and page[0].kind == "h" else "report"
  return _ENV.get_template(template).render(blocks=page, title=title, verdict_classes=VERDICT_CLASSES)
