"""Drawing synthetic food photos: a table, a plate, a dish whose drawn size shows the portion, and the light.

Everything is drawn with Pillow at 3x the output size and shrunk with a Lanczos filter (anti-aliasing); all
randomness comes from the numpy Generator passed in, so a seed fixes every pixel. Used by `rudolph_ft.data.demo`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Scene", "random_scene", "render", "PAINTERS", "pile_radius"]

RGB = tuple[int, int, int]
Painter = Callable[["Canvas", float], None]

_BACKGROUNDS = ("wood", "cloth", "stone", "plain")
_PLATES: dict[str, tuple[RGB, RGB]] = {  # name: (rim colour, well colour)
    "white": ((246, 246, 243), (238, 238, 234)),
    "cream": ((241, 231, 206), (234, 223, 196)),
}


@dataclass(frozen=True)
class Scene:
    """Everything about a photo except the food: table, plate, camera and light."""

    background: str  # one of _BACKGROUNDS
    table_colour: RGB
    accent_colour: RGB  # wood grain / cloth check / stone veins
    plate: str  # one of _PLATES
    centre: tuple[float, float]  # plate centre, as fractions of the picture side
    plate_radius: float  # as a fraction of the picture side
    squash: float  # vertical foreshortening of a tilted camera (1 = straight from above)
    light_angle: float  # radians, the direction light comes from
    light_strength: float  # brightness difference across the picture
    brightness: float
    warmth: float  # > 0 warm (yellow) light, < 0 cool (blue)
    vignette: float
    food_angle: float  # rotation of the food arrangement, radians
    detail_seed: int  # seeds the food details and textures


def random_scene(rng: np.random.Generator) -> Scene:
    """Draw a random table, plate, camera position and lighting.

    A close-up taken straight from above in even kitchen light: the plate fills the picture, so the food covers
    most of the image tokens, and colours vary only a little with the light. (The demo's from-scratch model has 270
    photos to learn ten dishes from, through a random-weight image tokenizer: nuisance it could not learn from so
    few photos would hide what it does learn.)
    """
    background = str(rng.choice(_BACKGROUNDS))
    table_colour, accent_colour = _table_colours(rng, background)
    return Scene(
        background=background,
        table_colour=table_colour,
        accent_colour=accent_colour,
        plate=str(rng.choice(list(_PLATES))),
        centre=(0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)),
        plate_radius=rng.uniform(0.66, 0.72),
        squash=rng.uniform(0.96, 1.0),
        light_angle=rng.uniform(0, 2 * math.pi),
        light_strength=rng.uniform(0.04, 0.12),
        brightness=rng.uniform(0.95, 1.05),
        warmth=rng.uniform(-0.02, 0.03),
        vignette=rng.uniform(0.0, 0.12),
        food_angle=rng.uniform(0, 2 * math.pi),
        detail_seed=int(rng.integers(2**31)),
    )


def _table_colours(rng: np.random.Generator, background: str) -> tuple[RGB, RGB]:
    if background == "wood":
        base = _mix((92, 58, 34), (205, 165, 118), rng.uniform())
        return base, _shade(base, 0.72)
    if background == "cloth":
        cloths = [(200, 40, 45), (40, 80, 160), (60, 130, 80), (230, 225, 210), (210, 170, 60)]
        base = cloths[int(rng.integers(len(cloths)))]
        return (248, 246, 240), _jitter(rng, base, 12)
    if background == "stone":
        base = _jitter(rng, (200, 200, 196), 25)
        return base, _shade(base, 0.6)
    base = _jitter(rng, [(40, 42, 48), (150, 160, 170), (225, 215, 195), (120, 90, 80)][int(rng.integers(4))], 15)
    return base, base


@dataclass
class Canvas:
    """A food layer being drawn: RGBA image, its draw handle, the plate geometry and the detail rng."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    rng: np.random.Generator
    cx: float
    cy: float
    radius: float  # plate radius, px
    angle: float  # food arrangement rotation

    def polar(self, distance: float, angle: float) -> tuple[float, float]:
        """A point `distance` px from the plate centre, `angle` radians past the arrangement rotation."""
        return self.cx + distance * math.cos(angle + self.angle), self.cy + distance * math.sin(angle + self.angle)

    def in_disc(self, radius: float, count: int) -> np.ndarray:
        """`count` uniform random points (count, 2) in a disc of `radius` px around the plate centre."""
        r = radius * np.sqrt(self.rng.uniform(size=count))
        t = self.rng.uniform(0, 2 * math.pi, size=count)
        return np.stack([self.cx + r * np.cos(t), self.cy + r * np.sin(t)], axis=1)


