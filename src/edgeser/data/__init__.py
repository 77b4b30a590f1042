"""Data description: labels, the manifest, one recipe per corpus, synthetic corpora in
the real layouts."""
