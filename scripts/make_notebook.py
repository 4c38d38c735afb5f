"""Writes notebooks/borscht.ipynb (the article's flow with rudolph-ft). Edit the cells here, then run:
    python scripts/make_notebook.py
"""

import hashlib
from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", """# Borscht calories with RuDOLPH and rudolph-ft

The flow of the Habr article *"Teach a hyper-modal transformer to predict the calories of borscht"*, done with
rudolph-ft: data → training → evaluation → captions → nutrition prediction → zero-shot classification →
text-to-image.

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
    ("md", """## 3. Evaluation on the held-out photos
Dish accuracy and kcal MAE from sampled captions, next to the always-the-mean baseline; which dishes get confused;
predicted vs true kcal; and the same per dish. The end of training writes them into the run folder (`eval.json`,
`confusion.png`, `kcal_scatter.png`); `rudolph-ft eval --model RUN` does it again for any run."""),
    ("code", """import json

from rudolph_ft.train.evaluate import evaluate_labelled_data, format_report
from rudolph_ft.train.plots import write_eval_plots

if (RUN_DIR / "eval.json").is_file():  # written by the end of training
    report = json.loads((RUN_DIR / "eval.json").read_text(encoding="utf-8"))
else:  # the quick run skips it: a lighter evaluation here (2 captions per photo, no swapped-photo check)
    report = evaluate_labelled_data(str(RUN_DIR), n=2, modality_check=False)
    write_eval_plots(report, RUN_DIR)
print(format_report(report, per_dish=False))"""),
    ("code", """from IPython.display import Markdown, display

display(Show(filename=str(RUN_DIR / "confusion.png")), Show(filename=str(RUN_DIR / "kcal_scatter.png")))
rows = [f"| {r['dish']} | {r['n']} | {r['dish_accuracy']:.2f} | "
        f"{'-' if r['kcal_mae'] is None else format(r['kcal_mae'], '.1f')} |" for r in report["per_dish"]]
Markdown("\\n".join(["| dish | photos | accuracy | kcal MAE |", "|---|---:|---:|---:|", *rows]))"""),
    ("md", "## 4. Captions for a photo, reranked by perplexity given the image"),
    ("code", """from rudolph_ft.components import load_components
from rudolph_ft.pipelines import generate_captions, rerank_by_image

components = load_components(RUN_DIR)
photo = "data/demo/images/0000_borscht.jpg"
captions = generate_captions(components, photo, template="блюдо:", n=8, top_k=16, top_p=0.6, temperature=0.8, seed=43)
for ranked in rerank_by_image(components, captions, photo):
    print(f"{ranked.score:9.3f}  {ranked.text}")"""),
    ("md", "## 5. Dish and calories"),
    ("code", """from rudolph_ft.pipelines import predict_nutrition

prediction = predict_nutrition(components, photo, n=8)
print(prediction.summary())
prediction.to_dict()["evidence"][:2]"""),
    ("md", "## 6. Zero-shot classification (perplexity of a caption per class)"),
    ("code", """from rudolph_ft.pipelines import zero_shot_classify

classes = ["борщ", "шаурма", "салат", "паста", "блины", "пельмени", "плов", "омлет"]
result = zero_shot_classify(components, photo, classes, template="блюдо: {}")
result"""),
    ("md", "## 7. Text to image"),
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
    for cell in notebook.cells:  # ids from the text: regenerating changes only the cells that changed
        cell.id = hashlib.sha256(cell.source.encode()).hexdigest()[:8]
    path = Path(__file__).resolve().parents[1] / "notebooks" / "borscht.ipynb"
    nbf.write(notebook, path)
    print(path)


if __name__ == "__main__":
    main()
