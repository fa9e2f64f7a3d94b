"""Qt-free parts of the technician's workstation (the ``cd7flow-gui`` viewer).

- :mod:`.autogate`: which protocol a sample gets, the automated fit, and what each fitted
  gate's own small plot shows (density of its parent, the gate outline, back-gating);
- :mod:`.session`: a viewer session (files by path + sha256, gates per sample as Gating-ML,
  edit log, view state) saved to one JSON file and validated when it is read back;
- :mod:`.workspace`: the open files by patient and tube (manifest, else keywords) with QC per file;
- :mod:`.screening_panel` / :mod:`.persistence_panel`: the assay panels' numbers, recomputed from
  the current (possibly edited) gates / one patient's CAR-T course.

Nothing here imports Qt: ``gui/`` observes these objects, the tests drive them directly.
"""
