"""Service-account tokens through the Python `kubernetes` client: a TokenRequest for a
namespace's `default` ServiceAccount, then a second client that authenticates with only
that token (no client certificate), refused once the ServiceAccount is gone."""
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def wait_for_default_account(core, ns, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return core.read_namespaced_service_account("default", ns)
        except ApiException as e:
            if e.status != 404:
                raise
        time.sleep(0.2)
    raise AssertionError(f"no default ServiceAccount in {ns} after {timeout}s")


def token_client(api, token):
    """A client for the same server that presents only the bearer token."""
    c = client.Configuration()
    c.host = api.configuration.host
    c.ssl_ca_cert = api.configuration.ssl_ca_cert
    c.verify_ssl = True
    c.api_key = {"authorization": "Bearer " + token}
    return client.ApiClient(c)


def test_token_request_authenticates_as_the_service_account(api, ns):
    core = client.CoreV1Api(api)
    wait_for_default_account(core, ns)
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    issued = core.create_namespaced_service_account_token("default", ns, req)
    token = issued.status.token
    assert token.count(".") == 2, token
    assert issued.status.expiration_timestamp is not None

    as_sa = client.CoreV1Api(token_client(api, token))
    names = [c.metadata.name for c in as_sa.list_namespaced_config_map(ns).items]
    assert "kube-root-ca.crt" in names

    # Too short a lifetime: upstream's 422 on spec.expirationSeconds.
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service_account_token(
            "default", ns,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=60)),
        )
    assert e.value.status == 422

    # A tampered signature is refused.
    head, body, sig = token.split(".")
    forged = ".".join([head, body, sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")])
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(token_client(api, forged)).list_namespaced_config_map(ns)
    assert e.value.status == 401

    # Once the ServiceAccount is deleted its tokens stop working, even after the
    # controller re-creates `default` (a new uid).
    core.delete_namespaced_service_account("default", ns)
    with pytest.raises(ApiException) as e:
        as_sa.list_namespaced_config_map(ns)
    assert e.value.status == 401
