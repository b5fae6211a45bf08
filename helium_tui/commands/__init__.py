"""One module per CLI command group; `helium_tui.cli` registers them. Heavy imports stay inside commands."""
