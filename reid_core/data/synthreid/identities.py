"""Who is in SynthReID: pedestrians' attributes and families of look-alike identities.

A :class:`Pedestrian` is a bundle of attributes (body shape, skin, hair, top and bottom
garments with colours and patterns, hem, shoes, bag). Look-alike families (Graph Sampling
chapter) start from one random *base* pedestrian; every other member copies it and changes
one to ``lookalike_max_diffs`` attribute *groups* (:data:`ATTRIBUTE_GROUPS`). A member is
either "local-part-only" (it changes only :data:`LOCAL_GROUPS`: shoes, bag, hem, which cover
a small region of the image: the EnsembleNet chapter's part features should see them) or it
changes only :data:`GLOBAL_GROUPS` (top colour or pattern, sleeves, bottom, hair).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "Pedestrian",
    "FamilyMember",
    "ATTRIBUTE_GROUPS",
    "GLOBAL_GROUPS",
    "LOCAL_GROUPS",
    "GARMENT_COLORS",
    "sample_pedestrian",
    "mutate_pedestrian",
    "differing_groups",
    "make_families",
]

RGB = tuple[int, int, int]

# name -> RGB. Weights make dark and neutral clothes common, as in real streets; this also
# makes many identities share a colour histogram.
GARMENT_COLORS: dict[str, RGB] = {
    "black": (25, 25, 28),
    "charcoal": (62, 62, 68),
    "grey": (128, 128, 128),
    "white": (232, 232, 226),
    "navy": (30, 40, 90),
    "blue": (45, 90, 185),
    "lightblue": (140, 180, 225),
    "denim": (62, 84, 130),
    "red": (190, 32, 36),
    "maroon": (110, 26, 42),
    "green": (42, 128, 62),
    "olive": (102, 110, 52),
    "yellow": (228, 198, 44),
    "orange": (232, 122, 34),
    "pink": (232, 150, 180),
    "purple": (110, 52, 140),
    "brown": (110, 72, 42),
    "beige": (208, 190, 150),
}
_TOP_WEIGHTS = {
    "black": 3,
    "charcoal": 2,
    "grey": 2,
    "white": 3,
    "navy": 2,
    "blue": 1,
    "lightblue": 1,
    "red": 1,
    "maroon": 1,
    "green": 1,
    "olive": 1,
    "yellow": 1,
    "orange": 1,
    "pink": 1,
    "purple": 1,
    "brown": 1,
    "beige": 1,
}
_BOTTOM_WEIGHTS = {
    "black": 4,
    "charcoal": 2,
    "grey": 2,
    "navy": 2,
    "denim": 3,
    "beige": 2,
    "brown": 1,
    "olive": 1,
    "white": 1,
    "blue": 1,
    "maroon": 1,
}
_SHOE_WEIGHTS = {"black": 3, "white": 3, "grey": 1, "brown": 1, "red": 1, "blue": 1, "orange": 1}
_BAG_WEIGHTS = {"black": 3, "brown": 2, "red": 1, "blue": 1, "beige": 1, "grey": 1, "green": 1, "yellow": 1}
HAIR_COLORS: dict[str, RGB] = {
    "black": (22, 19, 19),
    "darkbrown": (58, 40, 26),
    "brown": (108, 74, 44),
    "blond": (200, 170, 100),
    "grey": (165, 165, 160),
    "auburn": (140, 58, 30),
}
_HAIR_WEIGHTS = {"black": 4, "darkbrown": 3, "brown": 2, "blond": 1, "grey": 1, "auburn": 1}
SKIN_TONES: dict[str, RGB] = {
    "light": (236, 200, 175),
    "fair": (222, 180, 145),
    "medium": (192, 142, 104),
    "tan": (160, 112, 76),
    "dark": (108, 72, 50),
}

TOP_PATTERNS = ("plain", "stripes", "checks", "logo")
_PATTERN_WEIGHTS = (4, 2, 1, 2)
BOTTOM_TYPES = ("trousers", "shorts", "skirt")
_BOTTOM_TYPE_WEIGHTS = (6, 2, 1)
BAG_TYPES = ("none", "shoulder", "backpack")
_BAG_TYPE_WEIGHTS = (4, 3, 3)

# Attribute group -> the Pedestrian fields it owns. A family member "differs in a group" when
# at least one of these fields differs from the family base.
ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "top_color": ("top_color", "top_rgb"),
    "top_pattern": ("top_pattern", "pattern_color", "pattern_rgb"),
    "sleeves": ("sleeves",),
    "bottom": ("bottom_type", "bottom_color", "bottom_rgb"),
    "hair": ("hair_style", "hair_color", "hair_rgb"),
    "shoes": ("shoe_color", "shoe_rgb"),
    "bag": ("bag_type", "bag_side", "bag_color", "bag_rgb"),
    "hem": ("hem_style", "hem_color", "hem_rgb"),
}
GLOBAL_GROUPS = ("top_color", "top_pattern", "sleeves", "bottom", "hair")
LOCAL_GROUPS = ("shoes", "bag", "hem")
SHARED_FIELDS = ("height", "build", "skin_tone", "skin_rgb")  # never change within a family


@dataclass(frozen=True)
class Pedestrian:
    """The look of one identity (JSON-ready with :func:`dataclasses.asdict`).

    Colours are a palette name plus the jittered RGB actually drawn; fields that do not apply
    (the pattern colour of a plain top, the side of a backpack) are ``None``.
    """

    height: float  # 0.92..1.08: taller people look thinner in a box fitted to them
    build: float  # 0.85..1.2: width of the body
    skin_tone: str
    skin_rgb: RGB
    hair_style: str  # "short" | "long"
    hair_color: str
    hair_rgb: RGB
    top_color: str
    top_rgb: RGB
    sleeves: str  # "long" | "short"
    top_pattern: str  # one of TOP_PATTERNS
    pattern_color: str | None
    pattern_rgb: RGB | None
    hem_style: str  # "none" | "band": a contrasting band at the bottom of the top
    hem_color: str | None
    hem_rgb: RGB | None
    bottom_type: str  # one of BOTTOM_TYPES
    bottom_color: str
    bottom_rgb: RGB
    shoe_color: str
    shoe_rgb: RGB
    bag_type: str  # one of BAG_TYPES
    bag_side: str | None  # "left" | "right" for a shoulder bag (the person's own side)
    bag_color: str | None
    bag_rgb: RGB | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready attributes (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _choice(rng: np.random.Generator, weights: dict[str, int], exclude: str | None = None) -> str:
    names = [n for n in weights if n != exclude]
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _jitter(rng: np.random.Generator, rgb: RGB, amount: int = 14) -> RGB:
    """Per-identity shade of a palette colour, so independent identities rarely coincide."""
    j = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, j))  # type: ignore[return-value]


def _pick_weighted(
    rng: np.random.Generator, options: tuple[str, ...], weights: tuple[int, ...], exclude: str | None = None
) -> str:
    return _choice(rng, dict(zip(options, weights)), exclude)


def _pattern(rng: np.random.Generator, top_color: str, exclude: str | None = None) -> dict[str, Any]:
    kind = _pick_weighted(rng, TOP_PATTERNS, _PATTERN_WEIGHTS, exclude)
    if kind == "plain":
        return {"top_pattern": kind, "pattern_color": None, "pattern_rgb": None}
    color = _choice(rng, _TOP_WEIGHTS, exclude=top_color)
    return {"top_pattern": kind, "pattern_color": color, "pattern_rgb": _jitter(rng, GARMENT_COLORS[color])}


def _hem(rng: np.random.Generator, top_color: str, band: bool) -> dict[str, Any]:
    if not band:
        return {"hem_style": "none", "hem_color": None, "hem_rgb": None}
    color = _choice(rng, _TOP_WEIGHTS, exclude=top_color)
    return {"hem_style": "band", "hem_color": color, "hem_rgb": _jitter(rng, GARMENT_COLORS[color])}


def _bag(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    if kind == "none":
        return {"bag_type": "none", "bag_side": None, "bag_color": None, "bag_rgb": None}
    color = _choice(rng, _BAG_WEIGHTS)
    side = ("left", "right")[int(rng.integers(2))] if kind == "shoulder" else None
    return {"bag_type": kind, "bag_side": side, "bag_color": color, "bag_rgb": _jitter(rng, GARMENT_COLORS[color])}


def sample_pedestrian(rng: np.random.Generator) -> Pedestrian:
    """Draw one random pedestrian (no family constraints).

    Args:
        rng: the generator to draw from.

    Returns:
        A new :class:`Pedestrian`.
    """
    skin = list(SKIN_TONES)[int(rng.integers(len(SKIN_TONES)))]
    hair = _choice(rng, _HAIR_WEIGHTS)
    top = _choice(rng, _TOP_WEIGHTS)
    bottom = _choice(rng, _BOTTOM_WEIGHTS)
    shoe = _choice(rng, _SHOE_WEIGHTS)
    attrs: dict[str, Any] = {
        "height": round(float(rng.uniform(0.92, 1.08)), 3),
        "build": round(float(rng.uniform(0.85, 1.2)), 3),
        "skin_tone": skin,
        "skin_rgb": _jitter(rng, SKIN_TONES[skin], 8),
        "hair_style": ("short", "long")[int(rng.random() < 0.35)],
        "hair_color": hair,
        "hair_rgb": _jitter(rng, HAIR_COLORS[hair], 10),
        "top_color": top,
        "top_rgb": _jitter(rng, GARMENT_COLORS[top]),
        "sleeves": ("long", "short")[int(rng.random() < 0.4)],
        "bottom_type": _pick_weighted(rng, BOTTOM_TYPES, _BOTTOM_TYPE_WEIGHTS),
        "bottom_color": bottom,
        "bottom_rgb": _jitter(rng, GARMENT_COLORS[bottom]),
        "shoe_color": shoe,
        "shoe_rgb": _jitter(rng, GARMENT_COLORS[shoe], 8),
    }
    attrs.update(_pattern(rng, top))
    attrs.update(_hem(rng, top, band=bool(rng.random() < 0.3)))
    attrs.update(_bag(rng, _pick_weighted(rng, BAG_TYPES, _BAG_TYPE_WEIGHTS)))
    return Pedestrian(**attrs)


def _mutate_group(p: Pedestrian, group: str, rng: np.random.Generator) -> dict[str, Any]:
    """New values for the fields of ``group`` that visibly differ from ``p``'s."""
    if group == "top_color":
        c = _choice(rng, _TOP_WEIGHTS, exclude=p.top_color)
        if p.pattern_color == c or p.hem_color == c:  # keep the pattern/hem visible
            c = _choice(
                rng, {k: v for k, v in _TOP_WEIGHTS.items() if k not in (p.top_color, p.pattern_color, p.hem_color)}
            )
        return {"top_color": c, "top_rgb": _jitter(rng, GARMENT_COLORS[c])}
    if group == "top_pattern":
        return _pattern(rng, p.top_color, exclude=p.top_pattern)
    if group == "sleeves":
        return {"sleeves": "short" if p.sleeves == "long" else "long"}
    if group == "bottom":
        if rng.random() < 0.3:
            return {"bottom_type": _pick_weighted(rng, BOTTOM_TYPES, _BOTTOM_TYPE_WEIGHTS, p.bottom_type)}
        c = _choice(rng, _BOTTOM_WEIGHTS, exclude=p.bottom_color)
        return {"bottom_color": c, "bottom_rgb": _jitter(rng, GARMENT_COLORS[c])}
    if group == "hair":
        if rng.random() < 0.5:
            return {"hair_style": "short" if p.hair_style == "long" else "long"}
        c = _choice(rng, _HAIR_WEIGHTS, exclude=p.hair_color)
        return {"hair_color": c, "hair_rgb": _jitter(rng, HAIR_COLORS[c], 10)}
    if group == "shoes":
        c = _choice(rng, _SHOE_WEIGHTS, exclude=p.shoe_color)
        return {"shoe_color": c, "shoe_rgb": _jitter(rng, GARMENT_COLORS[c], 8)}
    if group == "bag":
        if p.bag_type == "none":
            return _bag(rng, ("shoulder", "backpack")[int(rng.integers(2))])
        r = rng.random()
        if r < 0.3:
            return _bag(rng, "none")
        if r < 0.6 and p.bag_type == "shoulder":
            return {"bag_side": "left" if p.bag_side == "right" else "right"}
        c = _choice(rng, _BAG_WEIGHTS, exclude=p.bag_color)
        return {"bag_color": c, "bag_rgb": _jitter(rng, GARMENT_COLORS[c])}
    if group == "hem":
        if p.hem_style == "band" and rng.random() < 0.4:
            return _hem(rng, p.top_color, band=False)
        new = _hem(rng, p.top_color, band=True)
        while new["hem_color"] == p.hem_color:
            new = _hem(rng, p.top_color, band=True)
        return new
    raise ValueError(f"unknown attribute group {group!r}; expected one of {tuple(ATTRIBUTE_GROUPS)}")


