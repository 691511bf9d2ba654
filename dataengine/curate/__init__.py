"""Curation: quality stats and filters, dedup in token space, token-budget mixture balancing."""
