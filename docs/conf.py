"""Sphinx configuration: MyST Markdown pages, autodoc for the API reference.

Built in CI with warnings as errors: sphinx-build -W -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

project = "pytest-vdens"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples"]
html_theme = "alabaster"
myst_heading_anchors = 3
autodoc_member_order = "bysource"

# Explanation pages that other changes add: listed in index.md's toctree where
# it says OPTIONAL_PAGES, once they exist (a missing one would be a warning).
OPTIONAL_PAGES = ("security", "reliability", "performance")


def _list_optional_pages(app, docname, source):
    if docname == "index":
        present = [p for p in OPTIONAL_PAGES if os.path.exists(os.path.join(app.srcdir, p + ".md"))]
        source[0] = source[0].replace("OPTIONAL_PAGES\n", "".join(p + "\n" for p in present))


def _plain_docstring(app, what, name, obj, options, lines):
    # The code's docstrings are plain text with `code` in single backticks, not
    # reStructuredText: show `x` as code, and a * as itself (fn(*args, **kwargs)).
    for i, line in enumerate(lines):
        if "``" in line:
            continue
        parts = line.split("`")
        for j in range(0, len(parts), 2):  # outside backticks
            parts[j] = parts[j].replace("*", "\\*")
        lines[i] = "``".join(parts) if len(parts) % 2 else line


def setup(app):
    app.connect("source-read", _list_optional_pages)
    app.connect("autodoc-process-docstring", _plain_docstring)
