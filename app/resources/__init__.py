"""The files OmicsLab reads at run time, shipped inside the package: model, icons, demo data.

They live in ``app/resources/`` (not a top-level ``resources/`` folder) so that one lookup,
``importlib.resources.files("app.resources")``, finds them the same way from a source checkout on
``PYTHONPATH``, an editable install, an installed wheel and a PyInstaller bundle; nothing is found through
paths relative to the checkout. Every other module takes its resource paths from here.

- ``models/celllm-tiny/``: the pretrained tiny CellLM (``models/README.md`` says how it was made; the
  scripts that made it sit beside it and are not shipped in the wheel).
- ``icons/``: the window and toolbar icons (SVG).
- ``demo/genotype/``: the simulated breeding population (``demo/README.md``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """The file system path of a shipped resource, e.g. ``resource_path("icons", "omicslab.svg")``.

    Resources are installed as plain files (wheels unpack, bundles collect them), so ``files()`` is a
    real folder; a zipped install, where it is not, is refused with a clear message.
    """
    root = files(__name__)
    if not isinstance(root, Path):  # e.g. imported from a zip archive: the readers need real files
        raise RuntimeError(f"OmicsLab's resources are not plain files ({root!r}); install OmicsLab unzipped "
                           "(pip install omicslab) instead of running it from an archive.")
    return root.joinpath(*parts)


MODELS = resource_path("models")
"""The shipped models, one folder each."""
CELLLM_TINY = MODELS / "celllm-tiny"
"""The pretrained tiny CellLM (the default ``--init`` of fine-tuning and ``--model`` of embedding)."""
ICONS = resource_path("icons")
"""Window and toolbar icons (SVG)."""
GENOTYPE_DEMO = resource_path("demo", "genotype")
"""The simulated genotype demo: ``genotypes.csv``, ``pheno.csv``, ``causal_markers.csv``, ``marker_map.csv``."""
