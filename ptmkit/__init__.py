"""ptmkit: protein PTM site predictors composed from interchangeable plugins."""

__version__ = "0.1.0"

#: Version of the plugin interface (ptmkit.api: hooks, decorators and base classes). A plugin
#: declares the version it was built for; one outside SUPPORTED_API_VERSIONS is refused with a
#: clear message. 2 added Head, declared feature state, decorator registration, aliases and
#: ReadContext; packages built for 1 still load.
API_VERSION = 2
SUPPORTED_API_VERSIONS: tuple[int, ...] = (1, 2)
