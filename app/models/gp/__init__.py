"""Deep genomic-prediction networks (pure torch): DNNGP, DeepGS and DLGWAS as their originals build them."""

from app.models.gp.deepgs import DeepGS
from app.models.gp.dlgwas import DLGWAS, ISRU
from app.models.gp.dnngp import DNNGP
from app.models.gp.dropout import Dropout, set_dropout_generator

__all__ = ["DLGWAS", "DNNGP", "ISRU", "DeepGS", "Dropout", "set_dropout_generator"]
