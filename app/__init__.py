"""OmicsLab: deep representation models for single-cell and genotype data, without code."""

__version__ = "0.1.0"
