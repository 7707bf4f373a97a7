"""Walk simulated people through the funnel in event time and emit Segment messages.

Each person is a tiny discrete-event simulation (:class:`_Journey`) with its own
``random.Random`` seeded from ``(seed, person index)``: an agenda of future actions
(sessions, nurture emails, sales reviews, deal closes) processed in time order, each
emitting the Segment messages a tracker, an email platform or a CRM would send. People
arrive over the span as sorted order statistics (drawn lazily, no list of arrivals), and a
heap merges the active journeys and the daily campaign costs, so messages come out sorted
by event time while memory grows with the number of *concurrently active* people only.

The same seed gives byte-identical messages: no global random, no wall clock.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from leadflow.demo.simulator import model
from leadflow.demo.simulator.model import Campaign, Page, Person
from leadflow.processors.derived import derived_id
from leadflow.processors.errors import LeadflowError

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SLA_MS = 24 * HOUR
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Message = dict[str, Any]

# Event names of issue 3's tracking plan; anything else is sent on purpose as custom.
TRACKING_PLAN = frozenset(
    {
        "Form Submitted",
        "Email Opened",
        "Email Link Clicked",
        "Email Unsubscribed",
        "Email Sent",
        "Email Bounced",
        "Demo Requested",
        "Webinar Attended",
        "Content Downloaded",
        "Ad Clicked",
        "Stage Changed",
        "Deal Won",
        "Deal Lost",
        "Campaign Cost",
        "Consent Changed",
        "Erasure Requested",
    }
)
CUSTOM_EVENTS = frozenset({"Pricing Calculator Used"})

WEB_LIBRARY = {"name": "analytics.js", "version": "next-1.70.0"}
SERVER_LIBRARY = {"name": "analytics-python", "version": "2.3.3"}
REVIEW_THRESHOLD = 42.0
ENGAGEMENT_HALF_LIFE = 21 * DAY
WEBINAR_PERIOD = 21 * DAY
MAX_REVIEWS = 3
# Fixed campaign spend (booths, platforms) is quoted for a simulation of this many people.
FIXED_SPEND_PEOPLE = 5_000


class SimulationError(LeadflowError):
    """The simulation was configured with impossible values."""


def iso(ms: int) -> str:
    """Epoch milliseconds as the ISO-8601 UTC string Segment libraries send.

    Example:
        >>> iso(0)
        '1970-01-01T00:00:00.000Z'
    """
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


def to_ms(moment: datetime) -> int:
    """A timezone-aware datetime as epoch milliseconds.

    Example:
        >>> to_ms(DEFAULT_START)
        1767225600000
    """
    if moment.tzinfo is None:
        raise SimulationError("the start must be timezone-aware (UTC)")
    return (moment - EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate.

    Attributes:
        people: how many distinct people arrive over the span.
        days: event-time span in days; arrivals are spread uniformly over it and nothing
            is emitted after its end (later outcomes are censored, as in real data).
        seed: the only source of randomness.
        start: event time of the span's start (timezone-aware).
        world: the simulated market, a name of :data:`model.WORLDS`.
        form_first: share of lead-magnet captures that submit the form (with their email)
            BEFORE logging in, as issue 14 saw from real SDKs: the form reaches the
            collector without a userId, the identify a moment later. Drawn from a hash of
            (seed, person), not from the journey's random stream, so 0 (the default) gives
            exactly the messages of before.
    """

    people: int = 2_000
    days: float = 180.0
    seed: int = 1
    start: datetime = DEFAULT_START
    world: str = "northwind"
    form_first: float = 0.0

    def __post_init__(self) -> None:
        if self.people < 0:
            raise SimulationError(f"people must be >= 0, got {self.people}")
        if not self.days > 0:
            raise SimulationError(f"days must be > 0, got {self.days}")
        if self.world not in model.WORLDS:
            raise SimulationError(f"unknown world {self.world!r}; one of {sorted(model.WORLDS)}")
        if not 0.0 <= self.form_first <= 1.0:
            raise SimulationError(f"form_first must be within [0, 1], got {self.form_first}")
        to_ms(self.start)

    @property
    def start_ms(self) -> int:
        """Span start, epoch ms."""
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        """Span end (exclusive), epoch ms."""
        return self.start_ms + round(self.days * DAY)


@dataclass(slots=True)
class LeadTruth:
    """What is TRUE about one simulated lead (a person who identified themselves).

    Attributes:
        lead_id: the Segment ``userId`` (the pipeline's lead id).
        anonymous_id: the device id of their first visit (None for event badge scans).
        propensity: the true probability that sales accepts them.
        fit: their ICP fit in [0, 1].
        converted: sales accepted them (``accept_mql``) within the span.
        opportunity: an opportunity was opened within the span.
        won: a deal was won within the span.
        revenue: won amount (0 if not won).
        channel: acquiring channel.
        campaign: acquiring campaign.
        variant: landing-page experiment variant they were assigned.
        captured_at: when they became a lead, epoch ms.
    """

    lead_id: str
    anonymous_id: str | None
    propensity: float
    fit: float
    converted: bool
    opportunity: bool
    won: bool
    revenue: float
    channel: str
    campaign: str
    variant: str
    captured_at: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(slots=True)
