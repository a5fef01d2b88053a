"""common/cluster.py: importing it changes nothing; entry points call local_env() before ray is imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_importing_common_cluster_changes_no_environment():
    code = ("import os, json; before = dict(os.environ); import common.cluster; after = dict(os.environ); "
            "common.cluster.local_env(); print(json.dumps([before == after, os.environ['RAY_AUTH_MODE']]))")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE",)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert json.loads(out) == [True, "disabled"]
