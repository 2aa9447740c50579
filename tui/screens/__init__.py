"""Screens: the three modes (train, generate, models) and the dialogs."""
