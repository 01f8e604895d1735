"""The console's pieces without a browser or servers: the message catalogue, the language
choice, the redirect guard, CSRF tokens, the push subscription parser and VAPID keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub import push
from hub.settings import HubSettings
from hub.web import i18n
from hub.web.session import csrf_for, safe_next

WEB = Path(i18n.__file__).parent
KEY_IN_TEMPLATE = re.compile(r"""\bt\(\s*["']([a-z_.]+)["']""")
KEY_IN_SCRIPT = re.compile(r"""\bt\(\s*"([a-z_.]+)"|label\(\s*"([a-z]+)\"""")


def test_both_languages_have_the_same_messages_and_every_used_key_exists() -> None:
    zh, en = i18n.MESSAGES["zh-CN"], i18n.MESSAGES["en"]
    assert zh.keys() == en.keys()
    for language in (zh, en):
        assert all(text.strip() for text in language.values())
    used: set[str] = set()
    for template in (WEB / "templates").glob("*.html"):
        used.update(KEY_IN_TEMPLATE.findall(template.read_text(encoding="utf-8")))
    script = (WEB / "static" / "console.js").read_text(encoding="utf-8")
    used.update(m[0] for m in KEY_IN_SCRIPT.findall(script) if m[0])
    assert used, "found no message keys: the pattern is wrong"
    # A key ending in "." is a prefix completed at run time (incident.state.open...).
    prefixes = {k for k in used if k.endswith(".")}
    assert all(any(key.startswith(p) for key in zh) for p in prefixes)
    assert sorted(used - prefixes - zh.keys()) == []
    # Placeholders agree between the languages.
    for key, text in zh.items():
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", en[key])), key


def test_language_choice_defaults_to_chinese() -> None:
    assert i18n.pick(None) == "zh-CN"
    assert i18n.pick("en") == "en" and i18n.pick("en-US") == "en"
    assert i18n.pick("zh") == "zh-CN" and i18n.pick("fr") == "zh-CN"
    t = i18n.translator("en")
    assert t("incident.place", building="3", unit="301") == "building 3, flat 301"
    assert i18n.label(t, "kind", "gas") == "Gas leak"
    assert i18n.label(t, "kind", "no-such-kind") == "no-such-kind"


def test_after_login_only_console_paths() -> None:
    assert safe_next("/console/board") == "/console/board"
    for bad in ("https://evil.example/", "//evil.example/console", "/api/v1/people", None, ""):
        assert safe_next(bad) == "/console"


def test_csrf_tokens_differ_per_session_and_secret() -> None:
    one = HubSettings(jwt_secret="a" * 32)
    two = HubSettings(jwt_secret="b" * 32)
    assert csrf_for(one, "token-1") == csrf_for(one, "token-1")
    assert csrf_for(one, "token-1") != csrf_for(one, "token-2")
    assert csrf_for(one, "token-1") != csrf_for(two, "token-1")


def test_push_subscriptions_are_checked() -> None:
    good = {"endpoint": "https://push.example/abc", "keys": {"p256dh": "BAAA", "auth": "xyz"}}
    assert push.Subscription.parse(good).endpoint == "https://push.example/abc"
    for bad, reason in [
        (None, "JSON object"),
        ({"endpoint": "ftp://x", "keys": good["keys"]}, "http(s) URL"),
        ({"endpoint": "https://x"}, "keys must be"),
        ({"endpoint": "https://x", "keys": {"p256dh": "", "auth": "a"}}, "keys.p256dh"),
    ]:
        with pytest.raises(ValueError, match=re.escape(reason)):
            push.Subscription.parse(bad)


def test_vapid_keys_from_the_command_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "vapid.pem"
    assert push.main(["keys", str(path)]) == 0
    assert push.main(["keys", str(path)]) == 1  # never overwrites a key in use
    vapid = push.Vapid.from_env({"ANMIN_HUB_VAPID_KEY": str(path)})
    assert vapid is not None and len(vapid.public_key) == 87  # 65 bytes, base64url
    assert push.Vapid.from_env({}) is None
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(push.PushError, match=r"python -m hub\.push keys"):
        push.Vapid.from_env({"ANMIN_HUB_VAPID_KEY": str(tmp_path / "bad.pem")})
    with pytest.raises(push.PushError, match="mailto: or https:"):
        push.Vapid.from_env({"ANMIN_HUB_VAPID_KEY": str(path), "ANMIN_HUB_VAPID_SUBJECT": "me"})
