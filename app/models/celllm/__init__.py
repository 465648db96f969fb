"""CellLM: Performer encoder over a cell's expressed genes (config, encoder, model)."""

from app.models.celllm.config import PRESETS, CellLMConfig, preset
from app.models.celllm.model import CLS_ID, GENE_OFFSET, PAD_ID, CellLM, gene_token

__all__ = ["CLS_ID", "GENE_OFFSET", "PAD_ID", "PRESETS", "CellLM", "CellLMConfig", "gene_token", "preset"]
