"""PTM-Mamba (Peng et al., Nature Methods 2025) as ptmkit parts: its PTM-aware vocabulary first."""
