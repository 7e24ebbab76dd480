"""Contract tests: the MYSuite client and the archive against a hostile provider over real HTTP.

Every hostile answer must end as one of our typed errors, with nothing written to disk and no
request to a host the provider was not configured with.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models import Job
from providers.answers import MalformedAnswer
from providers.base import TransientError
from providers.links import PDF, XML, ZIP, LinkPolicy, UnexpectedContent, UnsafeLink
from providers.mysuite import MySuiteClient, MySuiteConfig
from tasks import archive
from tests.hostile.server import HOSTILE_IDS, Hostile
from tests.providers.mysuite_samples import native_xml

LARGE = (1 << 20) + 4096
MakeClient = Callable[..., MySuiteClient]


@pytest.fixture
def make_client(hostile: tuple[Hostile, str]) -> Iterator[MakeClient]:
    _, base = hostile
    made: list[MySuiteClient] = []

    def make(links: LinkPolicy | None = None) -> MySuiteClient:
        config = MySuiteConfig(
            async_url=f"{base}/mysuite/async/factwsfront.asmx",
            sync_url=f"{base}/mysuite/sync/FactWSFront.asmx",
            requestor="12211111-1111-1111-1111-111111111111",
            connect_timeout=2.0,
            read_timeout=10.0,
            incall_wait=0.0,
        )
        client = MySuiteClient(config, links=links)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def links_for(client: MySuiteClient, internal_id: str) -> dict[str, str]:
    request_id = client.submit(native_xml(LARGE, internal_id=internal_id), internal_id).request_id
    return dict(client.retrieve(request_id).links)


# -- identifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_IDS))
def test_hostile_document_guid_is_a_typed_error(make_client: MakeClient, name: str) -> None:
    client = make_client()
    request_id = client.submit(native_xml(LARGE, internal_id=f"GUID:{name}"), f"GUID:{name}").request_id
    with pytest.raises(MalformedAnswer) as verified:
        client.verify(request_id)
    assert "DocumentGUID" in str(verified.value) and len(str(verified.value)) < 400
    with pytest.raises(MalformedAnswer):
        client.retrieve(request_id)


@pytest.mark.parametrize("name", sorted(HOSTILE_IDS))
def test_hostile_request_id_is_a_typed_error(make_client: MakeClient, name: str) -> None:
    with pytest.raises(MalformedAnswer) as submitted:
        make_client().submit(native_xml(LARGE, internal_id=f"RID:{name}"), f"RID:{name}")
    assert "RequestID" in str(submitted.value)


# -- links -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["foreign", "redirect-out", "redirect-loop"])
def test_links_away_from_the_provider_are_never_fetched(
    hostile: tuple[Hostile, str], make_client: MakeClient, tmp_path: Path, case: str
) -> None:
    state, _ = hostile
    client = make_client()
    hits = state.admin_hits
    link = links_for(client, f"LINK:{case}")["xml"]
    with pytest.raises(UnsafeLink) as refused:
        client.download(link, tmp_path / "x.zip")
    assert state.admin_hits == hits  # the other origin's admin endpoint was never reached
    assert link not in str(refused.value)
    assert not any(tmp_path.iterdir())


def test_redirect_within_the_provider_is_followed_after_its_check(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    result = client.download(links_for(client, "LINK:redirect-in")["xml"], tmp_path / "x.zip")
    assert result.content_type == ZIP and result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    refusing = make_client(LinkPolicy.for_provider([client.config.async_url], {"EINVOICE_LINK_MAX_REDIRECTS": "0"}))
    with pytest.raises(UnsafeLink, match="redirects more than 0 times"):
        refusing.download(links_for(refusing, "LINK:redirect-in")["xml"], tmp_path / "y.zip")


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("json", UnexpectedContent, "neither XML, PDF nor ZIP"),
        ("doctype", UnexpectedContent, "DOCTYPE"),
        ("bomb", UnexpectedContent, "holds a file larger than"),
        ("broken-xml", TransientError, "not well-formed"),
        ("damaged-zip", TransientError, "damaged"),
    ],
)
def test_wrong_or_damaged_bodies_are_refused(
    make_client: MakeClient, tmp_path: Path, case: str, error: type[Exception], message: str
) -> None:
    client = make_client()
    with pytest.raises(error, match=message) as refused:
        client.download(links_for(client, f"LINK:{case}")["xml"], tmp_path / "x.bin")
    assert type(refused.value) is error
    assert not any(tmp_path.iterdir())


def test_oversize_body_is_cut_at_the_cap(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    link = links_for(client, "LINK:oversize")["xml"]
    capped = make_client(
        LinkPolicy.for_provider([client.config.async_url], {"EINVOICE_LINK_MAX_ZIP_BYTES": str(256 << 10)})
    )
    with pytest.raises(UnexpectedContent, match="larger than the 262144-byte cap"):
        capped.download(link, tmp_path / "x.zip")
    assert not any(tmp_path.iterdir())


def test_archive_refuses_a_link_serving_the_wrong_kind(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    links = links_for(client, "PDF:xml-as-pdf")
    job = Job(id=str(uuid.uuid4()), entity="JES900109Q90", doc_guid=None, doc_year=2026, created_at=datetime.now(UTC))
    with pytest.raises(UnexpectedContent, match="the pdf link served application/xml"):
        archive.download(tmp_path, job, "pdf", links["pdf"], client)
    assert not any(tmp_path.rglob("*.*"))
    saved = archive.download(tmp_path, job, "xml", links["xml"], client)
    assert saved.sha256 == hashlib.sha256(saved.path.read_bytes()).hexdigest()
    assert [p.name for p in saved.path.parent.iterdir()] == [saved.path.name]  # no temporary left


# -- the policy itself -------------------------------------------------------------------------


def test_policy_hosts_schemes_and_settings() -> None:
    policy = LinkPolicy.for_provider(
        ["https://api.mysuite.example/async.asmx"], {"EINVOICE_LINK_HOSTS": "files.example, cdn.example:8443"}
    )
    assert str(policy.check("https://api.mysuite.example/f?sig=1")).startswith("https://")
    assert policy.check("https://FILES.example./a.zip").scheme == "https"  # case and root dot ignored
    assert policy.check("https://cdn.example:8443/a.zip").port == 8443
    for bad, reason in [
        ("http://api.mysuite.example/f", "plain http"),
        ("https://api.mysuite.example:8443/f", "not one of the provider's hosts"),
        ("https://cdn.example/a.zip", "not one of the provider's hosts"),
        ("https://169.254.169.254/latest/meta-data", "not one of the provider's hosts"),
        ("https://api.mysuite.example@evil.example/f", "credentials"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("ftp://api.mysuite.example/f", "not an http(s) URL"),
        ("https://[::1/", "not a URL"),
    ]:
        with pytest.raises(UnsafeLink, match=re.escape(reason)):
            policy.check(bad)
    allowed = LinkPolicy.for_provider(["https://api.mysuite.example/"], {"EINVOICE_ALLOW_HTTP_LINKS": "true"})
    assert allowed.check("http://api.mysuite.example/f").scheme == "http"
    sandbox = LinkPolicy.for_provider(["http://127.0.0.1:8080/mysuite/async"], {})
    assert sandbox.allow_http and sandbox.check("http://127.0.0.1:8080/files/x")
    with pytest.raises(UnsafeLink):
        sandbox.check("http://127.0.0.1:9/internal-admin")  # same host, another port: another service
    with pytest.raises(UnsafeLink):
        sandbox.check("http://localhost:8080/files/x")
    assert dict(LinkPolicy.for_provider([], {}).max_bytes) == {XML: 50 << 20, PDF: 50 << 20, ZIP: 1 << 30}
    for name, value in [("EINVOICE_LINK_MAX_XML_BYTES", "0"), ("EINVOICE_LINK_HOSTS", "a.example/path")]:
        with pytest.raises(ValueError, match=name):
            LinkPolicy.for_provider([], {name: value})