def render(scene: Scene, painter: Painter | None, amount: float, size: int) -> Image.Image:
    """Draw one photo: table, plate shadow, plate, the food (when `painter` is given), light; `size` px RGB.

    Args:
        scene: table, plate, camera and light.
        painter: draws the dish onto a `Canvas`; None draws the empty plate.
        amount: the portion the painter draws (a size factor or a piece count, per dish).
        size: output side in pixels.
    """
    side = 3 * size
    height = int(round(side / scene.squash))  # drawn taller, then squashed to a square: a tilted camera
    canvas = Image.new("RGB", (side, height), scene.table_colour)
    rng = np.random.default_rng(scene.detail_seed)
    _paint_table(canvas, scene, rng)
    cx, cy, radius = scene.centre[0] * side, scene.centre[1] * height, scene.plate_radius * side
    light = (math.cos(scene.light_angle), math.sin(scene.light_angle))
    _drop_shadow(canvas, _disc_mask(canvas.size, cx, cy, radius), light, radius * 0.07, 0.42)
    _paint_plate(canvas, scene, cx, cy, radius, light)
    if painter is not None:
        layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        painter(Canvas(layer, ImageDraw.Draw(layer), rng, cx, cy, radius, scene.food_angle), amount)
        _texture(layer, rng, strength=0.16)
        _drop_shadow(canvas, layer.getchannel("A"), light, radius * 0.035, 0.45)
        canvas.paste(layer, (0, 0), layer)
    canvas = canvas.resize((side, side), Image.BICUBIC)
    return _light(canvas, scene, rng).resize((size, size), Image.LANCZOS)


def pile_radius(plate_radius: float, portion: float) -> float:
    """Radius of a heaped dish: its area grows in proportion to the portion (0.8 -> 0.48, 1.25 -> 0.6 of the plate)."""
    return plate_radius * 0.6 * math.sqrt(portion / 1.25)


# ---- table, plate, light ------------------------------------------------------------------------------------


