"""The RuDOLPH transformer, its masks, loading/saving, and the VQGAN image tokenizer."""

from .loading import load_model, model_from_state_dict, save_model
from .rudolph import KVCache, RuDolph, RuDolphOutput
from .vqgan import VQGAN, VQGANLoadError, load_vae, load_vqgan, save_vqgan

__all__ = ["RuDolph", "RuDolphOutput", "KVCache", "load_model", "save_model", "model_from_state_dict", "VQGAN",
           "VQGANLoadError", "load_vqgan", "load_vae", "save_vqgan"]
