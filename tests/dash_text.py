"""Every string of a Dash component tree, joined by spaces: what a test reads of a rendered view."""

from __future__ import annotations


def texts(component) -> str:
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(texts(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else texts(children)
