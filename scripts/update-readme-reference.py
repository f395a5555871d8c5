#!/usr/bin/env python3
"""Rewrite the generated config reference block in README.md."""
from __future__ import annotations

from pathlib import Path

from telegen.config.reference import BEGIN, END, reference

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
start, end = text.index(BEGIN), text.index(END) + len(END)
readme.write_text(text[:start] + reference() + text[end:])
print(f"updated {readme}")
