"""The local Prefect API: one server, and cheap TLS contexts for its http clients."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
)

from flows.api import write_one_certificate_bundle


def test_one_certificate_bundle_loads_as_a_ca_file(tmp_path: Path) -> None:
    bundle = write_one_certificate_bundle(tmp_path / "ca.pem")
    text = bundle.read_text()
    assert text.count("BEGIN CERTIFICATE") == 1
    assert text.rstrip().endswith("-----END CERTIFICATE-----")
    context = ssl.create_default_context(cafile=str(bundle))
    assert context.cert_store_stats()["x509_ca"] == 1


def test_local_api_points_prefect_clients_at_the_small_bundle(prefect_api_url: str) -> None:
    assert prefect_api_url.startswith("http://127.0.0.1:")
    assert os.environ["PREFECT_API_URL"] == PREFECT_API_URL.value() == prefect_api_url
    bundle = os.environ["PREFECT_API_SSL_CERT_FILE"]
    assert PREFECT_API_SSL_CERT_FILE.value() == bundle
    assert Path(bundle).read_text().count("BEGIN CERTIFICATE") == 1


def test_flow_runs_send_no_heartbeats_to_the_local_api(prefect_api_url: str) -> None:
    # Nothing watches heartbeats on an API that lives only as long as the run, and the
    # flow engine waits up to 1 s for its heartbeat thread at the end of each run.
    assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() is None
