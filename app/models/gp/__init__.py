"""Deep genomic-prediction networks (pure torch): DNNGP, DeepGS and DLGWAS as their originals build them."""

from app.models.gp.deepgs import DeepGS
from app.models.gp.dlgwas import DLGWAS, ISRU
from app.models.gp.dnngp import DNNGP

__all__ = ["DLGWAS", "DNNGP", "ISRU", "DeepGS"]
