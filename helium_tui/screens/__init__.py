"""Screens of the Helium studio: studio (main), models (picker), no_model, help; library and training.

Each screen is one module; the app wires them to key bindings and the command palette.
"""
