"""The Qt window (PySide6 + pyqtgraph). Widgets only: every long computation goes through app.jobs."""
