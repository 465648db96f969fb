"""Models layer: pure torch modules and their configs. No file formats, no Qt."""
