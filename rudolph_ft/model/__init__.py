"""The RuDOLPH transformer, its masks, loading/saving, and the VQGAN image tokenizer (`.vqgan`)."""

from .loading import load_model, model_from_state_dict, save_model
from .rudolph import KVCache, RuDolph, RuDolphOutput

__all__ = ["RuDolph", "RuDolphOutput", "KVCache", "load_model", "save_model", "model_from_state_dict"]
