"""What the gateway says on its own speakers when the hub cannot be reached in time."""

from __future__ import annotations

from datetime import datetime, timedelta

from wire import AlertEvent, Broadcast, Severity, uuid7

# Spoken words for each alarm kind (zh-CN, the residents' language). Plain and imperative.
_TEXT = {
    "gas": (
        "紧急通知：本楼检测到燃气泄漏。请立即打开门窗，不要开关电器，不要使用明火，迅速离开大楼。"
    ),
    "co": "紧急通知：本楼检测到一氧化碳超标。请立即开窗通风，离开房间，到室外呼吸新鲜空气。",
    "fire": "紧急通知：本楼发生火警。请用湿毛巾捂住口鼻，沿疏散通道迅速离开，不要乘坐电梯。",
}
_DEFAULT = "紧急通知：本楼发生紧急情况。请听从工作人员指挥，迅速离开大楼。"


def local_warning(event: AlertEvent, now: datetime, text: str = "") -> Broadcast:
    """A warning for this building only, made at the gateway from the alarm it raised."""
    return Broadcast(
        id=uuid7(int(now.timestamp() * 1000)),
        site=event.site,
        ts=now,
        severity=Severity.EXTREME,
        headline="本楼紧急警报（网关本地播报）",
        text=text or _TEXT.get(event.kind, _DEFAULT),
        buildings=[event.building] if event.building else [],
        repeat=2,
        expires=now + timedelta(hours=1),
        cause=event.id,
    )
