"""rudolph-ft: fine-tune and use Sber's RuDOLPH hyper-modal transformer (left text -> image -> right text)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import MODEL_PRESETS, VQGAN_PRESETS, RuDolphConfig, VQGANConfig

__version__ = "0.1.0"

# Heavy (torch) modules load on first use, so `import rudolph_ft` and the CLI's --help stay fast.
_LAZY = {
    "RuDolph": "rudolph_ft.model",
    "KVCache": "rudolph_ft.model",
    "RuDolphOutput": "rudolph_ft.model",
    "load_model": "rudolph_ft.model",
    "save_model": "rudolph_ft.model",
    "VQGAN": "rudolph_ft.model.vqgan",
    "save_vqgan": "rudolph_ft.model.vqgan",
    "load_vqgan": "rudolph_ft.model.vqgan",
    "load_vae": "rudolph_ft.model.vqgan",
    "Tokenizer": "rudolph_ft.tokenizer",
    "load_tokenizer": "rudolph_ft.tokenizer",
    "train_tokenizer": "rudolph_ft.tokenizer",
    "load_components": "rudolph_ft.components",
    "Trainer": "rudolph_ft.train.loop",
    "load_train_config": "rudolph_ft.train.config",
    "preprocess_image": "rudolph_ft.data.images",
    "Task": "rudolph_ft.tasks",
    "TASKS": "rudolph_ft.tasks",
    "get_task": "rudolph_ft.tasks",
}

__all__ = ["RuDolphConfig", "VQGANConfig", "MODEL_PRESETS", "VQGAN_PRESETS", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from .model import KVCache, RuDolph, RuDolphOutput, load_model, save_model  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rudolph_ft' has no attribute {name!r}")