class Tally:
    """Funnel counts of one pass, for the dry-run summary and the realism tests."""

    people: Counter[str] = field(default_factory=Counter)
    leads: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    reviews: int = 0
    late_reviews: int = 0
    accepted: int = 0
    rejected: int = 0
    recycled: int = 0
    disqualified: int = 0
    opportunities: int = 0
    won: int = 0
    lost: int = 0
    revenue: float = 0.0
    spend: float = 0.0
    demo_requests: int = 0
    unsubscribed: int = 0


def event_kind(message: Message) -> str:
    """A short label for a message: the track event name, or the call type.

    Example:
        >>> event_kind({"type": "track", "event": "Deal Won"})
        'Deal Won'
        >>> event_kind({"type": "page"})
        'page'
    """
    return str(message["event"]) if message["type"] == "track" else str(message["type"])


def arrival_times(rng: random.Random, n: int, start: int, end: int) -> Iterator[int]:
    """``n`` uniform arrival times in ``[start, end)``, sorted, drawn lazily.

    Uses the sequential order-statistics trick: the minimum of ``m`` uniforms on
    ``[t, end)`` is ``t + (end - t)(1 - U^(1/m))``, so no list of times is ever held.

    Example:
        >>> times = list(arrival_times(random.Random(1), 5, 0, 1000))
        >>> times == sorted(times) and len(times) == 5 and 0 <= times[0] and times[-1] < 1000
        True
    """
    t = float(start)
    for remaining in range(n, 0, -1):
        t += (end - t) * (1.0 - rng.random() ** (1.0 / remaining))
        yield min(int(t), end - 1)


def seeded(seed: int, stream: object) -> random.Random:
    """An independent random stream ``stream`` of the simulation seeded with ``seed``.

    String seeds are hashed with SHA-512 by ``random.Random``, so streams are stable across
    processes and Python runs (no ``PYTHONHASHSEED`` dependence). This is simulation, not
    cryptography.

    Example:
        >>> seeded(1, "costs").random() == seeded(1, "costs").random()
        True
    """
    return random.Random(f"{seed}:{stream}")  # noqa: S311


def message_id(*parts: object) -> str:
    """A deterministic UUID-shaped ``messageId`` from the parts that define a message."""
    return str(uuid.UUID(hex=derived_id("leadflow-sim-msg", *parts)))