def _paint_table(canvas: Image.Image, scene: Scene, rng: np.random.Generator) -> None:
    width, height = canvas.size
    draw = ImageDraw.Draw(canvas)
    if scene.background == "wood":
        planks = int(rng.integers(2, 5))
        grain = np.cumsum(rng.normal(0, 1.2, size=height))  # wavy grain lines
        for y in range(0, height, 2):
            wave = 0.5 + 0.5 * math.sin(y * 0.09 + grain[y] * 0.15 + rng.uniform(0, 0.3))
            draw.line([(0, y), (width, y)], fill=_mix(scene.table_colour, scene.accent_colour, 0.6 * wave), width=2)
        for k in range(1, planks):
            y = int(k * height / planks + rng.uniform(-10, 10))
            draw.line([(0, y), (width, y)], fill=_shade(scene.accent_colour, 0.6), width=3)
        if rng.uniform() < 0.5:
            canvas.paste(canvas.transpose(Image.Transpose.ROTATE_90).resize(canvas.size))
    elif scene.background == "cloth":
        step = int(rng.integers(width // 10, width // 5))
        band = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        band_draw = ImageDraw.Draw(band)
        for start in range(0, max(width, height), 2 * step):
            band_draw.rectangle([start, 0, start + step, height], fill=(*scene.accent_colour, 140))
            band_draw.rectangle([0, start, width, start + step], fill=(*scene.accent_colour, 140))
        canvas.paste(band, (0, 0), band)
    elif scene.background == "stone":
        for _ in range(int(rng.integers(3, 7))):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            points = []
            for _ in range(40):
                x, y = x + rng.normal(6, 8), y + rng.normal(0, 8)
                points.append((x, y))
            draw.line(points, fill=_mix(scene.table_colour, scene.accent_colour, rng.uniform(0.3, 0.7)), width=2)
    _texture_rgb(canvas, rng, 0.12 if scene.background != "plain" else 0.06)


def _paint_plate(canvas: Image.Image, scene: Scene, cx: float, cy: float, radius: float, light: tuple) -> None:
    rim, well = _PLATES[scene.plate]
    draw = ImageDraw.Draw(canvas)
    _disc(draw, cx, cy, radius, rim)
    _disc(draw, cx, cy, radius * 0.96, _shade(rim, 1.04))
    _disc(draw, cx, cy, radius * 0.76, _shade(well, 0.93))  # the well's edge, in shade
    _disc(draw, cx - light[0] * radius * 0.015, cy - light[1] * radius * 0.015, radius * 0.73, well)
    glare = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    gx, gy = cx + light[0] * radius * 0.86, cy + light[1] * radius * 0.86
    ImageDraw.Draw(glare).ellipse([gx - radius * 0.2, gy - radius * 0.07, gx + radius * 0.2, gy + radius * 0.07],
                                  fill=(255, 255, 255, 110))
    glare = glare.filter(ImageFilter.GaussianBlur(radius * 0.04))
    canvas.paste(glare, (0, 0), glare)


def _drop_shadow(canvas: Image.Image, mask: Image.Image, light: tuple, offset: float, opacity: float) -> None:
    """Darken `canvas` under `mask` shifted away from the light and blurred."""
    shifted = Image.new("L", mask.size, 0)
    shifted.paste(mask, (int(-light[0] * offset), int(-light[1] * offset)))
    shadow = shifted.filter(ImageFilter.GaussianBlur(offset * 0.9)).point(lambda v: int(v * opacity))
    canvas.paste(Image.new("RGB", canvas.size, (15, 10, 5)), (0, 0), shadow)


def _light(canvas: Image.Image, scene: Scene, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(canvas, dtype=np.float32) / 255.0  # (H, W, 3)
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = x / width - 0.5, y / height - 0.5
    gain = scene.brightness * (1 + scene.light_strength * (x * math.cos(scene.light_angle)
                                                          + y * math.sin(scene.light_angle)) * 2)
    gain = gain * (1 - scene.vignette * (x**2 + y**2) * 1.6)
    tint = np.array([1 + scene.warmth, 1 + scene.warmth * 0.3, 1 - scene.warmth], dtype=np.float32)
    pixels = pixels * gain[..., None] * tint + rng.normal(0, 0.012, size=pixels.shape).astype(np.float32)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")


def _texture(layer: Image.Image, rng: np.random.Generator, strength: float) -> None:
    """Mottle an RGBA layer's colours with smooth + fine noise (food is never flat)."""
    rgb = layer.convert("RGB")
    _texture_rgb(rgb, rng, strength)
    layer.paste(rgb, (0, 0), layer.getchannel("A"))


def _texture_rgb(image: Image.Image, rng: np.random.Generator, strength: float) -> None:
    width, height = image.size
    coarse = Image.fromarray((rng.uniform(size=(height // 12 + 1, width // 12 + 1)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32) / 255.0 - 0.5
    fine = rng.uniform(-0.5, 0.5, size=(height, width)).astype(np.float32)
    gain = 1 + strength * (1.4 * smooth + 0.6 * fine)
    pixels = np.asarray(image, dtype=np.float32) * gain[..., None]
    image.paste(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB"))


# ---- shapes -------------------------------------------------------------------------------------------------


def _disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: RGB | tuple, outline=None, width=0) -> None:
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)


def _disc_mask(size: tuple[int, int], cx: float, cy: float, r: float) -> Image.Image:
    mask = Image.new("L", size, 0)
    _disc(ImageDraw.Draw(mask), cx, cy, r, 255)
    return mask


def _oval(cx: float, cy: float, rx: float, ry: float, angle: float, points: int = 14) -> list[tuple[float, float]]:
    """A rotated ellipse as a polygon."""
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return list(zip((cx + c * x - s * y).tolist(), (cy + s * x + c * y).tolist(), strict=True))


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, rough: float = 0.12, points: int = 28) -> list:
    """An irregular round outline (a heap, a dollop, an omelette)."""
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    wobble = np.ones(points)
    for k in (2, 3, 5):
        wobble += rough / k * np.sin(k * t + rng.uniform(0, 2 * math.pi)) * rng.uniform(0.5, 1.5)
    wobble += rng.normal(0, rough * 0.15, points)
    return list(zip((cx + r * wobble * np.cos(t)).tolist(), (cy + r * wobble * np.sin(t)).tolist(), strict=True))


def _scatter(c: Canvas, centres: np.ndarray, colours: list[RGB], length: float, width: float, spread: int = 12) -> None:
    """Small rotated ovals (grains, strips, leaves) at the given centres, colours picked at random."""
    for x, y in centres:
        colour = _jitter(c.rng, colours[int(c.rng.integers(len(colours)))], spread)
        scale = c.rng.uniform(0.75, 1.25)
        c.draw.polygon(_oval(x, y, length * scale, width * scale, c.rng.uniform(0, math.pi), 8), fill=colour)


def _dollop(c: Canvas, x: float, y: float, r: float, colour: RGB) -> None:
    c.draw.polygon(_blob(c.rng, x + r * 0.12, y + r * 0.12, r, 0.2), fill=(*_shade(colour, 0.75), 255))
    c.draw.polygon(_blob(c.rng, x, y, r, 0.2), fill=colour)
    _disc(c.draw, x - r * 0.3, y - r * 0.3, r * 0.25, _mix(colour, (255, 255, 255), 0.6))


def _specks(c: Canvas, x: float, y: float, r: float, count: int, colours: list[RGB], size: float) -> None:
    _scatter(c, np.asarray([x, y]) + (c.in_disc(r, count) - [c.cx, c.cy]), colours, size, size * 0.45, 15)


def _packed(c: Canvas, count: int, piece: float, spread: float) -> list[tuple[float, float]]:
    """Centres of `count` pieces of radius ~`piece` px, loosely packed in a disc that grows with the count."""
    area = spread * piece * math.sqrt(count)
    centres: list[tuple[float, float]] = []
    gap = 1.7 * piece
    for _ in range(4000):
        if len(centres) == count:
            break
        x, y = c.in_disc(area, 1)[0]
        if all((x - u) ** 2 + (y - v) ** 2 >= gap**2 for u, v in centres):
            centres.append((x, y))
        else:
            gap *= 0.9995  # relax slowly so crowded plates still fit every piece
    return centres


# ---- dishes -------------------------------------------------------------------------------------------------


def paint_borscht(c: Canvas, portion: float) -> None:
    """A deep-red soup surface (its size is the portion), beet strips, fat drops, sour cream and dill."""
    r = pile_radius(c.radius, portion) * 1.15
    _disc(c.draw, c.cx, c.cy, r * 1.03, (95, 18, 28))
    _disc(c.draw, c.cx, c.cy, r, _jitter(c.rng, (150, 28, 42), 10))
    _scatter(c, c.in_disc(r * 0.88, int(30 * portion) + 10), [(175, 40, 62), (120, 20, 35), (215, 130, 90)],
             r * 0.12, r * 0.025)
    _scatter(c, c.in_disc(r * 0.9, 25), [(235, 140, 55)], r * 0.025, r * 0.02)
    x, y = c.polar(c.rng.uniform(0, r * 0.3), c.rng.uniform(0, 2 * math.pi))
    _dollop(c, x, y, r * 0.22, (248, 246, 236))
    _specks(c, x, y, r * 0.4, 14, [(40, 100, 35), (70, 130, 45)], r * 0.03)


def paint_shawarma(c: Canvas, portion: float) -> None:
    """A grilled lavash roll (length and thickness grow with the portion) with an open end showing the filling."""
    length = c.radius * 1.25 * (portion / 1.25) ** 0.6
    width = c.radius * 0.5 * (portion / 1.25) ** 0.4
    dx, dy = math.cos(c.angle), math.sin(c.angle)
    mask = Image.new("L", c.image.size, 0)
    md = ImageDraw.Draw(mask)
    md.line([(c.cx - dx * length / 2, c.cy - dy * length / 2), (c.cx + dx * length / 2, c.cy + dy * length / 2)],
            fill=255, width=int(width))
    for sign in (-1, 1):
        _disc(md, c.cx + sign * dx * length / 2, c.cy + sign * dy * length / 2, width / 2, 255)
    wrap = Image.new("RGBA", c.image.size, (*_jitter(c.rng, (226, 188, 132), 10), 255))
    wd = ImageDraw.Draw(wrap)
    for k in range(-12, 13):  # diagonal grill marks across the roll
        ox, oy = c.cx + dx * k * width * 0.28, c.cy + dy * k * width * 0.28
        wd.line([(ox - dy * width + dx * width * 0.4, oy + dx * width + dy * width * 0.4),
                 (ox + dy * width - dx * width * 0.4, oy - dx * width - dy * width * 0.4)],
                fill=(165, 108, 58, 255), width=max(2, int(width * 0.09)))
    for x, y in c.in_disc(length * 0.6, 40):
        _disc(wd, x, y, width * c.rng.uniform(0.01, 0.06), (140, 90, 45, 255))
    c.image.paste(wrap, (0, 0), mask)
    ex, ey = c.cx + dx * length / 2, c.cy + dy * length / 2  # the open end
    _disc(c.draw, ex, ey, width * 0.42, (235, 225, 200))
    filling = np.asarray([ex, ey]) + (c.in_disc(width * 0.32, 22) - [c.cx, c.cy])
    _scatter(c, filling, [(130, 70, 40), (200, 40, 35), (80, 150, 60), (245, 240, 225)], width * 0.09, width * 0.05)


def paint_salad(c: Canvas, portion: float) -> None:
    """A heap of green leaves (its area is the portion) with tomato wedges and cucumber slices."""
    r = pile_radius(c.radius, portion)
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r * 0.9), fill=(60, 120, 45))
    greens = [(70, 150, 50), (110, 180, 70), (45, 110, 40), (150, 200, 90)]
    _scatter(c, c.in_disc(r * 0.85, int(70 * portion) + 20), greens, r * 0.2, r * 0.1, 18)
    for x, y in c.in_disc(r * 0.7, int(4 * portion) + 2):
        size = r * c.rng.uniform(0.11, 0.15)
        c.draw.pieslice([x - size, y - size, x + size, y + size], c.rng.uniform(0, 360), 0, fill=(205, 35, 30))
        _disc(c.draw, x, y, size * 0.35, (240, 120, 90))
    for x, y in c.in_disc(r * 0.7, int(4 * portion) + 3):
        _disc(c.draw, x, y, r * 0.1, (205, 232, 165), outline=(45, 110, 40), width=max(2, int(r * 0.025)))


def paint_pasta(c: Canvas, portion: float) -> None:
    """A nest of spaghetti (its area is the portion) under a meat sauce, with parmesan and basil."""
    r = pile_radius(c.radius, portion)
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r * 0.95, 0.08), fill=(215, 180, 95))
    thickness = max(2, int(c.radius * 0.022))
    for x, y in c.in_disc(r * 0.65, int(70 * portion) + 20):
        bend = c.rng.uniform(0.2, 0.45) * r
        start = c.rng.uniform(0, 360)
        box = [x - bend, y - bend, x + bend, y + bend]
        c.draw.arc(box, start, start + c.rng.uniform(90, 220), fill=(180, 140, 60), width=thickness + 1)
        c.draw.arc(box, start, start + c.rng.uniform(90, 220), fill=_jitter(c.rng, (242, 212, 128), 8),
                   width=thickness)
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r * 0.42, 0.2), fill=(150, 42, 28))
    _scatter(c, c.in_disc(r * 0.38, 25), [(110, 50, 30), (175, 70, 40)], r * 0.04, r * 0.03)
    _specks(c, c.cx, c.cy, r * 0.5, 18, [(250, 246, 222)], r * 0.02)
    for _ in range(2):
        x, y = c.polar(r * c.rng.uniform(0.1, 0.3), c.rng.uniform(0, 2 * math.pi))
        c.draw.polygon(_oval(x, y, r * 0.11, r * 0.05, c.rng.uniform(0, math.pi)), fill=(40, 120, 40))


