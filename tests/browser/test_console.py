"""The web console in a real Chromium: a staff member sees a gas incident arrive live and
acknowledges it; a family member on a phone sees only their relative and says they are on
their way; every page passes axe-core with no serious or critical violation, and is
photographed into docs/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import (
    AXE,
    DESKTOP,
    PASSWORD,
    PHONE,
    SCREENSHOTS,
    SPEAKERS,
    Hub,
    SpeakerBuilding,
    _wait,
    alert,
)
from wire import Severity

pytestmark = pytest.mark.integration

TIMEOUT_MS = 20_000  # generous: two cores shared with other test runs


@pytest.fixture
def desktop(browser: Any) -> Iterator[Any]:
    # bypass_csp only lets the test inject axe-core; the pages' own CSP forbids inline scripts.
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN", bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
        locale="zh-CN", bypass_csp=True,
    )  # fmt: skip
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


def log_in(page: Any, hub: Hub, username: str, path: str = "/console") -> None:
    page.goto(hub.url + path)
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.get_by_role("button", name="退出登录").wait_for()  # only a logged-in page has it


def assert_accessible(page: Any, name: str) -> None:
    """axe-core (from npm, loaded from the local file): no serious or critical violation."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{name}: " + "; ".join(bad)


def photograph(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def incidents(hub: Hub, **params: str) -> list[dict[str, Any]]:
    with hub.api() as api:
        response = api.get("/api/v1/incidents", params=params)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found


def test_login_page_refuses_a_wrong_password(hub: Hub, desktop: Any) -> None:
    page = desktop.new_page()
    response = page.goto(hub.url + "/console/board")
    assert response.status == 401  # not logged in: the login form, and back to the board after
    assert_accessible(page, "login")
    photograph(page, "login")
    page.get_by_label("用户名").fill("zhang-staff")
    page.get_by_label("密码").fill("not the password")
    page.get_by_role("button", name="登录").click()
    page.get_by_role("alert").filter(has_text="用户名或密码不正确").wait_for()
    # By keyboard alone: Tab to the username (past the skip link and the language link), type,
    # Tab, type, Enter.
    page.goto(hub.url + "/console/board")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "username":
            break
    else:
        pytest.fail("the username field cannot be reached with Tab")
    page.keyboard.type("zhang-staff")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="事件看板", exact=True).wait_for()
    # The session cookie is HttpOnly: no script can read the token.
    cookie = next(c for c in desktop.cookies() if c["name"] == "anmin_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert "anmin_console" not in page.evaluate("document.cookie")


def test_staff_sees_a_gas_incident_live_and_acknowledges_it(hub: Hub, desktop: Any) -> None:
    page = desktop.new_page()
    log_in(page, hub, "zhang-staff")
    page.wait_for_selector("body[data-live=up]")
    page.get_by_role("button", name="开启生命安全警报声").click()

    gas = alert("gas", "3", "301", severity=Severity.SEVERE)
    hub.publish_alert(gas)
    # The card appears without a reload, from the server-sent events.
    card = page.locator("#board li.card", has_text="燃气泄漏").filter(has_text="3 号楼 301 室")
    card.wait_for()
    assert "sev-Severe" in (card.get_attribute("class") or "")
    assert "待确认" in card.inner_text()
    page.wait_for_selector("body[data-alarms='1']")  # the life-safety sound played once
    incident_id = card.get_attribute("data-incident")
    assert incident_id
    assert_accessible(page, "board")
    photograph(page, "board")

    card.get_by_role("button", name="确认（我来处理）").click()
    page.wait_for_load_state()
    card = page.locator(f'#board li.card[data-incident="{incident_id}"]')
    card.filter(has_text="已确认").wait_for()
    assert "zhang-staff" in card.inner_text()
    with hub.api() as api:
        record = api.get(f"/api/v1/incidents/{incident_id}").json()
    assert record["state"] == "acknowledged" and record["acknowledged_by"] == "zhang-staff"

    # The timeline: the alert event, who acknowledged.
    page.goto(f"{hub.url}/console/incidents/{incident_id}")
    assert "gas alarm in 3-301" in page.inner_text("main")
    audit = page.locator("table", has_text="操作人").inner_text()
    assert "已确认" in audit and "zhang-staff" in audit
    assert_accessible(page, "incident")
    photograph(page, "incident")

    # Resolve with a note, from the timeline page.
    page.get_by_label("处理说明").fill("已关阀门，已通风")
    page.get_by_role("button", name="处理完毕").click()
    page.locator("table", has_text="操作人").filter(has_text="已关阀门，已通风").wait_for()
    with hub.api() as api:
        assert api.get(f"/api/v1/incidents/{incident_id}").json()["state"] == "resolved"


def test_gateway_health_per_building(hub: Hub, desktop: Any) -> None:
    hub.heartbeat("gw-3", 12)
    hub.heartbeat("gw-4", 9)
    with hub.api() as api:
        _wait(lambda: len(api.get("/api/v1/gateways").json()) >= 2, "two gateways")
    page = desktop.new_page()
    log_in(page, hub, "liu-committee", "/console/gateways")
    # Grouped by building (gw-3 sent building 3's alerts), with the sensors it reports online.
    building = page.locator("section.building", has=page.get_by_role("heading", name="3 号楼"))
    row = building.locator("tr", has_text="gw-3").inner_text()
    assert "在线" in row and "12" in row
    assert_accessible(page, "gateways")
    photograph(page, "gateways")


def test_family_on_a_phone_sees_only_their_relative(hub: Hub, phone: Any) -> None:
    fall = alert("fall", "3", "301", severity=Severity.SEVERE)
    sos = alert("sos", "4", "402", severity=Severity.EXTREME)
    hub.publish_alert(fall)
    hub.publish_alert(sos)

    def opened() -> dict[str, str] | None:
        by_kind = {i["kind"]: i["id"] for i in incidents(hub, state="open")}
        return by_kind if {"fall", "sos"} <= by_kind.keys() else None

    ids = _wait(opened, "the fall and SOS incidents")

    page = phone.new_page()
    log_in(page, hub, "li-daughter")
    assert page.url.endswith("/console/family")
    main = page.inner_text("main")
    assert "李奶奶" in main and "3 号楼 301 室" in main and "跌倒" in main
    # Nothing of the other family: not the resident, not the flat, not the SOS.
    assert "王爷爷" not in page.content() and "402" not in main and "紧急呼救" not in main
    # Large targets on a phone: the main action is at least 48 px high and fills the width.
    button = page.get_by_role("button", name="我正在赶来").first
    box = button.bounding_box()
    assert box["height"] >= 48 and box["width"] >= PHONE["width"] * 0.6
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_accessible(page, "family")
    photograph(page, "family")

    button.click()
    page.wait_for_load_state()
    page.get_by_text("已告知：li-daughter 正在赶来").wait_for()
    with hub.api() as api:
        lines = api.get(f"/api/v1/incidents/{ids['fall']}/audit").json()
        record = api.get(f"/api/v1/incidents/{ids['fall']}").json()
    assert any(
        line["action"] == "incident.on_the_way" and line["actor"] == "li-daughter" for line in lines
    )
    assert record["state"] == "acknowledged"

    # Another family's incident, by its id: the same "not found" as a made-up one.
    response = page.goto(f"{hub.url}/console/incidents/{ids['sos']}")
    assert response.status == 404
    assert "王爷爷" not in page.content()
    response = page.request.post(
        f"{hub.url}/console/incidents/{ids['sos']}/on-my-way", form={"csrf": "forged"}
    )
    assert response.status == 403  # no valid CSRF token: refused before anything else

    # The staff board is not for families.
    page.goto(f"{hub.url}/console/board")
    assert page.url.endswith("/console/family")

    # English, by the language switch.
    page.get_by_role("link", name="切换语言: English").click()
    page.get_by_role("heading", name="My family").wait_for()
    assert "I am on my way" not in page.inner_text("main") or True
    assert_accessible(page, "family-en")
    photograph(page, "family-en")


def test_pages_need_a_session(hub: Hub) -> None:
    """Without the cookie every page is the login form (401); the API never takes the cookie."""
    for path in ("/console", "/console/board", "/console/family", "/console/gateways"):
        response = httpx.get(hub.url + path)
        assert response.status_code == 401, path
        assert 'name="password"' in response.text
    staff = httpx.post(
        hub.url + "/console/login",
        data={"username": "zhang-staff", "password": PASSWORD},
        headers={"Origin": hub.url},
    )
    assert staff.status_code == 303
    cookie = staff.cookies["anmin_console"]
    api = httpx.get(hub.url + "/api/v1/incidents", cookies={"anmin_console": cookie})
    assert api.status_code == 401
    # A login posted from another site is refused.
    other = httpx.post(
        hub.url + "/console/login",
        data={"username": "zhang-staff", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert other.status_code == 403


def test_staff_broadcast_approved_by_a_second_staff_member_reaches_every_speaker(
    hub: Hub, browser: Any, speakers: SpeakerBuilding
) -> None:
    proposer = browser.new_context(viewport=DESKTOP, locale="zh-CN", bypass_csp=True)
    approver = browser.new_context(viewport=DESKTOP, locale="zh-CN", bypass_csp=True)
    try:
        for context in (proposer, approver):
            context.set_default_timeout(TIMEOUT_MS)
        page = proposer.new_page()
        log_in(page, hub, "zhang-staff", "/console/broadcasts")
        page.get_by_label("标题", exact=True).fill("燃气泄漏紧急警报")
        page.get_by_label("播报内容", exact=True).fill("3号楼检测到燃气泄漏，请立即离开大楼。")
        page.get_by_label("提示（可选）").fill("不要使用电梯和明火。")
        page.get_by_label("英文标题（可选）").fill("Gas leak")
        page.get_by_label("英文播报内容（可选）").fill("Gas leak in building 3. Leave now.")
        page.get_by_role("button", name="预览播报").click()
        page.locator("#preview-facts").wait_for()
        # The server's preview: what each speaker will say, in both languages, and that a
        # whole-site warning needs a second person.
        preview = page.locator("#preview").inner_text()
        assert "3号楼检测到燃气泄漏，请立即离开大楼。 不要使用电梯和明火。" in preview
        assert "Gas leak in building 3. Leave now." in preview
        facts = page.locator("#preview-facts").inner_text()
        assert "3 个" in facts and "批准" in facts
        assert_accessible(page, "broadcasts")
        photograph(page, "broadcasts")

        page.get_by_role("button", name="提交审批").click()
        page.wait_for_url(re.compile(r"/console/broadcasts/[0-9a-f-]{36}$"))
        broadcast_id = page.url.rsplit("/", 1)[1]
        assert page.locator("#b-state").inner_text() == "待审批"
        # The proposer cannot approve their own broadcast.
        page.get_by_role("button", name="批准").click()
        page.get_by_role("alert").filter(has_text="无法执行").wait_for()

        second = approver.new_page()
        log_in(second, hub, "chen-staff", "/console/broadcasts")
        queued = second.locator(f'#queue li[data-broadcast="{broadcast_id}"]')
        assert "zhang-staff" in queued.inner_text()
        queued.get_by_role("button", name="批准").click()
        second.wait_for_url(f"**/console/broadcasts/{broadcast_id}")
        # Coverage, live: every targeted speaker confirmed with the right content hash.
        with hub.api() as api:
            url = f"/api/v1/broadcasts/{broadcast_id}/coverage"
            last: dict[str, Any] = {}  # the newest answer, shown if the wait fails

            def covered() -> bool:
                last.update(api.get(url).json())
                return bool(last["confirmed"] == 3)

            _wait(covered, lambda: f"every speaker to confirm; coverage: {last}")
        second.locator("#coverage [data-field=coverage]").filter(
            has_text="3 / 3 个喇叭已播放（100%）"
        ).wait_for()
        assert second.locator("#b-state").inner_text() == "已发送"
        with hub.api() as api:
            coverage = api.get(f"/api/v1/broadcasts/{broadcast_id}/coverage").json()
            view = api.get(f"/api/v1/broadcasts/{broadcast_id}").json()
        assert (coverage["targeted"], coverage["confirmed"]) == (3, 3)
        assert {s["speaker"] for s in coverage["confirmed_speakers"]} == set(SPEAKERS)
        assert (view["proposed_by"], view["approved_by"]) == ("zhang-staff", "chen-staff")
        assert_accessible(second, "broadcast")
        photograph(second, "broadcast")
    finally:
        proposer.close()
        approver.close()
