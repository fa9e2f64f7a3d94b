"""Assays: functions from samples + a protocol to tidy result records."""