def paint_blini(c: Canvas, count: float) -> None:
    """Thin lacy pancakes folded into quarters, fanned around the plate (one per piece), with jam or sour cream."""
    count = int(count)
    size = c.radius * 0.6
    for k in range(count):
        turn = 2 * math.pi * k / max(count, 4) + c.rng.uniform(-0.1, 0.1)
        tip_x, tip_y = c.polar(c.radius * 0.1, turn)
        start = math.degrees(turn + c.angle) - 36
        box = [tip_x - size, tip_y - size, tip_x + size, tip_y + size]
        c.draw.pieslice(box, start, start + 72, fill=(205, 145, 70), outline=(150, 95, 40), width=2)
        inner = [tip_x - size * 0.95, tip_y - size * 0.95, tip_x + size * 0.95, tip_y + size * 0.95]
        c.draw.pieslice(inner, start + 2, start + 70, fill=_jitter(c.rng, (244, 208, 130), 8))
        fold = [tip_x - size * 0.6, tip_y - size * 0.6, tip_x + size * 0.6, tip_y + size * 0.6]
        c.draw.arc(fold, start + 6, start + 66, fill=(200, 140, 70), width=max(2, int(size * 0.03)))
        for _ in range(45):  # the lacy browned spots
            x, y = c.polar(c.rng.uniform(0.15, 0.92) * size, turn + math.radians(c.rng.uniform(-32, 32)))
            _disc(c.draw, x, y, c.rng.uniform(size * 0.01, size * 0.04), (178, 108, 42))
    topping = (170, 22, 40) if c.rng.uniform() < 0.5 else (250, 248, 238)
    _dollop(c, c.cx, c.cy, c.radius * 0.12, topping)


