"""The demo's second drawing style, `bowls`: eight other dishes seen from further away, on random-colour tables.

A held-out check of the demo's training setup (`rudolph-ft data demo --style bowls`), not data to tune it on: the
dishes, the layout and the nuisance all differ from the default close-ups. Each photo is a bowl or a plate of one of
eight dishes taken straight from above at a random spot on a plain table of a random colour; the vessel (random
colour too) covers about 60% of the picture, and the food's area grows in proportion to the portion, 0.5x to 1.6x
(its radius by 1.8x), under textured toppings. Drawn at 3x the output size like `demo_draw`, all randomness from the
numpy Generator passed in.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .demo_draw import (
    RGB,
    Canvas,
    _blob,
    _disc,
    _disc_mask,
    _dollop,
    _drop_shadow,
    _jitter,
    _light,
    _oval,
    _scatter,
    _shade,
    _specks,
    _texture,
    _texture_rgb,
)

__all__ = ["BowlScene", "BOWL_PAINTERS", "PORTIONS", "food_radius", "random_bowl_scene", "render_bowls"]

#: the portion range of every dish in this style (a size factor: the food's area is proportional to it)
PORTIONS = (0.5, 1.6)

_VESSELS: tuple[RGB, ...] = ((245, 245, 242), (238, 228, 204), (176, 200, 222), (188, 104, 70), (52, 54, 60),
                             (150, 178, 140))


@dataclass(frozen=True)
class BowlScene:
    """Everything about a `bowls` photo except the food. The light fields match `demo_draw.Scene`'s."""

    table_colour: RGB
    vessel_colour: RGB
    bowl: bool  # a deep bowl (thick rim, inner shadow) or a flat plate (wide rim)
    centre: tuple[float, float]  # vessel centre, as fractions of the picture side
    vessel_radius: float  # as a fraction of the picture side
    light_angle: float
    light_strength: float
    brightness: float
    warmth: float
    vignette: float
    food_angle: float
    detail_seed: int


def random_bowl_scene(rng: np.random.Generator, bowl: bool) -> BowlScene:
    """A random table colour, vessel, position and light (`bowl`: the dish is served in a bowl)."""
    hue, saturation, value = rng.uniform(), rng.uniform(0.15, 0.75), rng.uniform(0.3, 0.92)
    table = tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, saturation, value))
    return BowlScene(
        table_colour=table,  # type: ignore[arg-type]
        vessel_colour=_jitter(rng, _VESSELS[int(rng.integers(len(_VESSELS)))], 10),
        bowl=bowl,
        centre=(0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)),
        vessel_radius=rng.uniform(0.4, 0.45),
        light_angle=rng.uniform(0, 2 * math.pi),
        light_strength=rng.uniform(0.05, 0.18),
        brightness=rng.uniform(0.9, 1.08),
        warmth=rng.uniform(-0.04, 0.05),
        vignette=rng.uniform(0.0, 0.2),
        food_angle=rng.uniform(0, 2 * math.pi),
        detail_seed=int(rng.integers(2**31)),
    )


def food_radius(well_radius: float, portion: float) -> float:
    """Radius of the food: its area is proportional to the portion (1.6 -> 0.95 of the well, 0.5 -> 0.53)."""
    return well_radius * 0.95 * math.sqrt(portion / PORTIONS[1])


def render_bowls(scene: BowlScene, painter: BowlPainter | None, portion: float, size: int) -> Image.Image:
    """Draw one `bowls` photo: table, vessel with its shadow, the food (unless `painter` is None), light."""
    side = 3 * size
    canvas = Image.new("RGB", (side, side), scene.table_colour)
    rng = np.random.default_rng(scene.detail_seed)
    _texture_rgb(canvas, rng, 0.08)
    cx, cy, radius = scene.centre[0] * side, scene.centre[1] * side, scene.vessel_radius * side
    light = (math.cos(scene.light_angle), math.sin(scene.light_angle))
    _drop_shadow(canvas, _disc_mask(canvas.size, cx, cy, radius), light, radius * 0.1, 0.5)
    draw = ImageDraw.Draw(canvas)
    rim = scene.vessel_colour
    _disc(draw, cx, cy, radius, _shade(rim, 0.9))
    _disc(draw, cx, cy, radius * 0.95, rim)
    well = radius * (0.8 if scene.bowl else 0.7)
    if scene.bowl:  # the inner wall in shade on the side away from the light
        _disc(draw, cx, cy, well, _shade(rim, 0.72))
        _disc(draw, cx - light[0] * well * 0.06, cy - light[1] * well * 0.06, well * 0.95, _shade(rim, 0.92))
    else:
        _disc(draw, cx, cy, well, _shade(rim, 0.95))
    if painter is not None:
        layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        painter(Canvas(layer, ImageDraw.Draw(layer), rng, cx, cy, well, scene.food_angle), food_radius(well, portion))
        _texture(layer, rng, strength=0.14)
        _drop_shadow(canvas, layer.getchannel("A"), light, well * 0.03, 0.35)
        canvas.paste(layer, (0, 0), layer)
    return _light(canvas, scene, rng).resize((size, size), Image.LANCZOS)  # type: ignore[arg-type]


