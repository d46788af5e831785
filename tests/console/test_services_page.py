"""The services page at scale: counts over every row, most urgent first, search,
filters, key paging, maintenance shown; and its query parsing, pure."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from health.models import CircuitBreaker, MaintenanceWindow, Service
from orchestration.console import service_list

pytestmark = pytest.mark.django_db


def many(n: int, **fields) -> None:
    prefix = fields.pop("prefix", "svc")
    Service.objects.bulk_create(
        Service(name=f"{prefix}-{i:03d}", base_url="http://127.0.0.1:9", **fields) for i in range(n)
    )


def names(html: str) -> list[str]:
    return re.findall(r'<tr data-service="([^"]+)"', html)


def next_link(html: str) -> str | None:
    found = re.search(r'rel="next" href="([^"]+)"', html)
    return found[1].replace("&amp;", "&") if found else None


def test_the_counts_are_over_every_service_not_the_page(staff_browser):
    many(70, health="healthy")
    many(3, prefix="down", health="unhealthy")
    html = staff_browser.get("/services/").content.decode()
    assert "70 of 73 healthy" in html and len(names(html)) == 50
    assert names(html)[:3] == ["down-000", "down-001", "down-002"]  # unhealthy first


def test_an_open_breaker_comes_first_and_disabled_services_last(staff_browser):
    many(2, health="healthy")
    Service.objects.create(name="off", base_url="http://127.0.0.1:9", enabled=False, health="unhealthy")
    tripped = Service.objects.create(name="tripped", base_url="http://127.0.0.1:9", health="healthy")
    CircuitBreaker.objects.filter(pk=tripped.circuit_id).update(state="open")
    html = staff_browser.get("/services/").content.decode()
    assert names(html) == ["tripped", "svc-000", "svc-001", "off"]


def test_paging_by_key_visits_every_service_once(staff_browser):
    many(120, health="healthy")
    many(7, prefix="bad", health="unhealthy")
    seen, url = [], "/services/"
    while url:
        html = staff_browser.get(url).content.decode()
        seen += names(html)
        url = next_link(html)
    assert len(seen) == 127 and len(set(seen)) == 127 and seen[:7] == [f"bad-{i:03d}" for i in range(7)]


def test_every_rank_is_paged_in_order_and_counted_with_its_breaker(staff_browser):
    """Each rank is read apart along its index: the pages still run through the ranks
    in order, a page may end inside one, and an open breaker moves a service (and its
    count) to "circuit open" unless the service is disabled."""
    from orchestration.console.data import service_counts

    many(30, prefix="up", health="healthy")
    many(30, prefix="down", health="unhealthy")
    many(5, prefix="new", health="unknown")
    many(3, prefix="off", health="unhealthy", enabled=False)
    Service.objects.create(name="stuck", base_url="http://127.0.0.1:9", health="circuit_open")
    for name in ("down-007", "off-001", "up-012"):
        tripped = Service.objects.get(name=name)
        CircuitBreaker.objects.filter(pk=tripped.ensure_circuit().pk).update(state="open")
    seen, url = [], "/services/"
    while url:
        html = staff_browser.get(url).content.decode()
        seen += names(html)
        url = next_link(html)
    down = [f"down-{i:03d}" for i in range(30) if i != 7]
    up = [f"up-{i:03d}" for i in range(30) if i != 12]
    new = [f"new-{i:03d}" for i in range(5)]
    off = [f"off-{i:03d}" for i in range(3)]
    assert seen == ["down-007", "stuck", "up-012", *down, *new, *up, *off]
    assert service_counts() == {"healthy": 29, "unhealthy": 29, "unknown": 5, "circuit_open": 3, "disabled": 3}


def test_search_and_filters_narrow_the_list_and_say_how_many_match(staff_browser):
    many(5, prefix="web", tags=["eu", "front"])
    many(5, prefix="db", kind="tcp", check_config={"host": "127.0.0.1", "port": 5432}, tags=["eu-west"])
    Service.objects.filter(name="db-001").update(health="unhealthy")
    html = staff_browser.get("/services/?q=WEB-00").content.decode()
    assert names(html) == [f"web-{i:03d}" for i in range(5)] and "of 5 matching" in html
    assert names(staff_browser.get("/services/?kind=tcp&health=unhealthy").content.decode()) == ["db-001"]
    # A tag matches whole: "eu" is not "eu-west".
    assert len(names(staff_browser.get("/services/?tag=eu").content.decode())) == 5
    assert names(staff_browser.get("/services/?breaker=open").content.decode()) == []
    assert len(names(staff_browser.get("/services/?breaker=closed").content.decode())) == 10


@pytest.mark.parametrize(
    ("query", "field"),
    [("health=sideways", "health"), ("breaker=ajar", "breaker"), ("kind=ftp", "kind"), ("after=x", "after")],
)
def test_a_bad_filter_is_a_400_naming_it(staff_browser, query, field):
    response = staff_browser.get(f"/services/?{query}")
    assert response.status_code == 400 and field in response.content.decode()


def test_services_under_maintenance_are_marked_with_the_window(staff_browser):
    many(2, health="unhealthy", tags=["eu"])
    now = timezone.now()
    MaintenanceWindow(
        name="eu-upgrade", starts_at=now - timedelta(minutes=5), ends_at=now + timedelta(hours=1), tags=["eu"]
    ).save_by(actor="ann")
    html = staff_browser.get("/services/").content.decode()
    assert "eu-upgrade" in html and "no alerts for these" in html
    assert html.count('title="Under a maintenance window now: no alerts">maintenance') == 2


def test_the_page_costs_the_same_queries_at_any_size(staff_browser, django_assert_max_num_queries):
    many(30, health="healthy")
    staff_browser.get("/services/")
    with django_assert_max_num_queries(14):
        staff_browser.get("/services/")
    many(300, prefix="more", health="healthy")
    with django_assert_max_num_queries(14):
        staff_browser.get("/services/")


# --- pure ---------------------------------------------------------------------------------
def test_the_query_reads_its_parameters_and_writes_them_back():
    query = service_list.parse({"q": " web ", "health": "disabled", "kind": "dns", "after": "2:svc-9"})
    assert (query.q, query.health, query.kind, query.after) == ("web", "disabled", "dns", (2, "svc-9"))
    assert query.query_string() == "q=web&health=disabled&kind=dns"
    assert service_list.parse({}).filtered is False
    assert service_list.decode_key(service_list.encode_key((3, "a:b"))) == (3, "a:b")


@pytest.mark.parametrize("value", ["", "9:x", "a:b", "2", "2:"])
def test_a_page_key_not_made_here_is_refused(value):
    with pytest.raises(service_list.FilterError):
        service_list.decode_key(value)
