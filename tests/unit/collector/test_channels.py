"""Channel grouping rules, one row per documented rule, plus invariants."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.events import TOUCH_KINDS, Kind
from leadflow.streams.collector.channels import (
    Channel,
    ChannelInputs,
    channel_from_campaign,
    group_channel,
    normalise,
)

V = Kind.VISIT


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        # 1. explicit channel wins over everything
        (ChannelInputs(V, explicit="Partner Webinar", utm_medium="cpc"), "partner_webinar"),
        (ChannelInputs(Kind.EMAIL_OPENED, explicit="Events"), "events"),
        # 2. the kind implies it
        (ChannelInputs(Kind.EMAIL_CLICKED, utm_medium="cpc"), "email"),
        (ChannelInputs(Kind.WEBINAR_ATTENDED), "webinar"),
        (ChannelInputs(Kind.AD_CLICK, ad_network="LinkedIn"), "paid_social"),
        (ChannelInputs(Kind.AD_CLICK, ad_network="google"), "paid_search"),
        (ChannelInputs(Kind.AD_CLICK, ad_network="taboola"), "display"),
        (ChannelInputs(Kind.AD_CLICK, ad_network="google", utm_medium="display"), "display"),
        # 3. campaign medium / source
        (ChannelInputs(V, utm_source="google", utm_medium="cpc"), "paid_search"),
        (ChannelInputs(V, utm_source="bing", utm_medium="ppc"), "paid_search"),
        (ChannelInputs(V, utm_source="linkedin", utm_medium="cpc"), "paid_social"),
        (ChannelInputs(V, utm_source="facebook.com", utm_medium="paid"), "paid_social"),
        (ChannelInputs(V, utm_medium="paid-social"), "paid_social"),
        (ChannelInputs(V, utm_medium="Paid Social"), "paid_social"),
        (ChannelInputs(V, utm_medium="display"), "display"),
        (ChannelInputs(V, utm_medium="cpm"), "display"),
        (ChannelInputs(V, utm_medium="e-mail"), "email"),
        (ChannelInputs(V, utm_source="newsletter"), "email"),
        (ChannelInputs(V, utm_medium="social"), "organic_social"),
        (ChannelInputs(V, utm_source="linkedin"), "organic_social"),
        (ChannelInputs(V, utm_medium="webinar"), "webinar"),
        (ChannelInputs(V, utm_medium="tradeshow"), "events"),
        (ChannelInputs(V, utm_medium="organic"), "organic_search"),
        (ChannelInputs(V, utm_source="duckduckgo"), "organic_search"),
        (ChannelInputs(V, utm_medium="referral"), "referral"),
        (ChannelInputs(V, utm_medium="podcast"), "other"),
        # 4. click ids in the page URL
        (ChannelInputs(V, url="https://a.io/p?gclid=1"), "paid_search"),
        (ChannelInputs(V, url="https://a.io/p?msclkid=1"), "paid_search"),
        (ChannelInputs(V, url="https://a.io/p?dclid=1"), "display"),
        (ChannelInputs(V, url="https://a.io/p?li_fat_id=1"), "paid_social"),
        (ChannelInputs(V, url="https://a.io/p?fbclid=1"), "organic_social"),
        # 5. referrer
        (ChannelInputs(V, referrer="https://www.google.co.uk/search?q=x"), "organic_search"),
        (ChannelInputs(V, referrer="https://t.co/abc"), "organic_social"),
        (ChannelInputs(V, referrer="https://www.linkedin.com/feed"), "organic_social"),
        (ChannelInputs(V, referrer="https://mail.google.com/mail/u/0"), "email"),
        (ChannelInputs(V, referrer="https://a.io/blog", url="https://www.a.io/pricing"), "direct"),
        (ChannelInputs(V, referrer="https://news.ycombinator.com/item"), "referral"),
        (ChannelInputs(V, referrer="not a url at all"), "referral"),
        # 6. nothing
        (ChannelInputs(V), "direct"),
        (ChannelInputs(Kind.FORM_SUBMITTED), "direct"),
        (ChannelInputs(Kind.DEAL_WON), None),
        (ChannelInputs(Kind.IDENTIFY), None),
        (ChannelInputs(Kind.DEAL_WON, referrer="https://www.bing.com/"), "organic_search"),
    ],
)
def test_rules(inputs: ChannelInputs, expected: str | None) -> None:
    assert group_channel(inputs) == expected


def test_campaign_beats_click_id_and_referrer() -> None:
    inputs = ChannelInputs(
        V, utm_medium="email", url="https://a.io/?gclid=1", referrer="https://www.google.com/"
    )
    assert group_channel(inputs) == "email"


def test_click_id_beats_referrer() -> None:
    inputs = ChannelInputs(V, url="https://a.io/?gclid=1", referrer="https://www.google.com/")
    assert group_channel(inputs) == "paid_search"


text = st.none() | st.text(max_size=30)
inputs = st.builds(
    ChannelInputs,
    kind=st.sampled_from(list(Kind)),
    explicit=st.none(),
    utm_source=text,
    utm_medium=text,
    referrer=text,
    url=text,
    ad_network=text,
)


@given(inputs)
def test_derived_channel_is_a_known_channel(derived: ChannelInputs) -> None:
    channel = group_channel(derived)
    assert channel is None or channel in {c.value for c in Channel}
    if derived.kind in TOUCH_KINDS:
        assert channel is not None  # every touch gets a channel for attribution


@given(inputs, st.text(min_size=1).filter(str.strip))
def test_explicit_channel_always_wins(derived: ChannelInputs, explicit: str) -> None:
    with_explicit = dataclasses.replace(derived, explicit=explicit)
    assert group_channel(with_explicit) == normalise(explicit)


def test_campaign_without_inputs_is_unknown() -> None:
    assert channel_from_campaign(None, None) is None
    assert channel_from_campaign("", "") is None
