"""Helium's user interfaces: the Typer CLI (`helium ...`) and the Textual story studio (`helium`)."""
