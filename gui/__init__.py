"""The Qt desktop viewer (PySide6 + pyqtgraph). Widgets observe cd7flow models; no analysis here."""
