"""Curation: formats -> validate -> (score, dedup) -> split -> write. Every record gets exactly one
outcome."""
