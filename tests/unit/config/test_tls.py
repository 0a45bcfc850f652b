"""TLS settings: amqps:// CA, client certificate and key, and the S3 CA bundle reach the clients they configure."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from shared.amqp.connection import BrokerConfig
from shared.blob.factory import s3_config
from shared.blob.s3 import S3BlobStore
from shared.config.base import CommonSettings, load_settings
from tests.tls_certs import TlsFiles, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certs(tmp_path_factory.mktemp("tls"))


class TestTlsSettings:
    """The env names of DESIGN §6 set the TLS files; a broker context verifies the server and presents our cert."""

    def test_env_names(self, certs: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MISTNET_AMQP_URL", "amqps://edge-a:pw@broker.example:5671/prod")
        monkeypatch.setenv("MISTNET_AMQP_CA_FILE", str(certs.ca))
        monkeypatch.setenv("MISTNET_AMQP_CERT_FILE", str(certs.client_cert))
        monkeypatch.setenv("MISTNET_AMQP_KEY_FILE", str(certs.client_key))
        monkeypatch.setenv("S3_ENDPOINT_URL", "https://s3.example:8443")
        monkeypatch.setenv("MISTNET_S3_CA_BUNDLE", str(certs.ca))
        settings = load_settings(CommonSettings)
        assert (settings.amqp_ca_file, settings.amqp_cert_file, settings.amqp_key_file) == (
            certs.ca,
            certs.client_cert,
            certs.client_key,
        )
        assert s3_config(settings).ca_bundle == certs.ca

    def test_amqps_context(self, certs: TlsFiles) -> None:
        config = BrokerConfig(
            "amqps://u:p@localhost:5671/", ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.client_key
        )
        context = config.ssl_context()
        assert context is not None
        assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
        assert [dict(pair[0] for pair in ca["subject"]) for ca in context.get_ca_certs()] == [
            {"commonName": "mistnet-test-ca"}
        ]
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2

    def test_plain_amqp_has_no_context(self, certs: TlsFiles) -> None:
        assert BrokerConfig("amqp://u:p@localhost/", ca_file=certs.ca).ssl_context() is None

    def test_mismatched_key_is_refused(self, certs: TlsFiles) -> None:
        config = BrokerConfig("amqps://u:p@localhost/", cert_file=certs.client_cert, key_file=certs.server_key)
        with pytest.raises(ssl.SSLError):
            config.ssl_context()

    def test_s3_client_verifies_with_the_bundle(self, certs: TlsFiles, tmp_path: Path) -> None:
        settings = CommonSettings(
            s3_endpoint_url="https://localhost:8443",
            s3_ca_bundle=certs.ca,
            s3_access_key_id="k",
            s3_secret_access_key="s",  # type: ignore[arg-type]
        )
        store = S3BlobStore(s3_config(settings))
        assert store._client._endpoint.http_session._verify == str(certs.ca)
        assert store._client.meta.endpoint_url == "https://localhost:8443"
