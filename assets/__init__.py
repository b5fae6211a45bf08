"""Data shipped inside the wheel: the default model bundle (`helium-default/`)."""
