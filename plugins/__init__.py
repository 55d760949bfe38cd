"""ptmkit's built-in plugins (installed as the ``ptmkit_plugins`` package)."""
