"""examples/tls: make-certs.py writes what the example needs, and the example compiles
with both HTTPS listeners on one port and the mTLS listener on its own."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

from meshgate.config.compile import compile_snapshot
from meshgate.config.loader import load_paths

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tls"


def test_the_tls_example_compiles_with_generated_certificates(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLE / "make-certs.py"), str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / ".gitignore").read_text() == "*\n"  # the keys stay out of git
    result = load_paths([str(EXAMPLE), str(tmp_path)])
    assert result.errors == [] and result.warnings == []
    snap = compile_snapshot(result.resources)
    shared = snap.ports[8443].tls
    assert set(shared.exact) == {"a.example.test", "b.example.test"}
    assert shared.verify_mode == ssl.CERT_NONE
    mtls = snap.ports[9443].tls.any_host
    assert mtls.client_cert == "required" and mtls.min_version == ssl.TLSVersion.TLSv1_3
    assert snap.ports[8080].tls is None and snap.ports[8080].limits.xff_trusted_hops == 1
