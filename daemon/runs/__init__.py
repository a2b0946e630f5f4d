"""What a run leaves behind, read and kept without torch: its checkpoints, the flagged-examples
store, the evolution snapshots and the per-example dynamics records."""
