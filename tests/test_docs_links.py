"""The documentation's relative links point to files that exist, and their #anchors to headings."""

import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / 'README.md', *ROOT.glob('docs/*.md'), *ROOT.glob('pretrained/*.md'),
               *ROOT.glob('datasets/**/*.md')])
_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _prose_lines(path: pathlib.Path):
  """(line number, line) outside fenced code blocks."""
  fenced = False
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if line.startswith('```'):
      fenced = not fenced
    elif not fenced:
      yield number, line


def heading_anchor(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces made hyphens."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


@functools.cache  # A document is linked many times; read its headings once.
def _anchors(path: pathlib.Path) -> set[str]:
  return {heading_anchor(line.lstrip('#')) for _, line in _prose_lines(path)
          if line.startswith('#')}


def test_heading_anchor_follows_github():
  assert heading_anchor(' Maze-Hard on two H200s: 23 minutes (2026-11-30)') == (
      'maze-hard-on-two-h200s-23-minutes-2026-11-30')
  assert heading_anchor('Fused block kernels: slower than XLA, and removed') == (
      'fused-block-kernels-slower-than-xla-and-removed')


@pytest.mark.parametrize('path', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
  broken = []
  for number, line in _prose_lines(path):
    for target in _LINK.findall(line):
      if re.match(r'^[a-z]+:', target):  # http:, https:, mailto:
        continue
      file_part, _, anchor = target.partition('#')
      linked = (path.parent / file_part) if file_part else path
      if not linked.exists():
        broken.append(f'{path.name}:{number}: {target} (no such file)')
      elif anchor and linked.suffix == '.md' and anchor not in _anchors(linked):
        broken.append(f'{path.name}:{number}: {target} (no such heading)')
  assert not broken, '\n'.join(broken)
