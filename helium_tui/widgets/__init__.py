"""Widgets of the Helium studio, one area per module.

story_view (streamed story + token cursor), inspector (token alternatives), sliders, status_bar.
"""