def paint_pelmeni(c: Canvas, count: float) -> None:
    """Pale dumplings, one drawn per piece, with sour cream and dill."""
    piece = c.radius * 0.1
    for x, y in _packed(c, int(count), piece, 1.05):
        turn = c.rng.uniform(0, math.pi)
        c.draw.polygon(_oval(x + piece * 0.15, y + piece * 0.18, piece, piece * 0.8, turn), fill=(150, 140, 120))
        c.draw.polygon(_oval(x, y, piece, piece * 0.8, turn), fill=_jitter(c.rng, (240, 230, 206), 6))
        c.draw.polygon(_oval(x + piece * 0.1, y + piece * 0.1, piece * 0.55, piece * 0.38, turn),
                       fill=(222, 208, 180))
        _disc(c.draw, x - piece * 0.35, y - piece * 0.3, piece * 0.2, (252, 250, 240))
    x, y = c.polar(c.rng.uniform(0, c.radius * 0.1), 0)
    _dollop(c, x, y, c.radius * 0.12, (250, 248, 238))
    _specks(c, c.cx, c.cy, c.radius * 0.5, 16, [(40, 100, 35), (70, 130, 45)], c.radius * 0.02)


def paint_plov(c: Canvas, portion: float) -> None:
    """A bumpy heap of rice grains (its area is the portion) with carrot strips and chunks of meat."""
    r = pile_radius(c.radius, portion)
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.22, 40), fill=(214, 160, 80))
    grain = c.radius * 0.04
    rice = [(244, 214, 150), (232, 188, 108), (250, 230, 180), (220, 165, 85)]
    _scatter(c, c.in_disc(r * 0.97, int(420 * portion)), rice, grain, grain * 0.38, 10)
    _scatter(c, c.in_disc(r * 0.85, int(40 * portion) + 5), [(230, 105, 25), (245, 135, 35)], grain * 2.4,
             grain * 0.45)
    for x, y in c.in_disc(r * 0.7, int(5 * portion) + 2):
        c.draw.polygon(_blob(c.rng, x, y, grain * 1.6, 0.3, 8), fill=_jitter(c.rng, (105, 55, 30), 10))


