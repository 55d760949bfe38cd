"""ptmkit: protein PTM site predictors composed from interchangeable plugins."""

__version__ = "0.1.0"

#: Version of the plugin interface (hooks and base classes). A plugin declares the version it
#: was built for; an incompatible one is refused with a clear message.
API_VERSION = 1
