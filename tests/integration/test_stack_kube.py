"""The ``kube`` fixture's API server, driven with the real kubectl: CRDs Established, custom resources
stored and listed by plural and short name, RBAC and token authentication really enforced."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from batchop.api.names import GROUP, PLURAL, SHORT_NAME
from tests.fixtures.stack import KubeHandle

RESOURCE = """\
apiVersion: azurebatch.dev/v1alpha1
kind: BatchJobSchedule
metadata:
  name: stack-smoke
  namespace: default
spec:
  schedule:
    recurrenceInterval: PT4H
  jobSpecification:
    poolInfo:
      poolId: existing-pool
    jobManagerTask:
      id: jobmanager
      commandLine: /bin/sh -c 'echo hello'
"""


def test_crds_are_established(kube: KubeHandle) -> None:
    assert f"customresourcedefinition.apiextensions.k8s.io/{PLURAL}.{GROUP}" in kube.crds
    result = kube.kubectl("get", "crd", f"{PLURAL}.{GROUP}", "-o", "json", check=True)
    conditions = {c["type"]: c["status"] for c in json.loads(result.stdout)["status"]["conditions"]}
    assert conditions["Established"] == "True"


def test_custom_resource_round_trip_with_plural_and_short_name(kube: KubeHandle) -> None:
    applied = kube.kubectl("apply", "-f", "-", input=RESOURCE)
    assert applied.returncode == 0, applied.stderr
    try:
        listed = kube.kubectl("get", PLURAL, "-o", "name", check=True)
        assert f"batchjobschedule.{GROUP}/stack-smoke" in listed.stdout
        short = kube.kubectl("get", SHORT_NAME, "stack-smoke", "-o", "jsonpath={.spec.schedule.recurrenceInterval}",
                             check=True)
        assert short.stdout == "PT4H"
    finally:
        kube.kubectl("delete", PLURAL, "stack-smoke", "--wait=false")


def test_schema_rejects_a_wrong_type_on_the_server(kube: KubeHandle) -> None:
    bad = RESOURCE.replace("recurrenceInterval: PT4H", "recurrenceInterval: [not, a, string]")
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=bad)
    assert result.returncode != 0
    assert "recurrenceInterval" in result.stderr


def test_requests_without_a_valid_token_are_refused(kube: KubeHandle) -> None:
    if kube.external:
        pytest.skip("authentication of an external cluster is its own business")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(f"{kube.server}/api/v1/namespaces", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=context)
    assert refused.value.code == 401


def test_rbac_is_enforced_for_a_service_account_without_roles(kube: KubeHandle) -> None:
    allowed = kube.kubectl("auth", "can-i", "list", PLURAL, "--as", "system:serviceaccount:default:nobody")
    assert allowed.stdout.strip() == "no"
    assert kube.kubectl("auth", "can-i", "list", PLURAL).stdout.strip() == "yes"
