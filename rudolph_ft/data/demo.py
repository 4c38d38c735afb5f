"""The synthetic demo dataset: drawn food photos in the article's CSV format (`rudolph-ft data demo`).

Ten dishes, each with its own look; every photo shows a random portion (a heap whose area grows with it, or a
number of pieces), and its nutrients are the dish's per-unit values times that portion, rounded like a label
(grams to one decimal, kcal to an integer). A model must read the picture, not just the dish, to get kcal right.
Sample `i` depends only on `(seed, i)`, so a bigger `n` extends a smaller set.

The checkout holds the set as `data/demo/`; an installed rudolph-ft draws the same set (same files, byte for byte, with
the same Pillow and numpy) into the user's cache on first use (`ensure_demo_data`).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .config import ARTICLE_COLUMNS
from .demo_draw import PAINTERS, random_scene, render
from .demo_styles import BOWL_PAINTERS, PORTIONS, random_bowl_scene, render_bowls

__all__ = ["DEMO_DATA", "Dish", "DISHES", "BOWL_DISHES", "STYLES", "DemoSample", "demo_data_dir", "demo_sample",
           "ensure_demo_data", "make_demo"]

# The demo set's folder in the checkout, and its name in run configs (configs/demo.yaml, the `data.path` default).
DEMO_DATA = "data/demo"


@dataclass(frozen=True)
class Dish:
    """A demo dish: its name in captions, what one unit is, nutrients per unit, and the range of units drawn."""

    slug: str  # ASCII name, used in file names and to pick the painter
    name: str  # the name in the CSV and in captions
    unit: str  # what `per_unit` refers to
    per_unit: tuple[float, float, float, float]  # protein g, fat g, carbohydrate g, kcal
    amounts: tuple[float, float]  # portion range: size factor (continuous) or piece count (pieces)
    pieces: bool  # True: a whole number of pieces is drawn; False: a heap whose area is the portion

    def draw_amount(self, rng: np.random.Generator) -> float:
        """A random portion of this dish."""
        low, high = self.amounts
        if self.pieces:
            return float(rng.integers(int(low), int(high) + 1))
        return round(float(rng.uniform(low, high)), 2)

    def nutrients(self, amount: float) -> dict[str, str]:
        """Label values for a portion: `belok`, `fats`, `uglevod` in grams to one decimal, `kkal` an integer."""
        protein, fat, carbs, kcal = (value * amount for value in self.per_unit)
        return {"belok": f"{protein:.1f}", "fats": f"{fat:.1f}", "uglevod": f"{carbs:.1f}",
                "kkal": str(math.floor(kcal + 0.5))}


# Per-unit values are typical Russian recipe-table values (kcal ~ 4 P + 9 F + 4 C).
DISHES: tuple[Dish, ...] = (
    Dish("borscht", "борщ", "portion of 300 g", (7.5, 9.9, 19.5, 186), (0.8, 1.25), False),
    Dish("shawarma", "шаурма", "roll of 300 g", (24.0, 30.0, 54.0, 590), (0.8, 1.25), False),
    Dish("salad", "салат", "portion of 200 g", (2.4, 10.2, 7.8, 130), (0.8, 1.25), False),
    Dish("pasta", "паста", "portion of 250 g", (15.0, 12.5, 62.5, 420), (0.8, 1.25), False),
    Dish("blini", "блины", "pancake of 50 g", (3.0, 3.8, 13.0, 98), (3, 5), True),
    Dish("pelmeni", "пельмени", "dumpling of 12 g", (1.4, 1.6, 3.3, 33), (10, 15), True),
    Dish("plov", "плов", "portion of 250 g", (15.0, 20.0, 55.0, 460), (0.8, 1.25), False),
    Dish("omelette", "омлет", "omelette of 2 eggs, 120 g", (11.4, 15.0, 2.4, 190), (0.8, 1.25), False),
    Dish("syrniki", "сырники", "pancake of 55 g", (8.2, 5.0, 8.3, 111), (3, 4), True),
    Dish("buckwheat", "гречка", "portion of 200 g", (8.4, 2.2, 42.0, 221), (0.8, 1.25), False),
)

# The `bowls` style (`demo_styles`): eight other dishes, each in a bowl (soups, porridge) or on a plate, in portions
# of 0.5x to 1.6x the unit (the food's area). A held-out check of the demo's training setup.
BOWL_DISHES: tuple[Dish, ...] = (
    Dish("okroshka", "окрошка", "bowl of 300 g", (7.5, 6.9, 14.4, 150), PORTIONS, False),
    Dish("solyanka", "солянка", "bowl of 300 g", (12.0, 15.0, 6.0, 207), PORTIONS, False),
    Dish("ukha", "уха", "bowl of 300 g", (15.0, 4.5, 9.0, 137), PORTIONS, False),
    Dish("ovsyanka", "овсянка", "bowl of 250 g", (8.0, 6.0, 38.0, 238), PORTIONS, False),
    Dish("vinegret", "винегрет", "portion of 200 g", (3.2, 10.0, 21.0, 186), PORTIONS, False),
    Dish("olivie", "оливье", "portion of 200 g", (11.0, 33.0, 14.0, 397), PORTIONS, False),
    Dish("golubtsy", "голубцы", "two rolls, 300 g", (21.0, 24.0, 27.0, 408), PORTIONS, False),
    Dish("kotleta", "котлета с пюре", "cutlet and mash, 300 g", (18.0, 20.0, 30.0, 372), PORTIONS, False),
)
_BOWL_SERVED = {"okroshka", "solyanka", "ukha", "ovsyanka"}

#: demo styles: name -> its dishes (`closeup`, the default, is the checkout's data/demo)
STYLES: dict[str, tuple[Dish, ...]] = {"closeup": DISHES, "bowls": BOWL_DISHES}

_IMAGE_NAME = re.compile(r"^\d{4,}_[a-z]+\.jpg$")


@dataclass
class DemoSample:
    """One demo photo and its label."""

    index: int
    dish: Dish
    amount: float  # the portion drawn: size factor or piece count
    nutrients: dict[str, str]  # label values as written in the CSV
    image: Image.Image


def demo_sample(index: int, seed: int = 0, size: int = 128, amount: float | None = None,
                style: str = "closeup") -> DemoSample:
    """Draw demo photo `index` of the set made with `seed`: dish `index mod dishes` of the style, random scene and
    portion.

    Args:
        index: the sample number.
        seed: the dataset seed.
        size: side of the square photo in pixels.
        amount: force this portion instead of the random one (the scene stays the same); 0 draws the empty plate.
        style: `closeup` (the default: `DISHES`, `demo_draw`) or `bowls` (`BOWL_DISHES`, `demo_styles`).
    """
    dishes = _style_dishes(style)
    dish = dishes[index % len(dishes)]
    if style == "bowls":
        rng = np.random.default_rng([seed, index, 1])  # not the closeup stream: other scenes for the same seed
        scene = random_bowl_scene(rng, bowl=dish.slug in _BOWL_SERVED)
        drawn = dish.draw_amount(rng) if amount is None else amount
        painter = BOWL_PAINTERS[dish.slug] if drawn > 0 else None
        return DemoSample(index, dish, drawn, dish.nutrients(drawn), render_bowls(scene, painter, drawn, size))
    rng = np.random.default_rng([seed, index])
    scene = random_scene(rng)
    drawn = dish.draw_amount(rng) if amount is None else amount
    painter = PAINTERS[dish.slug] if drawn > 0 else None
    return DemoSample(index, dish, drawn, dish.nutrients(drawn), render(scene, painter, drawn, size))


def _style_dishes(style: str) -> tuple[Dish, ...]:
    if style not in STYLES:
        raise ValueError(f"unknown demo style {style!r}: use one of {', '.join(STYLES)}")
    return STYLES[style]


def make_demo(out: str | Path, n: int = 300, seed: int = 0, size: int = 128, quality: int = 90, *,
              named: str | Path | None = None, style: str = "closeup") -> Path:
    """Write a demo dataset: `out/images/NNNN_<dish>.jpg`, `out/data.csv` (the article's columns) and a README.

    Re-running with the same arguments writes byte-identical files; photos of an earlier run that the new
    one does not contain are removed.

    Args:
        out: the dataset folder (created if needed).
        n: number of photos.
        seed: dataset seed.
        size: photo side in pixels.
        quality: JPEG quality.
        named: the folder the README's command names (default: `out`; another when `out` is a staging folder).
        style: `closeup` (the default, the checkout's data/demo) or `bowls` (other dishes, drawn another way).

    Returns:
        The written `data.csv`.
    """
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    dishes = _style_dishes(style)
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = {f"{i:04d}_{dishes[i % len(dishes)].slug}.jpg" for i in range(n)}
    for stale in images.iterdir():
        if _IMAGE_NAME.match(stale.name) and stale.name not in names:
            stale.unlink()
    rows = []
    for i in range(n):
        sample = demo_sample(i, seed, size, style=style)
        relative = f"images/{i:04d}_{sample.dish.slug}.jpg"
        sample.image.save(out / relative, quality=quality, optimize=True)
        rows.append({"index": str(i), **sample.nutrients, "name": sample.dish.name, "path": relative})
    table = out / "data.csv"
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ARTICLE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "README.md").write_text(_readme(Path(named or out), n, seed, size, quality, style), encoding="utf-8")
    return table


def demo_data_dir() -> Path:
    """Where an installed rudolph-ft keeps the demo set: `data/demo` under the cache root of the image-code cache
    (`$RUDOLPH_FT_CACHE`, else `$XDG_CACHE_HOME/rudolph-ft`, else `~/.cache/rudolph-ft`)."""
    from .cache import default_cache_dir

    return default_cache_dir().parent / DEMO_DATA


def ensure_demo_data(folder: str | Path | None = None, *, n: int = 300,
                     echo: Callable[[str], None] = print) -> Path:
    """The folder holding the demo set (`make_demo` defaults: seed 0, 128 px), drawn there first when it has none.

    The set is drawn into a staging folder beside `folder` and renamed into place, so an interrupted or concurrent
    draw (several training processes) never leaves a half-written set behind.

    Args:
        folder: where the set lives (default: `demo_data_dir()`, the user's cache).
        n: number of photos (300: the checkout's `data/demo`).
        echo: told where the set is drawn.
    """
    folder = Path(folder) if folder is not None else demo_data_dir()
    if (folder / "data.csv").is_file():
        return folder
    echo(f"drawing the demo data set ({n} photos) into {folder} (once; `rudolph-ft data demo` draws the same set)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-drawing-", dir=folder.parent))
    try:
        make_demo(staging, n=n, named=folder)
        with contextlib.suppress(OSError):  # a non-empty folder: another process was faster, or a foreign folder
            os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (folder / "data.csv").is_file():
        raise FileExistsError(f"{folder} exists but holds no demo set (no data.csv): delete or empty it and rerun")
    return folder


def _readme(out: Path, n: int, seed: int, size: int, quality: int, style: str = "closeup") -> str:
    command = f"rudolph-ft data demo --out {shlex.quote(out.as_posix())} --n {n} --seed {seed} --size {size}"
    if quality != 90:
        command += f" --quality {quality}"
    if style != "closeup":
        command += f" --style {style}"
    dishes = _style_dishes(style)
    table = "\n".join(
        f"| {d.name} | {d.unit} | {' / '.join(f'{v:g}' for v in d.per_unit)} | "
        f"{'pieces' if d.pieces else 'size x'} {d.amounts[0]:g}..{d.amounts[1]:g} |"
        for d in dishes
    )
    purpose, layout, spread = _STYLE_TEXT[style]
    return f"""# Demo food dataset (synthetic)

{n} food photos, {size}x{size} px, **drawn by a program** (Pillow + numpy): no real photo, no real label.
Made with rudolph-ft (`rudolph_ft/data/demo.py`) by

    {command}

which rewrites identical files (same seed, Pillow {Image.__version__} and numpy {np.__version__} here). {purpose}

`data.csv` has the article's columns `{', '.join(ARTICLE_COLUMNS)}` (protein g, fat g, carbohydrates g,
kcal, dish name, image path relative to this folder). Photo `i` shows dish number `i mod {len(dishes)}` below {layout}.
Its nutrients are the per-unit values times the portion, rounded like a label (grams to one decimal, kcal to an
integer), so the dish gives the kcal to within {spread}, and the portion seen in the photo gives the rest.

| dish | unit | protein / fat / carbs g / kcal per unit | portion drawn |
| --- | --- | --- | --- |
{table}

License: generated data, free to use (same license as rudolph-ft).
"""


# per style: what the set is for, how photo i is drawn, how far the dish alone is from the kcal (README text)
_STYLE_TEXT = {
    "closeup": ("""It is the
default data of the quick start: small enough to fine-tune a tiny model on a CPU.""", """in a
close-up from above (the plate fills the photo; random table, white or cream plate, a slight camera shift, mild
random light) with a random portion: a heap whose area grows in proportion to the portion, or a number of pieces""",
                "about a fifth"),
    "bowls": ("""It is the
demo's second style: a held-out check of the quick start's training setup on other dishes drawn another way.""",
              """from
above, in the `bowls` style (a bowl or a plate of a random colour covering about 60% of the photo, at a random spot on
a plain table of a random colour, random light) with a random portion: food whose area grows in proportion to it""",
              "a factor of about 1.8"),
}
