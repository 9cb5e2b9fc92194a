"""Loop-closure evaluation: metrics against ground truth, offline and replay runners."""
