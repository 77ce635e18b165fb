"""Commands and helpers run from the repository (never shipped): the pack imported outside ComfyUI, output folders."""