# ---- dishes: each painter gets the food radius in px (its area is the portion) --------------------------------

BowlPainter = Callable[[Canvas, float], None]


def _cubes(c: Canvas, centres: np.ndarray, colours: list[RGB], side: float, spread: int = 14) -> None:
    """Small diced pieces (rotated squares) at the given centres."""
    for x, y in centres:
        colour = _jitter(c.rng, colours[int(c.rng.integers(len(colours)))], spread)
        scale = c.rng.uniform(0.7, 1.2)
        c.draw.polygon(_oval(x, y, side * scale, side * scale, c.rng.uniform(0, math.pi), 4), fill=colour)


def _count(r: float, c: Canvas, per_area: float) -> int:
    """How many toppings of a density `per_area` (per well area) fit a food disc of radius `r`."""
    return int(per_area * (r / c.radius) ** 2) + 3


def paint_okroshka(c: Canvas, r: float) -> None:
    """Cold kefir soup: a pale whitish-green surface with diced potato, cucumber, sausage, egg and much dill."""
    _disc(c.draw, c.cx, c.cy, r, _jitter(c.rng, (226, 230, 208), 8))
    _cubes(c, c.in_disc(r * 0.9, _count(r, c, 70)), [(236, 222, 170), (110, 165, 75), (214, 140, 128),
                                                     (250, 240, 220), (240, 200, 70)], r * 0.05)
    _specks(c, c.cx, c.cy, r * 0.9, _count(r, c, 45), [(50, 120, 40), (80, 150, 55)], r * 0.035)


def paint_solyanka(c: Canvas, r: float) -> None:
    """A red-orange meat soup with black olive rings, a lemon slice, sausage pieces and sour cream."""
    _disc(c.draw, c.cx, c.cy, r, _jitter(c.rng, (196, 86, 38), 10))
    _scatter(c, c.in_disc(r * 0.9, _count(r, c, 30)), [(150, 50, 40), (225, 130, 60)], r * 0.07, r * 0.04)
    for x, y in c.in_disc(r * 0.8, _count(r, c, 10)):
        _disc(c.draw, x, y, r * 0.06, (30, 28, 26))
        _disc(c.draw, x, y, r * 0.025, (120, 60, 40))
    x, y = c.polar(r * 0.35, c.rng.uniform(0, 2 * math.pi))
    _disc(c.draw, x, y, r * 0.2, (240, 220, 70))
    _disc(c.draw, x, y, r * 0.17, (250, 236, 130))
    _dollop(c, *c.polar(r * 0.3, c.rng.uniform(0, 2 * math.pi)), r * 0.14, (250, 248, 238))


def paint_ukha(c: Canvas, r: float) -> None:
    """Clear golden fish soup: pale fish chunks, carrot rings, potato cubes, fat drops and dill."""
    _disc(c.draw, c.cx, c.cy, r, _jitter(c.rng, (222, 184, 96), 8))
    for x, y in c.in_disc(r * 0.75, _count(r, c, 6)):
        c.draw.polygon(_blob(c.rng, x, y, r * 0.12, 0.25, 10), fill=_jitter(c.rng, (246, 232, 222), 6))
    for x, y in c.in_disc(r * 0.85, _count(r, c, 10)):
        _disc(c.draw, x, y, r * 0.045, (236, 120, 30))
    _cubes(c, c.in_disc(r * 0.85, _count(r, c, 12)), [(240, 226, 180)], r * 0.05)
    _scatter(c, c.in_disc(r * 0.9, _count(r, c, 30)), [(250, 214, 110)], r * 0.02, r * 0.02)
    _specks(c, c.cx, c.cy, r * 0.9, _count(r, c, 25), [(50, 120, 40)], r * 0.03)


def paint_ovsyanka(c: Canvas, r: float) -> None:
    """Oat porridge: a beige flaky surface with blueberries, raspberries and a melting pat of butter."""
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.05), fill=_jitter(c.rng, (214, 190, 150), 8))
    _scatter(c, c.in_disc(r * 0.95, _count(r, c, 260)), [(228, 206, 166), (196, 168, 126), (236, 220, 186)],
             r * 0.03, r * 0.018, 8)
    for x, y in c.in_disc(r * 0.7, _count(r, c, 9)):
        _disc(c.draw, x, y, r * 0.05, (60, 50, 110) if c.rng.uniform() < 0.6 else (200, 40, 70))
    x, y = c.polar(c.rng.uniform(0, r * 0.3), 0)
    c.draw.polygon(_oval(x, y, r * 0.12, r * 0.1, c.rng.uniform(0, math.pi), 4), fill=(250, 228, 130))


