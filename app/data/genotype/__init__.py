"""Genotype readers (PLINK, VCF, HapMap, numeric), phenotype tables, QC and model encodings."""

from app.data.genotype.align import AlignReport, align_markers
from app.data.genotype.pca import GenotypePCA, fit_pca
from app.data.genotype.pheno import JoinReport, join_phenotypes, pheno_id_candidates, read_phenotypes
from app.data.genotype.population import simulate_population, write_demo
from app.data.genotype.qc import QCReport, additive, allele_freq, check_informative, marker_means, one_hot, run_qc
from app.data.genotype.readers import detect_genotype_format, read_genotypes
from app.data.genotype.types import MISSING, GenotypeMatrix
from app.data.genotype.writers import write_genotypes, write_hapmap, write_numeric, write_plink, write_vcf

__all__ = [
    "MISSING",
    "AlignReport",
    "GenotypeMatrix",
    "GenotypePCA",
    "JoinReport",
    "QCReport",
    "additive",
    "align_markers",
    "allele_freq",
    "check_informative",
    "detect_genotype_format",
    "fit_pca",
    "join_phenotypes",
    "marker_means",
    "one_hot",
    "pheno_id_candidates",
    "read_genotypes",
    "read_phenotypes",
    "run_qc",
    "simulate_population",
    "write_demo",
    "write_genotypes",
    "write_hapmap",
    "write_numeric",
    "write_plink",
    "write_vcf",
]
