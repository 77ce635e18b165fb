"""Pictures and files for humans: spectra, layer scores and probe charts, before/after frame grids,
NudeNet frame scoring, and output folders written all at once."""