def paint_vinegret(c: Canvas, r: float) -> None:
    """A heap of diced beet with potato, carrot, pickles and green peas: dark red speckled with colour."""
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.12), fill=(120, 18, 45))
    _cubes(c, c.in_disc(r * 0.92, _count(r, c, 120)), [(140, 20, 55), (110, 15, 40), (200, 90, 110),
                                                       (225, 130, 50), (120, 150, 60)], r * 0.045)
    for x, y in c.in_disc(r * 0.9, _count(r, c, 25)):
        _disc(c.draw, x, y, r * 0.025, (110, 170, 60))


def paint_olivie(c: Canvas, r: float) -> None:
    """A dome of pale yellow diced potato and egg in mayonnaise with peas, carrot and a sprig of parsley."""
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.08), fill=(236, 226, 180))
    _cubes(c, c.in_disc(r * 0.92, _count(r, c, 120)), [(240, 232, 190), (226, 210, 150), (250, 244, 220),
                                                       (235, 150, 70), (215, 150, 140)], r * 0.045, 10)
    for x, y in c.in_disc(r * 0.9, _count(r, c, 30)):
        _disc(c.draw, x, y, r * 0.03, (90, 150, 50))
    _specks(c, c.cx, c.cy, r * 0.2, 6, [(40, 120, 40)], r * 0.06)


def paint_golubtsy(c: Canvas, r: float) -> None:
    """Two cabbage rolls (their length is the portion) in tomato sauce with sour cream."""
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.12), fill=_jitter(c.rng, (200, 70, 40), 8))
    _scatter(c, c.in_disc(r * 0.9, _count(r, c, 30)), [(170, 50, 30), (225, 110, 60)], r * 0.05, r * 0.03)
    dx, dy = math.cos(c.angle), math.sin(c.angle)
    for sign in (-1, 1):
        x, y = c.cx - dy * sign * r * 0.33, c.cy + dx * sign * r * 0.33
        c.draw.polygon(_oval(x, y, r * 0.62, r * 0.27, c.angle, 20), fill=(140, 150, 80))
        c.draw.polygon(_oval(x, y, r * 0.58, r * 0.23, c.angle, 20), fill=_jitter(c.rng, (200, 210, 140), 8))
        for k in (-0.4, 0, 0.4):  # the leaf's veins across the roll
            vx, vy = x + dx * k * r * 0.58, y + dy * k * r * 0.58
            c.draw.line([(vx - dy * r * 0.2, vy + dx * r * 0.2), (vx + dy * r * 0.2, vy - dx * r * 0.2)],
                        fill=(235, 240, 200), width=max(2, int(r * 0.03)))
    _dollop(c, c.cx, c.cy, r * 0.14, (250, 248, 238))


def paint_kotleta(c: Canvas, r: float) -> None:
    """Mashed potato with swirls beside a browned cutlet (both grow with the portion), with a cucumber slice."""
    dx, dy = math.cos(c.angle), math.sin(c.angle)
    mx, my = c.cx - dx * r * 0.25, c.cy - dy * r * 0.25
    c.draw.polygon(_blob(c.rng, mx, my, r * 0.72, 0.1), fill=(244, 226, 160))
    for _ in range(_count(r, c, 14)):
        x, y = c.in_disc(r * 0.5, 1)[0] - (c.cx - mx, c.cy - my)
        bend = r * c.rng.uniform(0.08, 0.2)
        start = c.rng.uniform(0, 360)
        c.draw.arc([x - bend, y - bend, x + bend, y + bend], start, start + 150, fill=(220, 196, 120),
                   width=max(2, int(r * 0.03)))
    kx, ky = c.cx + dx * r * 0.45, c.cy + dy * r * 0.45
    c.draw.polygon(_oval(kx, ky, r * 0.42, r * 0.3, c.angle + math.pi / 2, 20), fill=(90, 50, 25))
    c.draw.polygon(_oval(kx, ky, r * 0.37, r * 0.25, c.angle + math.pi / 2, 20), fill=_jitter(c.rng, (140, 82, 40), 8))
    _scatter(c, np.asarray([kx, ky]) + (c.in_disc(r * 0.3, 20) - [c.cx, c.cy]), [(110, 60, 30), (170, 110, 60)],
             r * 0.03, r * 0.02)
    _disc(c.draw, mx, my + r * 0.1, r * 0.1, (200, 230, 170), outline=(60, 120, 45), width=max(2, int(r * 0.02)))


# dish slug -> painter
BOWL_PAINTERS: dict[str, BowlPainter] = {
    "okroshka": paint_okroshka,
    "solyanka": paint_solyanka,
    "ukha": paint_ukha,
    "ovsyanka": paint_ovsyanka,
    "vinegret": paint_vinegret,
    "olivie": paint_olivie,
    "golubtsy": paint_golubtsy,
    "kotleta": paint_kotleta,
}
