"""A checkpoint is a Hugging Face model folder: config.json, safetensors, tokenizer files."""

from fullchain.checkpoint.hf_config import config_from_hf, config_to_hf, parse_dtype
from fullchain.checkpoint.io import iter_tensors, load_config, load_model, save_model

__all__ = ["config_from_hf", "config_to_hf", "iter_tensors", "load_config", "load_model",
           "parse_dtype", "save_model"]
