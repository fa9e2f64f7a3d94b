"""Qt widgets of the viewer. Only this package (and gui.app) imports Qt and pyqtgraph."""
