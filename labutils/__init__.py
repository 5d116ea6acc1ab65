"""labutils: the library behind the vllm-lws-lab notebooks and the `labctl` CLI.

One module per concern; see the README's architecture section for the map.
"""

from labutils.errors import LabError

__all__ = ["LabError", "__version__"]

__version__ = "0.1.0"
