"""Every relative link in README.md and docs/*.md points to an existing file,
and every `#anchor` to a heading of its target page (GitHub's rules)."""

import glob
import os
import re

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
#: `[text](target)` and `![alt](target)`; the target ends at the first space or ")".
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def _text(path):
    with open(path, encoding="utf8") as f:
        return FENCE.sub("", f.read())  # links and "#" lines in code are not markdown


def _slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped
    (except "-" and "_"), spaces to "-"."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    return {_slug(h) for h in HEADING.findall(_text(path))}


def _relative_links(page):
    for target in LINK.findall(_text(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        yield target


def test_docs_pages_exist_and_are_linked_from_the_readme():
    readme = _text(PAGES[0])
    docs = PAGES[1:]
    assert docs, "docs/*.md is empty"
    for page in docs:
        assert f"](docs/{os.path.basename(page)})" in readme, f"README.md does not link {page}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    broken = []
    for target in _relative_links(page):
        file, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(path):
            broken.append(f"{target}: no file {os.path.relpath(path, ROOT)}")
        elif anchor and path.endswith(".md") and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(path, ROOT)}")
    assert not broken, f"{os.path.relpath(page, ROOT)}: " + "; ".join(broken)


def test_slug_follows_github():
    assert _slug("Torch backend: `fused_bn=True`") == "torch-backend-fused_bntrue"
    assert _slug("Loading a file: `weights=PATH`") == "loading-a-file-weightspath"


def test_readme_test_command_is_what_ci_runs():
    """The README's second command (install the test dependencies, run the
    suite on three backends) is `.ci/run`'s suite line, character for character."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf8").read()
    first_block = re.search(r"^```bash\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)[1]
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf8").read().splitlines()
    suite = [line for line in ci if line.startswith("pip install") and "pytest" in line]
    assert len(commands) >= 2 and suite == [commands[1]]
    assert "tests/requirements-nodeps.txt" in commands[1]
