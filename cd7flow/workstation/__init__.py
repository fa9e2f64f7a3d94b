"""The technician's workstation: Qt-free state behind the viewer's workspace, auto-gating, sessions and assay panels."""
