"""Channel grouping: which marketing channel a touch came through.

Attribution credits channels, so every touch needs one, and the same inputs must always
give the same channel (a replay rebuilds the same numbers). The rules, first match wins:

1. An explicit channel from the sender (``properties.channel``) is kept, normalised to
   snake_case (``"Paid Search"`` -> ``paid_search``).
2. The kind implies it: email events -> ``email``, webinar attendance -> ``webinar``,
   ad clicks -> ``paid_search`` / ``paid_social`` / ``display`` by ad network.
3. Campaign medium and source (``context.campaign`` or the page URL's ``utm_*``), in the
   spirit of GA4's default channel grouping (see :func:`channel_from_campaign`).
4. Click ids in the page URL: ``gclid``/``gbraid``/``wbraid``/``msclkid`` -> paid search,
   ``dclid`` -> display, ``li_fat_id``/``ttclid``/``twclid`` -> paid social,
   ``fbclid`` -> organic social (Facebook adds it to organic links too).
5. The referrer's host: a search engine -> organic search, a social network -> organic
   social, a webmail host -> email, the site itself -> direct, anything else -> referral.
6. No signal at all: ``direct`` for browser touches; ``None`` for events that carry no web
   context (a CRM's "Deal Won" has no channel, and inventing ``direct`` would skew reports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, urlsplit

from leadflow.processors.events import TOUCH_KINDS, Kind


class Channel(StrEnum):
    """The channels the grouping rules produce (an explicit channel may be any name)."""

    PAID_SEARCH = "paid_search"
    ORGANIC_SEARCH = "organic_search"
    PAID_SOCIAL = "paid_social"
    ORGANIC_SOCIAL = "organic_social"
    EMAIL = "email"
    REFERRAL = "referral"
    DISPLAY = "display"
    WEBINAR = "webinar"
    EVENTS = "events"
    DIRECT = "direct"
    OTHER = "other"


SEARCH_ENGINES = frozenset(
    {
        "google",
        "bing",
        "yahoo",
        "duckduckgo",
        "baidu",
        "yandex",
        "ecosia",
        "ask",
        "naver",
        "qwant",
        "startpage",
        "brave",
    }
)
SOCIAL_NETWORKS = frozenset(
    {
        "facebook",
        "fb",
        "instagram",
        "linkedin",
        "lnkd",
        "twitter",
        "x",
        "t",
        "reddit",
        "youtube",
        "tiktok",
        "pinterest",
        "xing",
        "threads",
        "mastodon",
        "bsky",
        "quora",
    }
)
WEBMAIL_HOSTS = frozenset(
    {
        "mail.google.com",
        "outlook.live.com",
        "outlook.office.com",
        "outlook.office365.com",
        "mail.yahoo.com",
        "mail.proton.me",
        "webmail",
    }
)
PAID_SEARCH_CLICK_IDS = ("gclid", "gbraid", "wbraid", "msclkid")
PAID_SOCIAL_CLICK_IDS = ("li_fat_id", "ttclid", "twclid")

_PAID_MEDIUMS = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_search", "sem", "cpv", "cpa"})
_PAID_SOCIAL_MEDIUMS = frozenset({"paid_social", "paidsocial", "social_paid", "paid-social"})
_DISPLAY_MEDIUMS = frozenset({"display", "banner", "cpm", "interstitial", "expandable"})
_EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail", "e mail", "newsletter"})
_SOCIAL_MEDIUMS = frozenset(
    {
        "social",
        "social-network",
        "social-media",
        "social_media",
        "sm",
        "social network",
        "social media",
        "organic_social",
    }
)
_PAID_PATTERN = re.compile(r"(.*cp.*|ppc|retargeting|paid.*)")
_EVENT_MEDIUMS = frozenset({"event", "events", "tradeshow", "trade_show", "conference", "booth"})
_KIND_CHANNELS = {
    Kind.EMAIL_SENT: Channel.EMAIL,
    Kind.EMAIL_OPENED: Channel.EMAIL,
    Kind.EMAIL_CLICKED: Channel.EMAIL,
    Kind.EMAIL_BOUNCED: Channel.EMAIL,
    Kind.EMAIL_UNSUBSCRIBED: Channel.EMAIL,
    Kind.WEBINAR_ATTENDED: Channel.WEBINAR,
}


@dataclass(frozen=True, slots=True)
class ChannelInputs:
    """Everything the grouping rules look at (all optional).

    Attributes:
        kind: the event kind.
        explicit: ``properties.channel`` as sent.
        utm_source: campaign source.
        utm_medium: campaign medium.
        referrer: the referring URL.
        url: the page URL (click ids are read from its query).
        ad_network: ``properties.network`` of an ad click.
    """

    kind: Kind
    explicit: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    referrer: str | None = None
    url: str | None = None
    ad_network: str | None = None


def normalise(name: str) -> str:
    """Channel names in one spelling: lower snake_case.

    Example:
        >>> normalise(" Paid Search ")
        'paid_search'
        >>> normalise("Organic-Social")
        'organic_social'
    """
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _site(host: str) -> str:
    """The registrable label of a host: ``www.google.co.uk`` -> ``google``, ``t.co`` -> ``t``."""
    if host in WEBMAIL_HOSTS:
        return host
    labels = [label for label in host.lower().split(".") if label and label != "www"]
    if len(labels) > 1:
        labels.pop()  # the top-level domain
    if len(labels) > 1 and labels[-1] in {"co", "com", "ac", "gov", "org", "net"}:
        labels.pop()  # second-level public suffixes such as co.uk or com.au
    return labels[-1] if labels else ""


def channel_from_campaign(source: str | None, medium: str | None) -> Channel | None:
    """Group by campaign medium and source; ``None`` when neither is given.

    Example:
        >>> channel_from_campaign("google", "cpc")
        <Channel.PAID_SEARCH: 'paid_search'>
        >>> channel_from_campaign("linkedin", "cpc")
        <Channel.PAID_SOCIAL: 'paid_social'>
        >>> channel_from_campaign("newsletter", None)
        <Channel.EMAIL: 'email'>
        >>> channel_from_campaign("partner-site", "podcast")
        <Channel.OTHER: 'other'>
    """
    src = normalise(source) if source else ""
    med = normalise(medium) if medium else ""
    if not src and not med:
        return None
    src_site = _site(src) if "." in src else src
    social_source = src_site in SOCIAL_NETWORKS
    # GA4's "paid" medium pattern: cpc, cpm, cpv, ppc, retargeting, paid...
    paid = med in _PAID_MEDIUMS or bool(_PAID_PATTERN.fullmatch(med))
    rules: list[tuple[bool, Channel]] = [
        (med in _PAID_SOCIAL_MEDIUMS or (paid and social_source), Channel.PAID_SOCIAL),
        (med in _DISPLAY_MEDIUMS, Channel.DISPLAY),
        (paid, Channel.PAID_SEARCH),
        (
            med in _EMAIL_MEDIUMS or (not med and src in {"email", "newsletter", "e-mail"}),
            Channel.EMAIL,
        ),
        (med in _SOCIAL_MEDIUMS or (not med and social_source), Channel.ORGANIC_SOCIAL),
        (med == "webinar" or (not med and src == "webinar"), Channel.WEBINAR),
        (med in _EVENT_MEDIUMS, Channel.EVENTS),
        (med == "organic" or (not med and src_site in SEARCH_ENGINES), Channel.ORGANIC_SEARCH),
        (med in {"referral", "affiliate", "partner"}, Channel.REFERRAL),
        (med in {"(none)", "none", "direct"}, Channel.DIRECT),
    ]
    for matched, channel in rules:
        if matched:
            return channel
    return Channel.OTHER


def _click_channel(url: str | None) -> Channel | None:
    if not url or not any(marker in url for marker in ("clid", "clkid", "braid", "li_fat_id")):
        return None  # the common case, without parsing the query
    query = parse_qs(urlsplit(url).query)
    if any(name in query for name in PAID_SEARCH_CLICK_IDS):
        return Channel.PAID_SEARCH
    if "dclid" in query:
        return Channel.DISPLAY
    if any(name in query for name in PAID_SOCIAL_CLICK_IDS):
        return Channel.PAID_SOCIAL
    if "fbclid" in query:
        return Channel.ORGANIC_SOCIAL
    return None


def _host(url: str | None) -> str:
    if not url:
        return ""
    try:
        return (urlsplit(url if "//" in url else "//" + url).hostname or "").lower()
    except ValueError:
        return ""


def _referrer_channel(referrer: str | None, url: str | None) -> Channel | None:
    ref_host = _host(referrer)
    if not ref_host:
        return None
    if ref_host == _host(url) or ref_host.removeprefix("www.") == _host(url).removeprefix("www."):
        return Channel.DIRECT  # navigation inside the site is not a new source
    if ref_host in WEBMAIL_HOSTS:
        return Channel.EMAIL
    site = _site(ref_host)
    if site in SEARCH_ENGINES:
        return Channel.ORGANIC_SEARCH
    if site in SOCIAL_NETWORKS:
        return Channel.ORGANIC_SOCIAL
    return Channel.REFERRAL


def _ad_channel(network: str | None) -> Channel:
    site = _site(normalise(network)) if network else ""
    if site in SOCIAL_NETWORKS or site in {"meta", "linkedin_ads", "facebook_ads"}:
        return Channel.PAID_SOCIAL
    if site in SEARCH_ENGINES or site in {"google_ads", "adwords", "bing_ads", "microsoft"}:
        return Channel.PAID_SEARCH
    return Channel.DISPLAY


def group_channel(inputs: ChannelInputs) -> str | None:
    """The channel of one event by the module's rules (first match wins).

    Example:
        >>> group_channel(ChannelInputs(Kind.VISIT, explicit="Partner Webinar"))
        'partner_webinar'
        >>> group_channel(ChannelInputs(Kind.VISIT, url="https://a.io/?gclid=x"))
        'paid_search'
        >>> group_channel(ChannelInputs(Kind.VISIT, referrer="https://www.google.de/"))
        'organic_search'
        >>> group_channel(ChannelInputs(Kind.VISIT))
        'direct'
        >>> group_channel(ChannelInputs(Kind.DEAL_WON)) is None
        True
    """
    if inputs.explicit and inputs.explicit.strip():
        return normalise(inputs.explicit)
    if inputs.kind in _KIND_CHANNELS:
        return _KIND_CHANNELS[inputs.kind].value
    if inputs.kind is Kind.AD_CLICK and not (inputs.utm_medium or inputs.utm_source):
        return _ad_channel(inputs.ad_network).value
    channel = (
        channel_from_campaign(inputs.utm_source, inputs.utm_medium)
        or _click_channel(inputs.url)
        or _referrer_channel(inputs.referrer, inputs.url)
    )
    if channel is not None:
        return channel.value
    if inputs.kind in TOUCH_KINDS:
        return Channel.DIRECT.value
    return None
