"""Writes notebooks/borscht.ipynb (the article's flow with rudolph-ft). Edit the cells here, then run:
    python scripts/make_notebook.py
"""

from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", """# Borscht calories with RuDOLPH and rudolph-ft

The flow of the Habr article *"Teach a hyper-modal transformer to predict the calories of borscht"*, done with
rudolph-ft: data → training → captions → nutrition prediction → zero-shot classification → text-to-image.

This notebook runs on a CPU in minutes because it uses the **demo**: a tiny RuDOLPH trained *from scratch* on the
synthetic food photos in `data/demo/`, with a tokenizer learned from their captions and a tiny random-weight VQGAN.
For the real thing, train `configs/borscht-350m.yaml` (pretrained RuDOLPH-350M, a GPU) and load that run instead.
Run it from the repository root."""),
    ("code", """import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUICK = os.environ.get("RUDOLPH_NOTEBOOK_QUICK") == "1"  # CI runs a short training to keep the notebook honest
RUN_DIR = Path(os.environ.get("RUDOLPH_NOTEBOOK_RUN", "runs/notebook-demo"))
torch.manual_seed(0)"""),
    ("md", """## 1. Data
The article's CSV: `index, belok, fats, uglevod, kkal, name, path`; each row becomes the caption
`блюдо: …; белков: …; жиров: …; углеводов: …; ккал: …;`. `check_data` reports every row it would exclude."""),
    ("code", """from rudolph_ft.data import check_data, food_config

report = check_data(food_config("data/demo"))
print(report.summary())
print(report.kept[0].caption)"""),
    ("md", "## 2. Training (the demo config; `rudolph-ft train configs/demo.yaml` does the same)"),
    ("code", """import shutil

from rudolph_ft.train.config import load_train_config
from rudolph_ft.train.loop import Trainer

overrides = [f"output_dir={RUN_DIR}", "logging.progress=false"]
if QUICK:
    overrides += ["train.max_steps=12", "eval.every=0", "eval.final=false", "checkpoint.every=0"]
shutil.rmtree(RUN_DIR, ignore_errors=True)
config = load_train_config("configs/demo.yaml", overrides)
summary = Trainer(config).run()
summary.get("eval", {}).get("model")"""),
    ("code", """from IPython.display import Image as Show

Show(filename=str(RUN_DIR / "loss_curve.png"))"""),
    ("md", "## 3. Captions for a photo, reranked by perplexity given the image"),
    ("code", """from rudolph_ft.components import load_components
from rudolph_ft.pipelines import generate_captions, rerank_by_image

components = load_components(RUN_DIR)
photo = "data/demo/images/0000_borscht.jpg"
captions = generate_captions(components, photo, template="блюдо:", n=8, top_k=16, top_p=0.6, temperature=0.8, seed=43)
for ranked in rerank_by_image(components, captions, photo):
    print(f"{ranked.score:9.3f}  {ranked.text}")"""),
    ("md", "## 4. Dish and calories"),
    ("code", """from rudolph_ft.pipelines import predict_nutrition

prediction = predict_nutrition(components, photo, n=8)
print(prediction.summary())
prediction.to_dict()["evidence"][:2]"""),
    ("md", "## 5. Zero-shot classification (perplexity of a caption per class)"),
    ("code", """from rudolph_ft.pipelines import zero_shot_classify

classes = ["борщ", "шаурма", "салат", "паста", "блины", "пельмени", "плов", "омлет"]
result = zero_shot_classify(components, photo, classes, template="блюдо: {}")
result"""),
    ("md", "## 6. Text to image"),
    ("code", """from rudolph_ft.pipelines import generate_images, image_grid

drawn = generate_images(components, "блюдо: борщ;", n=4, seed=42)
grid = image_grid(drawn.images)
grid"""),
]


def main() -> None:
    notebook = nbf.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbf.v4.new_markdown_cell(text) if kind == "md" else nbf.v4.new_code_cell(text)
                      for kind, text in CELLS]
    path = Path(__file__).resolve().parents[1] / "notebooks" / "borscht.ipynb"
    nbf.write(notebook, path)
    print(path)


if __name__ == "__main__":
    main()
