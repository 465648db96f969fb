"""Genomic prediction: GBLUP and the deep models (DNNGP, DeepGS, DLGWAS) behind one contract (``base``),
cross-validation and metrics (``cv``), and the jobs the GUI and CLI run (``jobs``).

Nothing heavy is imported here: ``deep`` (torch) is loaded only when a deep model is asked for.
"""
