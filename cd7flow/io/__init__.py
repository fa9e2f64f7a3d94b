"""File formats: FCS read/write, Gating-ML, FlowJo workspaces, manifests."""