class _Journey:
    """One person's life in the funnel: an agenda of actions, an outbox of messages."""

    def __init__(
        self,
        person: Person,
        rng: random.Random,
        arrival: int,
        config: SimConfig,
        tally: Tally,
        truth: dict[str, LeadTruth],
    ) -> None:
        self.p = person
        self.rng = rng
        self.arrival = arrival
        self.seed = config.seed
        self.w = model.WORLDS[config.world]
        self.start = config.start_ms
        self.end = config.end_ms
        self.tally = tally
        self.truth_sink = truth
        self.truth: LeadTruth | None = None
        self.agenda: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self.outbox: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.stage = "visitor"
        self.known = False
        self.unsubscribed = False
        self.review_pending = False
        self.reviews = 0
        self.accepted_once = False
        self.engagement = 0.0
        self.engaged_at = arrival
        self.device = person.anonymous_id
        self.emails = 0
        draw = int(derived_id("form-first", config.seed, person.index)[:8], 16) / 2**32
        self.form_first = draw < config.form_first

    # -- the event loop ------------------------------------------------------------

    def run(self) -> Iterator[tuple[int, Message]]:
        """Process the agenda in time order; yield ``(time, message)`` sorted by time."""
        self._schedule(self.arrival, "arrive")
        while self.agenda:
            t, _, action, args = heapq.heappop(self.agenda)
            while self.outbox and self.outbox[0][0] <= t:
                when, _, message = heapq.heappop(self.outbox)
                yield when, message
            getattr(self, "_" + action)(t, *args)
        while self.outbox:
            when, _, message = heapq.heappop(self.outbox)
            yield when, message

    def _schedule(self, t: int, action: str, *args: Any) -> None:
        if t < self.end:
            self.seq += 1
            heapq.heappush(self.agenda, (t, self.seq, action, args))

    @property
    def active(self) -> bool:
        return self.stage not in ("customer", "disqualified")

    # -- message building ----------------------------------------------------------

    def _emit(self, t: int, message: Message) -> None:
        if t >= self.end:
            return
        self.seq += 1
        message["messageId"] = message_id(self.seed, self.p.index, self.seq)
        message["timestamp"] = iso(t)
        message["sentAt"] = iso(t + 400 + (self.seq * 379) % 2600)
        self.tally.events[event_kind(message)] += 1
        heapq.heappush(self.outbox, (t, self.seq, message))

    def _web_context(
        self, page: Page, referrer: str, search: str, campaign: dict[str, str] | None
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            "library": WEB_LIBRARY,
            "page": {
                "path": page.path,
                "referrer": referrer,
                "search": search,
                "title": page.title,
                "url": model.SITE + page.path + search,
            },
            "userAgent": self.p.user_agent,
            "ip": self.p.ip,
            "locale": "en-US",
        }
        if campaign:
            context["campaign"] = campaign
        return context

    def _ids(self, web: bool) -> dict[str, str]:
        ids: dict[str, str] = {}
        if web:
            ids["anonymousId"] = self.device
        if self.known:
            ids["userId"] = self.p.lead_id
        return ids

    def _page(
        self,
        t: int,
        page: Page,
        *,
        referrer: str = "",
        campaign: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        search = ""
        if campaign:
            keys = {
                "source": "utm_source",
                "medium": "utm_medium",
                "name": "utm_campaign",
                "term": "utm_term",
                "content": "utm_content",
            }
            search = "?" + "&".join(f"{keys[k]}={v.replace(' ', '+')}" for k, v in campaign.items())
        properties: dict[str, Any] = {
            "name": page.name,
            "category": page.category,
            "path": page.path,
            "referrer": referrer,
            "search": search,
            "title": page.title,
            "url": model.SITE + page.path + search,
        }
        if page.path.startswith("/lp/"):
            properties["experiment"] = model.EXPERIMENT
            properties["variant"] = self.p.variant
        properties.update(extra or {})
        self._emit(
            t,
            {
                "type": "page",
                "name": page.name,
                "category": page.category,
                **self._ids(web=True),
                "properties": properties,
                "context": self._web_context(page, referrer, search, campaign),
            },
        )
        self._engage(t, page.intent)

    def _track(
        self,
        t: int,
        event: str,
        properties: dict[str, Any],
        *,
        page: Page | None = None,
        server: bool = False,
    ) -> None:
        if server:
            context: dict[str, Any] = {"library": SERVER_LIBRARY}
        else:
            context = self._web_context(page or model.HOME, "", "", None)
        self._emit(
            t,
            {
                "type": "track",
                "event": event,
                **self._ids(web=not server),
                "properties": properties,
                "context": context,
            },
        )

    def _traits(self) -> dict[str, Any]:
        p = self.p
        return {
            "email": p.email,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "phone": p.phone,
            "company": p.company,
            "title": p.title,
            "company_size": p.company_size,
            "industry": p.industry,
            "country": p.country,
        }

    # -- engagement and the sales review -------------------------------------------

    def _engage(self, t: int, points: float) -> None:
        """Decayed engagement; crossing the threshold puts the lead in front of sales."""
        decay = 0.5 ** ((t - self.engaged_at) / ENGAGEMENT_HALF_LIFE)
        self.engagement = self.engagement * decay + points
        self.engaged_at = t
        if self.known and self.engagement >= REVIEW_THRESHOLD:
            self._request_review(t)

    def _request_review(self, t: int) -> None:
        if (
            self.review_pending
            or self.stage not in ("lead", "recycled")
            or self.reviews >= MAX_REVIEWS
        ):
            return
        roll = self.rng.random()
        if roll < 0.72:
            hours = self.rng.uniform(0.3, 20.0)
        elif roll < 0.85:
            hours = self.rng.uniform(20.0, 23.9)
        else:
            hours = self.rng.uniform(24.5, 120.0)  # the rep was out: the SLA breaches
        self.review_pending = True
        self._schedule(t + int(hours * HOUR), "review", int(hours * HOUR))

    # -- actions -------------------------------------------------------------------

    def _arrive(self, t: int) -> None:
        c = self.p.campaign
        self.tally.people[c.channel] += 1
        if c.channel == model.EVENTS:
            self._badge_scan(t, c)
            return
        rng = self.rng
        campaign_ctx: dict[str, str] | None = None
        referrer = ""
        extra: dict[str, Any] = {}
        landing = self._landing(c)
        if c.source and c.medium:
            campaign_ctx = {"source": c.source, "medium": c.medium, "name": c.id}
            if c.terms:
                campaign_ctx["term"] = rng.choice(c.terms)
        if c.channel in (model.PAID_SEARCH, model.PAID_SOCIAL):
            network = {"google": "google_ads", "linkedin": "linkedin_ads"}.get(
                c.source or "", "facebook_ads"
            )
            click_id = derived_id("click", self.seed, self.p.index)[:22]
            self._track(
                t,
                "Ad Clicked",
                {
                    "network": network,
                    "campaign": c.id,
                    "ad_group": campaign_ctx.get("term", "prospecting") if campaign_ctx else None,
                    "ad_id": f"{c.id}-ad-{rng.randrange(1, 6)}",
                    "click_id": click_id,
                },
            )
            referrer = {
                "google": "https://www.google.com/",
                "linkedin": "https://www.linkedin.com/",
            }.get(c.source or "", "https://www.facebook.com/")
            t += rng.randrange(800, 4000)
        elif c.channel == model.ORGANIC_SEARCH:
            referrer = rng.choice(model.ORGANIC_REFERRERS)
        elif c.channel == model.REFERRAL:
            referrer = (
                model.REFERRAL_REFERRERS[0]
                if c.id == "g2-reviews"
                else rng.choice(model.REFERRAL_REFERRERS[1:])
            )
        elif c.channel == model.WEBINAR:
            extra["channel"] = model.WEBINAR
        self._session(t, landing, referrer=referrer, campaign=campaign_ctx, extra=extra)

    def _landing(self, c: Campaign) -> Page:
        if c.channel == model.ORGANIC_SEARCH:
            return self.rng.choice((*model.BLOG_POSTS[1:], model.HOME, model.PRICING))
        if c.channel == model.WEBINAR:
            slug, name = self._next_webinar(self.arrival)[1]
            return model.Page(
                f"/webinars/{slug}", f"{name} | Northwind Analytics", name, "Webinar", 3.0
            )
        for asset in model.ASSETS:
            if asset.landing.path == c.landing:
                return asset.landing
        pages = (
            model.HOME,
            model.PRICING,
            *model.PRODUCT_PAGES,
            *model.CASE_STUDIES,
            *model.BLOG_POSTS,
        )
        return next((p for p in pages if p.path == c.landing), model.HOME)

    def _session(
        self,
        t: int,
        landing: Page,
        *,
        referrer: str = "",
        campaign: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        buying: bool = False,
    ) -> int:
        """A browsing session: landing page, a few more pages, maybe a form. Returns its end."""
        rng, p = self.rng, self.p
        self._page(t, landing, referrer=referrer, campaign=campaign, extra=extra)
        seen = [landing]
        more = 0
        keep_going = min(0.75, 0.3 + 0.12 * p.activity)
        while more < 6 and rng.random() < keep_going:
            more += 1
            t += rng.randrange(20_000, 240_000)
            page = self._next_page(buying)
            self._page(t, page, referrer=model.SITE + seen[-1].path)
            seen.append(page)
        if buying:
            for page in (model.PRICING, rng.choice(model.CASE_STUDIES[1:])):
                t += rng.randrange(20_000, 180_000)
                self._page(t, page, referrer=model.SITE + seen[-1].path)
                seen.append(page)
            if rng.random() < 0.3:
                t += rng.randrange(30_000, 300_000)
                self._track(
                    t,
                    "Pricing Calculator Used",
                    {"seats": rng.choice([5, 10, 25, 50]), "plan": "growth"},
                    page=model.PRICING,
                )
        if not self.known:
            self._maybe_capture(t, seen)
        elif model.PRICING in seen and not buying and rng.random() < 0.03 * p.activity:
            self._demo_request(t + rng.randrange(30_000, 600_000), "pricing_page")
        return t

    def _next_page(self, buying: bool) -> Page:
        rng, p = self.rng, self.p
        weights = (
            0.05,
            0.05 + self.w.pricing_pull * p.propensity + (0.3 if buying else 0.0),
            0.25,
            0.08 + self.w.case_pull * p.propensity,
            0.30,
            0.02 + (0.12 if p.fit < 0.3 else 0.0),
        )
        group = rng.choices(
            ("home", "pricing", "product", "case", "blog", "careers"), weights=weights
        )[0]
        if group == "home":
            return model.HOME
        if group == "pricing":
            return model.PRICING
        if group == "product":
            return rng.choice(model.PRODUCT_PAGES)
        if group == "case":
            return rng.choice(model.CASE_STUDIES)
        if group == "careers":
            return model.CAREERS
        return rng.choice(model.BLOG_POSTS)

    def _maybe_capture(self, t: int, seen: list[Page]) -> None:
        rng, p = self.rng, self.p
        on_lp = any(page.path.startswith("/lp/") for page in seen)
        on_webinar = any(page.category == "Webinar" for page in seen)
        base = 0.30 if on_webinar else 0.11 if on_lp else 0.022
        chance = base * (0.45 + 0.35 * p.activity) * (0.5 + 0.7 * p.fit)
        if on_lp and p.variant == "B":
            chance *= 1.35  # the new hero converts better: the experiment has a real effect
        if rng.random() >= chance:
            if rng.random() < min(0.8, 0.28 + 0.18 * p.activity):
                self._schedule(
                    t + int(rng.expovariate(p.activity / (9 * DAY))) + HOUR, "return_visit"
                )
            return
        t += rng.randrange(30_000, 200_000)
        if on_webinar:
            page = next(page for page in seen if page.category == "Webinar")
            self._capture(t, page, form_id="webinar-registration", asset=page.path[10:])
            self._schedule_webinar(t)
            return
        asset = next((a for a in model.ASSETS if a.landing in seen), None) or rng.choice(
            model.ASSETS
        )
        if asset.landing not in seen:
            self._page(t, asset.landing, referrer=model.SITE + seen[-1].path)
            t += rng.randrange(30_000, 200_000)
        self._capture(t, asset.landing, form_id=f"lp-{asset.id}", asset=asset.id)
        self._track(
            t + rng.randrange(2_000, 20_000),
            "Content Downloaded",
            {"asset_id": asset.id, "asset_name": asset.name, "asset_type": asset.type},
            page=asset.landing,
        )
        self._engage(t, 4.0)

    def _capture(self, t: int, page: Page, *, form_id: str, asset: str | None) -> None:
        """The lead-magnet form: identify (same device id, now with the userId), then submit."""
        rng, p = self.rng, self.p
        self.known = True
        self._become_lead(t)
        identify = {
            "type": "identify",
            **self._ids(web=True),
            "traits": self._traits(),
            "context": self._web_context(page, "", "", None),
        }
        if not self.form_first:
            self._emit(t, identify)
        properties: dict[str, Any] = {
            "form_id": form_id,
            "asset": asset,
            **self._traits(),
            "answers": {
                "role_in_purchase": rng.choice(
                    ("decision_maker", "influencer", "researcher")
                    if p.seniority in ("cxo", "vp", "head", "director")
                    else ("influencer", "researcher", "researcher")
                ),
                "timeline": rng.choice(("this_quarter", "this_year", "just_looking")),
            },
        }
        if rng.random() < 0.5:
            properties["phone"] = None
        if page.path.startswith("/lp/"):
            properties["experiment"] = model.EXPERIMENT
            properties["variant"] = p.variant
        delay = rng.randrange(100, 900)
        if self.form_first:
            # The form goes out anonymous (device id and email, no userId); login follows.
            self.known = False
            self._track(t, "Form Submitted", properties, page=page)
            self.known = True
            self._emit(t + delay, identify)
        else:
            self._track(t + delay, "Form Submitted", properties, page=page)

    def _badge_scan(self, t: int, c: Campaign) -> None:
        """Trade-show leads arrive from the CRM import: known at once, no web history."""
        self.known = True
        self._become_lead(t)
        self._emit(
            t,
            {
                "type": "identify",
                **self._ids(web=False),
                "traits": self._traits(),
                "context": {"library": SERVER_LIBRARY},
            },
        )
        self._track(
            t + 1000,
            "Form Submitted",
            {
                "form_id": f"badge-scan-{c.id}",
                "asset": None,
                **self._traits(),
                "answers": {"booth_conversation": self.rng.choice(("yes", "no"))},
                "channel": model.EVENTS,
                "campaign": c.id,
            },
            server=True,
        )
        self._engage(t, 6.0)

    def _become_lead(self, t: int) -> None:
        p = self.p
        self.stage = "lead"
        self.tally.leads[p.channel] += 1
        self.truth = LeadTruth(
            lead_id=p.lead_id,
            anonymous_id=None if p.channel == model.EVENTS else p.anonymous_id,
            propensity=round(p.propensity, 6),
            fit=p.fit,
            converted=False,
            opportunity=False,
            won=False,
            revenue=0.0,
            channel=p.channel,
            campaign=p.campaign.id,
            variant=p.variant,
            captured_at=t,
        )
        self.truth_sink[p.lead_id] = self.truth
        self._schedule(t + self.rng.randrange(5 * MINUTE, 3 * HOUR), "email", 0)
        self._schedule_known_visit(t)
        if p.will_convert:
            self._schedule(
                t + 2 * DAY + int(self.rng.expovariate(1 / (self.w.buy_days * DAY))), "buy"
            )

    def _schedule_known_visit(self, t: int) -> None:
        gap = self.rng.expovariate(self.p.activity / (16 * DAY))
        self._schedule(t + int(gap) + HOUR, "known_visit")

    def _return_visit(self, t: int) -> None:
        if self.known:
            return
        self._revisit(t)

    def _known_visit(self, t: int) -> None:
        if not self.active:
            return
        self._revisit(t)
        self._schedule_known_visit(t)

    def _revisit(self, t: int) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            self._session(t, rng.choice((model.HOME, model.PRICING, model.HOME)))
        elif roll < 0.85:
            self._session(
                t,
                rng.choice(model.BLOG_POSTS[1:] + model.PRODUCT_PAGES),
                referrer=rng.choice(model.ORGANIC_REFERRERS),
            )
        else:
            retarget = next(c for c in model.CAMPAIGNS if c.id == "fb-retargeting")
            self._track(
                t,
                "Ad Clicked",
                {
                    "network": "facebook_ads",
                    "campaign": retarget.id,
                    "ad_group": "retargeting",
                    "ad_id": "fb-rt-1",
                    "click_id": derived_id("rt", self.seed, t)[:22],
                },
            )
            asset = rng.choice(model.ASSETS)
            self._session(
                t + rng.randrange(800, 4000),
                asset.landing,
                referrer="https://www.facebook.com/",
                campaign={"source": "facebook", "medium": "paid_social", "name": retarget.id},
            )

    def _email(self, t: int, number: int) -> None:
        rng, p = self.rng, self.p
        if self.unsubscribed or not self.active or self.stage == "opportunity":
            if self.stage == "opportunity":
                self._schedule(t + 7 * DAY, "email", number)  # pause nurture during a deal
            return
        self.emails += 1
        webinar_invite = number % 3 == 2
        if webinar_invite:
            when, (slug, name) = self._next_webinar(t)
            key, subject, link = f"webinar-{slug}", f"Join us live: {name}", f"/webinars/{slug}"
        else:
            key, subject, link = model.NURTURE_EMAILS[number % len(model.NURTURE_EMAILS)]
        email = {"email_id": f"nurture-{key}", "campaign": "nurture-2026", "subject": subject}
        self._track(t, "Email Sent", dict(email), server=True)
        if number == 0 and rng.random() < 0.025:
            self._track(t + 2_000, "Email Bounced", {**email, "bounce_type": "hard"}, server=True)
            self.unsubscribed = True
            return
        self._schedule(t + rng.randrange(4 * DAY, 9 * DAY), "email", number + 1)
        if rng.random() >= min(0.8, 0.12 + 0.2 * p.activity):
            return
        opened = t + int(rng.expovariate(1 / (5 * HOUR))) + MINUTE
        self._track(opened, "Email Opened", dict(email), server=True)
        self._engage(opened, 1.0)
        if rng.random() < 0.006 + 0.03 * max(0.0, 1.0 - p.activity / 1.5):
            self._track(opened + 40_000, "Email Unsubscribed", dict(email), server=True)
            self.tally.unsubscribed += 1
            self.unsubscribed = True
            return
        if rng.random() >= min(0.6, 0.05 + 0.12 * p.activity):
            return
        clicked = opened + rng.randrange(5_000, 120_000)
        self._track(
            clicked, "Email Link Clicked", {**email, "link_url": model.SITE + link}, server=True
        )
        self._engage(clicked, 3.0)
        if rng.random() < 0.2:  # opened on the phone: a second device for identity to stitch
            self.device = "anon-" + derived_id("device", self.seed, p.index, number)[:20]
        page = next(
            (
                pg
                for pg in (
                    model.PRICING,
                    model.DEMO,
                    *model.PRODUCT_PAGES,
                    *model.CASE_STUDIES,
                    *model.BLOG_POSTS,
                )
                if pg.path == link
            ),
            None,
        ) or model.Page(link, "Webinar | Northwind Analytics", "Webinar", "Webinar", 3.0)
        end = self._session(
            clicked + 2_000,
            page,
            campaign={
                "source": "nurture",
                "medium": "email",
                "name": "nurture-2026",
                "content": key,
            },
        )
        if webinar_invite and rng.random() < 0.6:
            self._track(
                end + 60_000,
                "Form Submitted",
                {
                    "form_id": "webinar-registration",
                    "asset": link[10:],
                    **self._traits(),
                    "answers": {},
                },
                page=page,
            )
            self._schedule_webinar(end, at=when)

    def _next_webinar(self, t: int) -> tuple[int, tuple[str, str]]:
        first = self.start + 10 * DAY + 16 * HOUR
        k = max(0, math.ceil((t + DAY - first) / WEBINAR_PERIOD))
        return first + k * WEBINAR_PERIOD, model.WEBINARS[k % len(model.WEBINARS)]

    def _schedule_webinar(self, t: int, at: int | None = None) -> None:
        when = at if at is not None else self._next_webinar(t)[0]
        base, per_activity = self.w.webinar_attend
        if self.rng.random() < min(0.8, base + per_activity * self.p.activity):
            self._schedule(when + self.rng.randrange(0, 10 * MINUTE), "webinar", when)

    def _webinar(self, t: int, when: int) -> None:
        slug, name = self._next_webinar(when - DAY)[1]
        minutes = int(min(60, max(3, self.rng.gauss(18 + 12 * self.p.activity, 12))))
        properties: dict[str, Any] = {
            "webinar_id": slug,
            "webinar_name": name,
            "minutes_attended": minutes,
            "channel": model.WEBINAR,
        }
        if not self.w.sends_minutes:
            del properties["minutes_attended"]
        self._track(t, "Webinar Attended", properties, server=True)
        self._engage(t, 4.0 + minutes / 6)

    def _buy(self, t: int) -> None:
        """A buyer's moment: pricing, a case study, usually a demo request, then sales."""
        if self.stage not in ("lead", "recycled") or self.accepted_once:
            return
        rng = self.rng
        end = self._session(t, rng.choice((model.HOME, model.PRICING)), buying=True)
        if rng.random() < self.w.demo_share:
            self._demo_request(end + rng.randrange(30_000, 600_000), "demo_page")
        else:
            self._request_review(end + rng.randrange(HOUR, 3 * DAY))

    def _demo_request(self, t: int, source: str) -> None:
        rng = self.rng
        self._page(t, model.DEMO, referrer=model.SITE + "/pricing")
        self._track(
            t + rng.randrange(20_000, 120_000),
            "Demo Requested",
            {
                "source": source,
                "answers": {
                    "team_size": str(rng.choice((3, 8, 15, 40))),
                    "timeline": rng.choice(("this_month", "this_quarter", "later")),
                    "budget": rng.choice(("approved", "planned", "unknown")),
                },
            },
            page=model.DEMO,
        )
        self.tally.demo_requests += 1
        self._request_review(t)

    def _review(self, t: int, delay: int) -> None:
        rng, p = self.rng, self.p
        self.review_pending = False
        if self.stage not in ("lead", "recycled"):
            return
        self.reviews += 1
        self.tally.reviews += 1
        if delay > SLA_MS:
            self.tally.late_reviews += 1
        rep = rng.choice(model.SALES_REPS)
        if p.will_convert and not self.accepted_once:
            self.accepted_once = True
            self.stage = "sql"
            self.tally.accepted += 1
            if self.truth is not None:
                self.truth.converted = True
            self._stage(
                t,
                "accept_mql",
                "meets_bant",
                rep,
                {
                    "budget": rng.choice(("approved", "planned")),
                    "authority": "decision_maker"
                    if p.seniority in ("cxo", "vp", "head")
                    else "influencer",
                    "need": rng.choice(("attribution", "lead_scoring", "pipeline_visibility")),
                    "timeline": rng.choice(("this_quarter", "next_quarter")),
                },
            )
            if rng.random() < 0.85:
                self._schedule(t + rng.randrange(DAY, 12 * DAY), "opportunity", rep)
            else:
                self._schedule(t + rng.randrange(20 * DAY, 40 * DAY), "recycle", "no_show")
            return
        self.tally.rejected += 1
        if p.competitor:
            reason = "competitor"
        elif p.seniority == "student":
            reason = "student"
        elif p.fit < 0.45:
            reason = "not_icp"
        else:
            reason = rng.choice(("bad_timing", "no_budget", "no_response"))
        self._stage(t, "reject_mql", reason, rep, {})
        self.stage = "rejected"
        hopeless = reason in ("competitor", "student", "not_icp") and rng.random() < 0.8
        if hopeless or self.reviews >= 2:  # rejected twice: sales stops looking
            self._stage(t + rng.randrange(MINUTE, 30 * MINUTE), "disqualify", reason, rep, {})
            self.stage = "disqualified"
            self.tally.disqualified += 1
        else:
            self._schedule(t + rng.randrange(14 * DAY, 60 * DAY), "recycle", reason)

    def _stage(self, t: int, action: str, reason: str, actor: str, answers: dict[str, str]) -> None:
        self._track(
            t,
            "Stage Changed",
            {"action": action, "reason": reason, "actor": actor, "answers": answers},
            server=True,
        )

    def _recycle(self, t: int, reason: str) -> None:
        if self.stage not in ("rejected", "lost", "sql"):
            return
        self._stage(t, "recycle", reason, "nurture-bot", {})
        self.stage = "recycled"
        self.engagement = 0.0
        self.tally.recycled += 1

    def _opportunity(self, t: int, rep: str) -> None:
        rng, p = self.rng, self.p
        self.stage = "opportunity"
        self.tally.opportunities += 1
        if self.truth is not None:
            self.truth.opportunity = True
        self._stage(t, "open_opportunity", "discovery_done", rep, {})
        amount = 9_000 * (p.company_size / 100) ** 0.35 * rng.lognormvariate(0.0, 0.35)
        amount = float(max(3_000, round(amount, -2)))
        self._schedule(t + 14 * DAY + int(rng.expovariate(1 / (40 * DAY))), "close", amount)

    def _close(self, t: int, amount: float) -> None:
        rng, p = self.rng, self.p
        deal_id = "deal-" + derived_id("deal", self.seed, p.index)[:12]
        if rng.random() < 0.2 + 0.5 * p.fit:
            self._track(
                t,
                "Deal Won",
                {"deal_id": deal_id, "amount": amount, "currency": model.CURRENCY},
                server=True,
            )
            self.stage = "customer"
            self.tally.won += 1
            self.tally.revenue += amount
            if self.truth is not None:
                self.truth.won = True
                self.truth.revenue = amount
            return
        reason = rng.choice(("price", "competitor", "no_decision", "timing", "missing_feature"))
        self._track(
            t,
            "Deal Lost",
            {"deal_id": deal_id, "reason": reason, "amount": amount, "currency": model.CURRENCY},
            server=True,
        )
        self.stage = "lost"
        self.tally.lost += 1
        self._schedule(t + rng.randrange(30 * DAY, 90 * DAY), "recycle", f"lost_{reason}")


def _cost_messages(config: SimConfig, tally: Tally) -> Iterator[tuple[int, Message]]:
    """Daily spend per paid campaign, sized to the traffic the campaign buys."""
    rng = seeded(config.seed, "costs")
    per_day = config.people / config.days
    shares: dict[str, float] = {}
    for c in model.CAMPAIGNS:
        siblings = sum(
            model.CAMPAIGN_WEIGHTS[o.id] for o in model.CAMPAIGNS if o.channel == c.channel
        )
        weight = model.WORLDS[config.world].channel_weights[c.channel]
        shares[c.id] = weight * model.CAMPAIGN_WEIGHTS[c.id] / siblings
    paid = [c for c in model.CAMPAIGNS if c.cost_per_visit > 0 or c.fixed_daily > 0]
    for day in range(math.ceil(config.days)):
        t = config.start_ms + (day + 1) * DAY - 1
        if t >= config.end_ms:
            break
        date = iso(t)[:10]
        for c in paid:
            visitors = per_day * shares[c.id]
            amount = (
                visitors * c.cost_per_visit * rng.lognormvariate(0.0, 0.2)
                + c.fixed_daily * config.people / FIXED_SPEND_PEOPLE
            )
            amount = round(amount, 2)
            tally.spend += amount
            tally.events["Campaign Cost"] += 1
            yield (
                t,
                {
                    "type": "track",
                    "event": "Campaign Cost",
                    "messageId": message_id(config.seed, "cost", c.id, date),
                    "timestamp": iso(t),
                    "sentAt": iso(t + 60_000),
                    "properties": {
                        "date": date,
                        "channel": c.channel,
                        "campaign": c.id,
                        "amount": amount,
                        "currency": model.CURRENCY,
                    },
                    "context": {"library": {"name": "ads-cost-import", "version": "1.0"}},
                },
            )


class Simulation:
    """A seeded simulation: iterate :meth:`messages`, then read :meth:`ground_truth`.

    Example:
        >>> sim = Simulation(SimConfig(people=50, days=30, seed=3))
        >>> messages = list(sim.messages())
        >>> [m["timestamp"] for m in messages] == sorted(m["timestamp"] for m in messages)
        True
        >>> messages == list(Simulation(SimConfig(people=50, days=30, seed=3)).messages())
        True
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tally = Tally()
        self._truth: dict[str, LeadTruth] = {}
        self._complete = False

    def messages(self) -> Iterator[Message]:
        """All messages of the simulation, sorted by event time, produced lazily.

        Each call starts over (and resets :attr:`tally` and the ground truth).
        """
        config = self.config
        self.tally = tally = Tally()
        self._truth = truth = dict[str, LeadTruth]()
        self._complete = False
        arrivals = arrival_times(
            seeded(config.seed, "arrivals"),
            config.people,
            config.start_ms,
            config.end_ms,
        )
        heap: list[tuple[int, int, int, Message, Iterator[tuple[int, Message]]]] = []
        order = 0
        costs = _cost_messages(config, tally)
        first = next(costs, None)
        if first is not None:
            heap.append((first[0], -1, order, first[1], costs))
        index = 0
        upcoming = next(arrivals, None)
        while True:
            while upcoming is not None and (not heap or upcoming <= heap[0][0]):
                rng = seeded(config.seed, index)
                person = model.draw_person(rng, config.seed, index, model.WORLDS[config.world])
                journey = _Journey(person, rng, upcoming, config, tally, truth).run()
                head = next(journey, None)
                if head is not None:
                    order += 1
                    heapq.heappush(heap, (head[0], index, order, head[1], journey))
                index += 1
                upcoming = next(arrivals, None)
            if not heap:
                break
            _, who, _, message, source = heapq.heappop(heap)
            yield message
            head = next(source, None)
            if head is not None:
                order += 1
                heapq.heappush(heap, (head[0], who, order, head[1], source))
        self._complete = True

    def ground_truth(self) -> dict[str, LeadTruth]:
        """``lead_id -> LeadTruth`` for every person who became a lead within the span.

        Runs a full pass (discarding messages) unless :meth:`messages` was exhausted.
        """
        if not self._complete:
            for _ in self.messages():
                pass
        return dict(self._truth)


def simulate(config: SimConfig) -> Iterator[Message]:
    """Shorthand for ``Simulation(config).messages()``."""
    return Simulation(config).messages()
