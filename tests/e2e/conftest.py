"""pytest wiring for certbound's end-to-end suite: one stack for the whole session.

Run (after `bash scripts/e2e-install.sh` and `cargo build`):
    .venv/bin/python -m pytest tests/e2e            # CERTBOUND_BIN overrides target/debug/certbound
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import FACES, Stack  # noqa: E402


@pytest.fixture(params=FACES)
def face(request) -> str:
    """The face a decision test runs through: "ext_authz" (Envoy's ext_authz filter -> a certbound
    process) or "module" (certbound inside the same Envoy as a dynamic module, on the listener's
    module_* twin, loading the same certbound-<mode>.toml). Test ids read test_x[ext_authz] /
    test_x[module]."""
    return request.param


@pytest.fixture(scope="session")
def stack(request):
    # The real certbound, always: the stand-in exists only for `stack.py smoke --standin`.
    st = Stack(standin=False, certbound_bin=os.environ.get("CERTBOUND_BIN"))
    st.start()  # dumps the logs itself if anything fails to come up
    print("\n" + st.describe(), file=sys.stderr)
    try:
        yield st
    finally:
        if request.session.testsfailed:
            st.dump_logs()
        st.stop()
    # certbound's contract: exit 0 on SIGTERM (graceful shutdown). Checked after stop(), so a
    # failure here shows as a teardown error of the last test.
    codes = {name: rc for name, rc in st.exit_codes().items() if name.startswith("certbound")}
    if any(rc != 0 for rc in codes.values()):
        st.dump_logs()
        pytest.fail(f"certbound did not exit 0 on SIGTERM: {codes}")
