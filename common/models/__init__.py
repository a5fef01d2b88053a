"""Native LLaDA / Dream model code (no remote code): args from config.json, one transformer, official key maps."""
from common.models.args import ModelArgs, args_from_hf, family_of, hf_config_from_args, read_hf_config
from common.models.transformer import DiffusionLM
from common.models.weights import build_model, export_checkpoint, key_map, save_model

__all__ = ["ModelArgs", "DiffusionLM", "args_from_hf", "build_model", "export_checkpoint", "family_of",
           "hf_config_from_args", "key_map", "read_hf_config", "save_model"]
