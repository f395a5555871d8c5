from __future__ import annotations

from pathlib import Path

from telegen import registry
from telegen.component import Kind
from telegen.config.reference import BEGIN, END, readme_block, reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_reference_documents_every_component_and_key() -> None:
    text = reference()
    assert text.startswith(BEGIN) and text.endswith(END)
    for kind in Kind:
        for type_ in registry.types(kind):
            assert f"{kind.value} `{type_}`" in text
    assert "| `sample_rate` | `99` |" in text
    assert "| `timeout` | `60s` |" in text          # durations shown with units


def test_readme_carries_the_current_reference() -> None:
    block = readme_block(README.read_text())
    assert block is not None, "README lacks the generated config reference markers"
    assert block == reference(), (
        "README's config reference is stale: regenerate it with "
        "`python -m telegen components --reference` between the markers")
