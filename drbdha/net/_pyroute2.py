"""Import only the parts of pyroute2 drbdha uses.

pyroute2's package __init__ eagerly imports every subsystem it has (IPDB, NDB, conntrack,
nftables, wireguard, ...): 13 MB of RSS and 0.36 s at start-up, of which drbdha needs
rtnetlink alone. When nothing has imported pyroute2 yet, we register the package as a bare
namespace (its real __path__, none of its __init__ code) so that importing a submodule loads
just that submodule and what it needs. The submodules import each other by full path, never
from the package root, so they work unchanged; tests exercise them through drbdha.net. If
pyroute2 is already imported in full (a test process, say), that module is used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _bare_package() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed: the imports below raise the usual ImportError
    package = types.ModuleType("pyroute2")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__spec__ = spec
    sys.modules["pyroute2"] = package


_bare_package()

from pyroute2.iproute.linux import AsyncIPRoute  # noqa: E402
from pyroute2.netlink.diag import DiagSocket  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl.marshal import MarshalRtnl  # noqa: E402

__all__ = ["AsyncIPRoute", "DiagSocket", "MarshalRtnl", "NetlinkError"]
