"""One package per paper chapter: the chapter's experiment glue and its figures.

A leaf of the package: nothing in ``reid_core`` imports it, and no chapter imports another.
What a chapter needs that another could reuse belongs in a concept package instead.
"""
