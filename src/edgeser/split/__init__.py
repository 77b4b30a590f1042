"""Splits: speaker-disjoint protocols (LOSO, production split) over manifests."""
