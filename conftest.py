"""Test-session setup shared by tests/ and the notebooks nbval executes.

The offline guard (:mod:`xattr_nb.offline`): this process and every kernel or papermill run it starts
(they inherit the environment) refuse connections to anything but this machine.
"""

import os

os.environ["XATTR_NB_BLOCK_NETWORK"] = "1"

import xattr_nb.offline

xattr_nb.offline.block_network()
