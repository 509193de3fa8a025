"""Benchmark: episodes x controllers x seeds with the RESCO metric, tables and plots, in parallel on Ray."""
