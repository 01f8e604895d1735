"""Text to speech for a simulated speaker: a chime, then espeak-ng.

Chinese is spoken with espeak-ng's ``cmn-latn-pinyin`` voice, fed pinyin with tone numbers
(``san1 hao4 lou2``): Debian's plain ``cmn`` voice reads tone digits aloud, and digits in the
text are read as English numbers, so numbers are first written as Chinese words
(``3号楼`` -> ``三号楼``, ``101室`` -> ``一零一室``, ``25%`` -> ``百分之二十五``). English uses
espeak-ng's ``en`` voice as written (it reads numbers well). When pypinyin is not installed,
Chinese falls back to the ``cmn`` voice on the characters (numbers still as words).

Everything here but ``speak``/``render`` is pure. espeak-ng is optional: ``espeak_binary()``
says whether it is there; without it a speaker still plays (silently) and receipts.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import struct
import subprocess
import tempfile
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import wire
import wire.cap
from firmware_sim.errors import SimError

try:
    from pypinyin import Style, lazy_pinyin

    PINYIN = True
except ImportError:  # pragma: no cover - pypinyin is in anmin[sim]
    PINYIN = False

SAMPLE_RATE = 22050  # what espeak-ng writes: mono, 16-bit
PAUSE_S = 0.4  # between the chime and the words, and between two languages
# Speaking rates of espeak-ng's default speed (175 wpm), measured: for planning how long a
# rendition lasts when no WAV is made.
SECONDS_PER_SYLLABLE = 0.29
SECONDS_PER_CHAR = 0.072

DIGITS = "零一二三四五六七八九"
_PUNCTUATION = str.maketrans(
    {
        "，": ", ",
        "、": ", ",
        "。": ". ",
        "！": "! ",
        "？": "? ",
        "；": "; ",
        "：": ": ",
        "（": " ",
        "）": " ",
        "“": " ",
        "”": " ",
        "《": " ",
        "》": " ",
        "…": ". ",
        "—": ", ",
    }
)


class TtsError(SimError):
    """espeak-ng failed, or wrote something we cannot use."""


# -- numbers to Chinese words ---------------------------------------------------------------


def _section(n: int) -> str:
    """0 < n < 10000 as Chinese numerals, with 零 for inner gaps (1005 -> 一千零五)."""
    out = ""
    gap = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit:
            if gap and out:
                out += "零"
            out += DIGITS[digit] + unit
            gap = False
        else:
            gap = True
    return out


def cardinal(n: int) -> str:
    """A whole number as Chinese words: 15 -> 十五, 203 -> 二百零三, 12000 -> 一万二千.

    Up to 99,999,999; larger numbers are read digit by digit.
    """
    if n < 0:
        return "负" + cardinal(-n)
    if n == 0:
        return "零"
    if n >= 100_000_000:
        return digits(str(n))
    high, low = divmod(n, 10_000)
    out = _section(high) + "万" if high else ""
    if low:
        if high and low < 1000:
            out += "零"
        out += _section(low)
    if out.startswith("一十"):  # 十五, not 一十五
        out = out[1:]
    return out


def digits(text: str) -> str:
    """Digit by digit: 101 -> 一零一 (rooms, years, phone numbers)."""
    return "".join(DIGITS[int(c)] for c in text if c.isdigit())


def _decimal(whole: str, fraction: str) -> str:
    out = cardinal(int(whole))
    return out + ("点" + digits(fraction) if fraction else "")


_NUMBER = re.compile(
    r"(?P<time>(?P<h>\d{1,2})[:：](?P<m>\d{2}))"
    r"|(?P<pct>(?P<pw>\d+)(?:\.(?P<pf>\d+))?\s*[%％])"
    r"|(?P<num>(?P<w>\d+)(?:\.(?P<f>\d+))?)(?P<after>[室房年]?)"
)


def _number_words(match: re.Match[str]) -> str:
    if match["time"]:
        hour, minute = int(match["h"]), int(match["m"])
        if hour < 24 and minute < 60:
            spoken = cardinal(hour) + "点"
            if minute:
                spoken += ("零" if minute < 10 else "") + cardinal(minute) + "分"
            return spoken
        return digits(match["h"]) + "，" + digits(match["m"])
    if match["pct"]:
        return "百分之" + _decimal(match["pw"], match["pf"] or "")
    whole, fraction, after = match["w"], match["f"] or "", match["after"]
    # Room numbers, years, and anything that looks like a code or a phone number are read
    # digit by digit; everything else as a quantity.
    if not fraction and (
        (after in ("室", "房", "年") and len(whole) >= 3) or whole.startswith("0") or len(whole) > 8
    ):
        return digits(whole) + after
    return _decimal(whole, fraction) + after


def numbers_to_words(text: str) -> str:
    """Every Arabic number in Chinese text written as Chinese words."""
    return _NUMBER.sub(_number_words, text)


def to_pinyin(text: str) -> str:
    """Chinese text as pinyin with tone numbers (neutral tone 5), numbers as words first,
    Chinese punctuation as ASCII so espeak-ng pauses: ``3号楼，撤离`` -> ``san1 hao4 lou2,
    che4 li2``."""
    if not PINYIN:
        raise TtsError("pypinyin is not installed (pip install pypinyin)")
    worded = numbers_to_words(text)
    syllables = lazy_pinyin(worded, style=Style.TONE3, neutral_tone_with_five=True)
    spoken = " ".join(s.translate(_PUNCTUATION) for s in syllables)
    return re.sub(r"\s+([,.!?;:])", r"\1", re.sub(r"\s+", " ", spoken)).strip()


# -- what to say, in which voice ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Utterance:
    """What espeak-ng is given: a voice and the text in the form that voice reads."""

    voice: str
    text: str
    language: str


@functools.lru_cache(maxsize=256)
def utterance(announcement: wire.cap.Announcement) -> Utterance:
    """The voice and text for one announcement (cached: every speaker of a building converts
    the same words, and pinyin conversion costs about 0.3 ms)."""
    primary = announcement.language.lower().split("-")[0]
    if primary == "zh":
        if PINYIN:
            return Utterance("cmn-latn-pinyin", to_pinyin(announcement.text), announcement.language)
        return Utterance("cmn", numbers_to_words(announcement.text), announcement.language)
    if primary == "en":
        return Utterance("en", announcement.text, announcement.language)
    return Utterance(primary, announcement.text, announcement.language)


def utterances(broadcast: wire.Broadcast) -> tuple[Utterance, ...]:
    """The broadcast's script (``wire.cap.script``: drill prefix, languages) for espeak-ng."""
    return tuple(utterance(a) for a in wire.cap.script(broadcast))


