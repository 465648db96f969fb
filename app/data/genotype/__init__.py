"""Genotype readers (PLINK, VCF, HapMap, numeric), phenotype tables, QC and model encodings."""