def mutate_pedestrian(base: Pedestrian, groups: list[str], rng: np.random.Generator) -> Pedestrian:
    """A copy of ``base`` that differs from it in exactly the attribute ``groups``.

    Args:
        base: the family's base pedestrian.
        groups: names from :data:`ATTRIBUTE_GROUPS`.
        rng: the generator to draw from.

    Returns:
        The new pedestrian; ``differing_groups(base, result) == set(groups)``.
    """
    p = base
    for g in groups:
        p = replace(p, **_mutate_group(p, g, rng))
    return p


def differing_groups(a: Pedestrian | dict[str, Any], b: Pedestrian | dict[str, Any]) -> list[str]:
    """Attribute groups in which ``a`` and ``b`` differ, plus ``"shared:<field>"`` for any
    body/skin field that differs (those never should within a family).

    Args:
        a, b: pedestrians, or their ``to_dict()`` forms (as stored in ``synthreid.json``).

    Returns:
        Sorted group names.
    """
    da = a.to_dict() if isinstance(a, Pedestrian) else a
    db = b.to_dict() if isinstance(b, Pedestrian) else b
    out = [g for g, keys in ATTRIBUTE_GROUPS.items() if any(da[k] != db[k] for k in keys)]
    out += [f"shared:{k}" for k in SHARED_FIELDS if da[k] != db[k]]
    return sorted(out)