def estimate_seconds(said: Sequence[Utterance]) -> float:
    """How long one rendition lasts (chime, pauses, words) at espeak-ng's default speed."""
    total = CHIME_S
    for u in said:
        if u.voice.startswith("cmn"):
            units = len(re.findall(r"[a-z]+[1-5]|[\u4e00-\u9fff]", u.text))
            total += PAUSE_S + units * SECONDS_PER_SYLLABLE
        else:
            total += PAUSE_S + len(u.text) * SECONDS_PER_CHAR
    return round(total, 3)


# -- sound ----------------------------------------------------------------------------------


def _tone(frequencies: Sequence[float], seconds: float, volume: float) -> array[int]:
    samples = array("h")
    count = int(SAMPLE_RATE * seconds)
    for i in range(count):
        t = i / SAMPLE_RATE
        envelope = min(1.0, t / 0.01) * math.exp(-3.0 * t / seconds)  # quick attack, decay
        value = sum(math.sin(2 * math.pi * f * t) for f in frequencies) / len(frequencies)
        samples.append(int(32767 * volume * envelope * value))
    return samples


def silence(seconds: float) -> array[int]:
    return array("h", bytes(2 * int(SAMPLE_RATE * seconds)))


_DING_S, _DONG_S = 0.45, 0.65
CHIME_S = _DING_S + _DONG_S


@functools.cache
def _chime() -> bytes:
    tones = _tone((1318.5, 2637.0), _DING_S, 0.5) + _tone((1046.5, 2093.0), _DONG_S, 0.5)
    return tones.tobytes()


def chime() -> array[int]:
    """A two-tone "ding-dong" (E6 then C6, each with its octave), 1.1 s."""
    samples = array("h")
    samples.frombytes(_chime())
    return samples


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng")


def _read_wav(path: Path) -> array[int]:
    with wave.open(str(path), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, SAMPLE_RATE):
            raise TtsError(
                f"espeak-ng wrote {wav.getnchannels()} channels, {8 * wav.getsampwidth()} bit, "
                f"{wav.getframerate()} Hz; expected mono 16-bit {SAMPLE_RATE} Hz"
            )
        frames = wav.readframes(wav.getnframes())
    samples = array("h")
    samples.frombytes(frames)
    return samples


def speak(said: Utterance, binary: str | None = None) -> array[int]:
    """The samples of one utterance, from espeak-ng. Raises ``TtsError``."""
    binary = binary or espeak_binary()
    if binary is None:
        raise TtsError("espeak-ng is not installed (apt-get install -y espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="anmin-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        try:
            # "--" so a text starting with "-" is never taken for an option.
            subprocess.run(
                [binary, "-v", said.voice, "-w", str(out), "--", said.text],
                check=True,
                capture_output=True,
                timeout=30,
            )
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.decode("utf-8", "replace").strip()[:200]
            raise TtsError(f"espeak-ng -v {said.voice} failed: {detail}") from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise TtsError(f"espeak-ng could not run: {exc}") from exc
        if not out.exists():
            raise TtsError("espeak-ng wrote no WAV")
        return _read_wav(out)


@dataclass(frozen=True, slots=True)
class Rendering:
    path: Path
    seconds: float


def render(said: Sequence[Utterance], wav: Path, binary: str | None = None) -> Rendering:
    """One rendition into a WAV (mono, 16-bit, 22,050 Hz): the chime, then each utterance
    with a short pause before it. Raises ``TtsError``."""
    samples = chime()
    for u in said:
        samples += silence(PAUSE_S)
        samples += speak(u, binary)
    wav.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return Rendering(wav, len(samples) / SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class WavStats:
    seconds: float
    rms: float  # 0..1 of full scale
    peak: float  # 0..1 of full scale


def wav_stats(path: Path) -> WavStats:
    """Duration and loudness of a mono 16-bit WAV (the wave module, no sox needed)."""
    with wave.open(str(path), "rb") as wav:
        rate, width, frames = wav.getframerate(), wav.getsampwidth(), wav.getnframes()
        data = wav.readframes(frames)
    if width != 2:
        raise TtsError(f"{path} is {8 * width}-bit; expected 16-bit")
    count = len(data) // 2
    if count == 0:
        return WavStats(0.0, 0.0, 0.0)
    samples = struct.unpack(f"<{count}h", data[: 2 * count])
    rms = math.sqrt(sum(s * s for s in samples) / count) / 32768
    peak = max(abs(s) for s in samples) / 32768
    return WavStats(frames / rate, rms, peak)
