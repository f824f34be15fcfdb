"""Import only the parts of pyroute2 drbdha uses.

pyroute2's package __init__ eagerly imports every subsystem it has (IPDB, NDB, conntrack,
nftables, wireguard, ...): 13 MB of RSS and 0.36 s at start-up, of which drbdha needs
rtnetlink alone. When nothing has imported pyroute2 yet, we register the package as a bare
namespace (its real __path__, none of its __init__ code) so that importing a submodule loads
just that submodule and what it needs. The submodules import each other by full path, never
from the package root, so they work unchanged; tests exercise them through drbdha.net. If
pyroute2 is already imported in full (a test process, say), that module is used as it is.

The Debian package ships pyroute2 0.9 in drbdha's own directory, /usr/share/drbdha/vendor:
Debian's python3-pyroute2 is 0.7 (bookworm 0.7.2, trixie 0.7.7), without AsyncIPRoute. When
drbdha runs from Debian's dist-packages and that directory exists, it goes first on
sys.path, ahead of a python3-pyroute2 some other package may have installed. Anywhere else
(a venv, pip) the pyroute2 installed with drbdha is used.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Final

VENDOR: Final = Path("/usr/share/drbdha/vendor")
DIST_PACKAGES: Final = Path("/usr/lib/python3/dist-packages")


def use_vendored(path: list[str], vendor: Path = VENDOR, here: Path = Path(__file__)) -> None:
    if here.is_relative_to(DIST_PACKAGES) and vendor.is_dir() and str(vendor) not in path:
        path.insert(0, str(vendor))


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


use_vendored(sys.path)
_bare_package()

from pyroute2.iproute.linux import AsyncIPRoute  # noqa: E402
from pyroute2.netlink.diag import DiagSocket  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl.marshal import MarshalRtnl  # noqa: E402

__all__ = ["AsyncIPRoute", "DiagSocket", "MarshalRtnl", "NetlinkError"]