def paint_omelette(c: Canvas, portion: float) -> None:
    """A round yellow omelette with a browned edge (its area is the portion), herbs and tomato bits."""
    r = pile_radius(c.radius, portion) * 1.1
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.1), fill=(205, 145, 55))
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r * 0.88, 0.08), fill=_jitter(c.rng, (246, 214, 92), 8))
    for x, y in c.in_disc(r * 0.7, 20):
        _disc(c.draw, x, y, r * c.rng.uniform(0.01, 0.06), (252, 232, 140))
    _specks(c, c.cx, c.cy, r * 0.7, int(12 * portion) + 4, [(50, 120, 40), (80, 150, 50)], r * 0.05)
    _specks(c, c.cx, c.cy, r * 0.6, int(5 * portion) + 2, [(210, 40, 30)], r * 0.06)


def paint_syrniki(c: Canvas, count: float) -> None:
    """Thick golden-brown cottage-cheese pancakes, one per piece, dusted with sugar, cherry jam on each, sour cream."""
    piece = c.radius * 0.25
    for x, y in _packed(c, int(count), piece, 1.05):
        _disc(c.draw, x + piece * 0.1, y + piece * 0.12, piece, (120, 70, 30))
        _disc(c.draw, x, y, piece, (168, 92, 38))
        _disc(c.draw, x - piece * 0.05, y - piece * 0.05, piece * 0.8, _jitter(c.rng, (214, 140, 62), 8))
        _disc(c.draw, x - piece * 0.12, y - piece * 0.12, piece * 0.45, (232, 172, 92))
        _specks(c, x, y, piece * 0.8, 10, [(252, 250, 245)], piece * 0.06)
        _disc(c.draw, x + piece * 0.15, y - piece * 0.1, piece * 0.3, _jitter(c.rng, (128, 18, 36), 10))
    x, y = c.polar(c.radius * 0.62, c.rng.uniform(0, 2 * math.pi))
    _dollop(c, x, y, c.radius * 0.12, (250, 248, 238))


