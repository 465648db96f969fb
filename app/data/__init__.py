"""Data layer: readers, validation, gene/ID mapping, encodings and export. No torch training, no Qt."""