@dataclass(frozen=True)
class FamilyMember:
    """One identity of a look-alike family, before it gets a pid."""

    family: int
    pedestrian: Pedestrian
    differs_from_base: tuple[str, ...]  # attribute groups changed from the family base
    local_part_only: bool  # True when those groups are all in LOCAL_GROUPS


def make_families(
    num_ids: int,
    family_size: int,
    max_diffs: int,
    local_part_only_fraction: float,
    rng: np.random.Generator,
    first_family: int = 0,
) -> list[FamilyMember]:
    """Identities grouped into families of look-alikes, members distinct within a family.

    Member 0 of each family is its base. Every other member changes ``k`` groups of the base,
    ``k`` uniform in ``1..max_diffs`` (at most the number of groups in its pool); its pool is
    :data:`LOCAL_GROUPS` with probability ``local_part_only_fraction``, else
    :data:`GLOBAL_GROUPS`. The last family may be smaller.

    Args:
        num_ids: identities to make.
        family_size: members per family (1 = independent identities).
        max_diffs: most groups changed per member.
        local_part_only_fraction: chance that a member changes local groups only.
        rng: the generator to draw from.
        first_family: id of the first family (families are numbered consecutively).

    Returns:
        ``num_ids`` members, families contiguous.
    """
    members: list[FamilyMember] = []
    family = first_family
    while len(members) < num_ids:
        base = sample_pedestrian(rng)
        seen = {base}
        members.append(FamilyMember(family, base, (), False))
        for _ in range(min(family_size, num_ids - len(members) + 1) - 1):
            local = bool(rng.random() < local_part_only_fraction)
            pool = LOCAL_GROUPS if local else GLOBAL_GROUPS
            k = int(rng.integers(1, min(max_diffs, len(pool)) + 1))
            for _attempt in range(100):  # retry until the member is new in its family
                groups = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
                names = [pool[i] for i in groups]
                p = mutate_pedestrian(base, names, rng)
                if p not in seen:
                    break
            else:  # pragma: no cover - the attribute space is far larger than a family
                raise RuntimeError("could not make a distinct family member; lower lookalike_family_size")
            seen.add(p)
            members.append(FamilyMember(family, p, tuple(names), local))
        family += 1
    return members