def paint_buckwheat(c: Canvas, portion: float) -> None:
    """A heap of brown buckwheat grains (its area is the portion) with a pat of butter and parsley."""
    r = pile_radius(c.radius, portion)
    c.draw.polygon(_blob(c.rng, c.cx, c.cy, r, 0.1), fill=(98, 58, 30))
    grain = c.radius * 0.026
    _scatter(c, c.in_disc(r * 0.95, int(550 * portion)), [(122, 76, 40), (146, 96, 52), (86, 50, 26)],
             grain, grain * 0.7, 10)
    x, y = c.polar(c.rng.uniform(0, r * 0.3), c.rng.uniform(0, 2 * math.pi))
    c.draw.polygon(_oval(x, y, r * 0.16, r * 0.12, c.rng.uniform(0, math.pi), 4), fill=(250, 232, 150))
    _specks(c, c.cx, c.cy, r * 0.8, 8, [(60, 140, 50)], r * 0.05)


# dish slug -> painter
PAINTERS: dict[str, Painter] = {
    "borscht": paint_borscht,
    "shawarma": paint_shawarma,
    "salad": paint_salad,
    "pasta": paint_pasta,
    "blini": paint_blini,
    "pelmeni": paint_pelmeni,
    "plov": paint_plov,
    "omelette": paint_omelette,
    "syrniki": paint_syrniki,
    "buckwheat": paint_buckwheat,
}


# ---- colours ------------------------------------------------------------------------------------------------


def _mix(a: tuple, b: tuple, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a[:3], b[:3], strict=True))  # type: ignore[return-value]


def _shade(colour: tuple, factor: float) -> RGB:
    return tuple(int(min(255, max(0, round(v * factor)))) for v in colour[:3])  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, colour: tuple, amount: float) -> RGB:
    return tuple(int(min(255, max(0, v + rng.normal(0, amount / 2)))) for v in colour[:3])  # type: ignore[return-value]
