"""The simulated world: who buys, where they come from, what they read.

The vendor is a fictional B2B analytics company ("Northwind Analytics"). Its ideal customer
profile (ICP) is a revenue/marketing leader at a 200-5,000 employee software or fintech
company in a core market. Every simulated person gets a firmographic and persona profile,
an ICP *fit* in [0, 1] computed from it, a latent *intent*, and from both a TRUE
*propensity*: the probability that sales will accept them. The outcome is drawn from that
propensity, so fit genuinely drives conversion and the propensity's AUC is the best any
model that sees the person can do.

Everything here is data or a pure function of an explicitly seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from leadflow.processors.derived import derived_id

SITE = "https://www.northwind-analytics.example"
EXPERIMENT = "lp-hero-2026"
CURRENCY = "USD"

# Channel names as the collector's grouping rules and campaign_cost events spell them.
ORGANIC_SEARCH = "organic_search"
PAID_SEARCH = "paid_search"
PAID_SOCIAL = "paid_social"
EMAIL = "email"
REFERRAL = "referral"
DIRECT = "direct"
WEBINAR = "webinar"
EVENTS = "events"

CHANNELS: tuple[str, ...] = (
    ORGANIC_SEARCH,
    PAID_SEARCH,
    PAID_SOCIAL,
    EMAIL,
    REFERRAL,
    DIRECT,
    WEBINAR,
    EVENTS,
)


@dataclass(frozen=True, slots=True)
class Campaign:
    """A named campaign in a channel.

    Attributes:
        id: the ``utm_campaign`` value and the campaign name in costs.
        channel: one of :data:`CHANNELS`.
        source: ``utm_source`` (or the ad network).
        medium: ``utm_medium``.
        cost_per_visit: average spend per acquired visitor (0 for unpaid channels); drives
            the daily ``Campaign Cost`` events.
        fixed_daily: spend that does not scale with traffic (tools, booth, platform fees),
            per day, for a simulation of 5,000 people.
        terms: paid-search keywords (``utm_term``); empty when not applicable.
        landing: the path the campaign's links point to.
        lift: how much more likely than average this campaign's visitors are to buy
            (added to the propensity's log-odds).
    """

    id: str
    channel: str
    source: str | None
    medium: str | None
    cost_per_visit: float
    fixed_daily: float
    terms: tuple[str, ...]
    landing: str
    lift: float


CAMPAIGNS: tuple[Campaign, ...] = (
    Campaign("seo-content", ORGANIC_SEARCH, None, None, 0.0, 0.0, (), "/blog", 0.0),
    Campaign(
        "gs-brand",
        PAID_SEARCH,
        "google",
        "cpc",
        2.1,
        0.0,
        ("northwind analytics", "northwind pricing"),
        "/pricing",
        0.5,
    ),
    Campaign(
        "gs-lead-scoring",
        PAID_SEARCH,
        "google",
        "cpc",
        7.8,
        0.0,
        ("lead scoring software", "predictive lead scoring", "mql scoring"),
        "/lp/lead-scoring-playbook",
        0.15,
    ),
    Campaign(
        "gs-attribution",
        PAID_SEARCH,
        "google",
        "cpc",
        9.4,
        0.0,
        ("b2b attribution tool", "multi touch attribution", "marketing attribution"),
        "/lp/state-of-b2b-attribution-2026",
        0.1,
    ),
    Campaign(
        "li-abm-vp-marketing",
        PAID_SOCIAL,
        "linkedin",
        "paid_social",
        6.5,
        0.0,
        (),
        "/lp/state-of-b2b-attribution-2026",
        0.2,
    ),
    Campaign(
        "fb-retargeting",
        PAID_SOCIAL,
        "facebook",
        "paid_social",
        1.4,
        0.0,
        (),
        "/lp/roi-calculator",
        -0.4,
    ),
    Campaign(
        "partner-newsletter",
        EMAIL,
        "partner_newsletter",
        "email",
        1.9,
        0.0,
        (),
        "/lp/lead-scoring-playbook",
        0.0,
    ),
    Campaign("g2-reviews", REFERRAL, "g2.com", "referral", 0.0, 40.0, (), "/customers", 0.3),
    Campaign("partner-blogs", REFERRAL, None, None, 0.0, 0.0, (), "/product", 0.0),
    Campaign("direct", DIRECT, None, None, 0.0, 0.0, (), "/", 0.1),
    Campaign(
        "webinar-series-2026",
        WEBINAR,
        "webinar",
        "webinar",
        3.0,
        25.0,
        (),
        "/webinars/pipeline-velocity-masterclass",
        0.1,
    ),
    Campaign("saastr-booth", EVENTS, "saastr", "event", 0.0, 450.0, (), "/", 0.25),
    Campaign("revops-summit", EVENTS, "revops_summit", "event", 0.0, 300.0, (), "/", 0.35),
)
"""Every campaign; the first campaign of a channel is not special."""

# Share of new people arriving through each channel.
CHANNEL_WEIGHTS: dict[str, float] = {
    ORGANIC_SEARCH: 0.30,
    PAID_SEARCH: 0.20,
    PAID_SOCIAL: 0.15,
    EMAIL: 0.05,
    REFERRAL: 0.08,
    DIRECT: 0.12,
    WEBINAR: 0.06,
    EVENTS: 0.04,
}

# Within a channel, share of each campaign (by id).
CAMPAIGN_WEIGHTS: dict[str, float] = {
    "seo-content": 1.0,
    "gs-brand": 0.25,
    "gs-lead-scoring": 0.45,
    "gs-attribution": 0.30,
    "li-abm-vp-marketing": 0.55,
    "fb-retargeting": 0.45,
    "partner-newsletter": 1.0,
    "g2-reviews": 0.6,
    "partner-blogs": 0.4,
    "direct": 1.0,
    "webinar-series-2026": 1.0,
    "saastr-booth": 0.55,
    "revops-summit": 0.45,
}

ORGANIC_REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/")
REFERRAL_REFERRERS = (
    "https://www.g2.com/products/northwind-analytics/reviews",
    "https://www.capterra.com/p/northwind-analytics/",
    "https://revopsweekly.example/best-tools-2026",
    "https://www.partnerstack-blog.example/lead-scoring-tools",
)


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the vendor's site.

    Attributes:
        path: URL path.
        title: document title.
        name: Segment page name.
        category: Segment page category (what the scoring rules look at).
        intent: how strongly a view of it signals buying interest (drives the simulator's
            own approximation of engagement; the pipeline scores by its policy file).
    """

    path: str
    title: str
    name: str
    category: str
    intent: float


def _page(path: str, title: str, category: str, intent: float) -> Page:
    return Page(path, f"{title} | Northwind Analytics", title, category, intent)


HOME = _page("/", "B2B revenue analytics", "Home", 1.0)
PRICING = _page("/pricing", "Pricing", "Pricing", 10.0)
DEMO = _page("/demo", "Book a demo", "Demo", 12.0)
CAREERS = _page("/careers", "Careers", "Careers", -5.0)
PRODUCT_PAGES = (
    _page("/product", "Product overview", "Product", 3.0),
    _page("/product/attribution", "Multi-touch attribution", "Product", 4.0),
    _page("/product/lead-scoring", "Predictive lead scoring", "Product", 4.0),
    _page("/product/integrations", "Integrations", "Product", 3.0),
)
CASE_STUDIES = (
    _page("/customers", "Customer stories", "Case Study", 5.0),
    _page("/customers/acmepay", "How AcmePay doubled pipeline", "Case Study", 8.0),
    _page("/customers/brightcloud", "BrightCloud cut CAC by 31%", "Case Study", 8.0),
    _page("/customers/quanta-ledger", "Quanta Ledger's RevOps playbook", "Case Study", 8.0),
)
BLOG_POSTS = (
    _page("/blog", "Blog", "Blog", 0.5),
    _page("/blog/what-is-an-mql", "What is an MQL, really?", "Blog", 1.0),
    _page("/blog/w-shaped-attribution", "W-shaped attribution explained", "Blog", 1.0),
    _page("/blog/lead-scoring-decay", "Why lead scores must decay", "Blog", 1.0),
    _page("/blog/sales-sla", "The 24-hour MQL SLA", "Blog", 1.0),
    _page("/blog/markov-attribution", "Markov chain attribution for marketers", "Blog", 1.0),
    _page("/blog/b2b-benchmarks-2026", "B2B funnel benchmarks 2026", "Blog", 1.0),
    _page("/blog/pipeline-velocity", "Pipeline velocity in one formula", "Blog", 1.0),
)


@dataclass(frozen=True, slots=True)
class Asset:
    """A lead magnet behind a form.

    Attributes:
        id: asset id (``asset`` on the form, ``asset_id`` on the download).
        name: human name.
        type: ebook, report, template, calculator or webinar.
        landing: its landing page (the experiment runs there).
    """

    id: str
    name: str
    type: str
    landing: Page


ASSETS = (
    Asset(
        "state-of-b2b-attribution-2026",
        "State of B2B Attribution 2026",
        "report",
        _page(
            "/lp/state-of-b2b-attribution-2026",
            "State of B2B Attribution 2026",
            "Landing Page",
            2.0,
        ),
    ),
    Asset(
        "lead-scoring-playbook",
        "The Lead Scoring Playbook",
        "ebook",
        _page("/lp/lead-scoring-playbook", "The Lead Scoring Playbook", "Landing Page", 2.0),
    ),
    Asset(
        "roi-calculator",
        "Marketing ROI Calculator",
        "calculator",
        _page("/lp/roi-calculator", "Marketing ROI Calculator", "Landing Page", 3.0),
    ),
    Asset(
        "sla-template",
        "MQL-to-SQL SLA Template",
        "template",
        _page("/lp/sla-template", "MQL-to-SQL SLA Template", "Landing Page", 2.0),
    ),
)

WEBINARS = (
    ("pipeline-velocity-masterclass", "Pipeline Velocity Masterclass"),
    ("attribution-without-tears", "Attribution Without Tears"),
    ("scoring-that-sales-trusts", "Lead Scoring That Sales Trusts"),
    ("revops-metrics-2026", "The RevOps Metrics That Matter in 2026"),
)

NURTURE_EMAILS = (
    ("welcome", "Your download is ready", "/blog/what-is-an-mql"),
    ("attribution-101", "5 attribution models, one dashboard", "/product/attribution"),
    ("case-acmepay", "How AcmePay doubled pipeline in 90 days", "/customers/acmepay"),
    (
        "scoring-decay",
        "Why last week's pricing visit beats last year's ebook",
        "/blog/lead-scoring-decay",
    ),
    ("benchmarks", "Your funnel vs. 2026 benchmarks", "/blog/b2b-benchmarks-2026"),
    ("case-brightcloud", "BrightCloud cut CAC by 31%", "/customers/brightcloud"),
    ("pricing-nudge", "Plans that grow with your pipeline", "/pricing"),
    ("demo-invite", "See your own funnel in 20 minutes", "/demo"),
)


@dataclass(frozen=True, slots=True)
class Role:
    """A job title with its seniority and department (persona)."""

    title: str
    seniority: str
    department: str
    weight: float


ROLES = (
    Role("VP Marketing", "vp", "marketing", 0.05),
    Role("Chief Marketing Officer", "cxo", "marketing", 0.02),
    Role("VP Sales", "vp", "sales", 0.03),
    Role("Head of Revenue Operations", "head", "revops", 0.04),
    Role("Director of Demand Generation", "director", "marketing", 0.07),
    Role("Director of Marketing Operations", "director", "marketing", 0.05),
    Role("Marketing Operations Manager", "manager", "marketing", 0.10),
    Role("Demand Generation Manager", "manager", "marketing", 0.09),
    Role("Sales Operations Manager", "manager", "sales", 0.06),
    Role("Growth Marketing Manager", "manager", "marketing", 0.07),
    Role("Marketing Specialist", "individual", "marketing", 0.10),
    Role("Sales Development Representative", "individual", "sales", 0.07),
    Role("Data Analyst", "individual", "data", 0.06),
    Role("Software Engineer", "individual", "engineering", 0.08),
    Role("Founder & CEO", "cxo", "executive", 0.04),
    Role("Student", "student", "none", 0.05),
    Role("Consultant", "individual", "consulting", 0.02),
)

SENIORITY_FIT = {
    "cxo": 0.9,
    "vp": 1.0,
    "head": 1.0,
    "director": 0.9,
    "manager": 0.6,
    "individual": 0.3,
    "student": 0.0,
}
DEPARTMENT_FIT = {"marketing": 1.0, "sales": 0.9, "revops": 1.0, "executive": 0.8}

# (industry, ICP fit, share of people)
INDUSTRIES = (
    ("Software", 1.0, 0.26),
    ("Fintech", 1.0, 0.10),
    ("IT Services", 0.8, 0.10),
    ("E-commerce", 0.6, 0.09),
    ("Healthcare", 0.5, 0.08),
    ("Manufacturing", 0.4, 0.09),
    ("Financial Services", 0.6, 0.07),
    ("Education", 0.15, 0.07),
    ("Retail", 0.3, 0.06),
    ("Non-profit", 0.1, 0.04),
    ("Government", 0.1, 0.04),
)
# (country, ICP fit, share)
COUNTRIES = (
    ("US", 1.0, 0.38),
    ("GB", 1.0, 0.11),
    ("DE", 0.9, 0.08),
    ("CA", 0.9, 0.06),
    ("NL", 0.9, 0.04),
    ("AU", 0.8, 0.04),
    ("FR", 0.7, 0.05),
    ("IN", 0.4, 0.10),
    ("BR", 0.4, 0.05),
    ("ES", 0.6, 0.04),
    ("NG", 0.2, 0.03),
    ("SG", 0.8, 0.02),
)
# (low, high, share): company size buckets in employees.
SIZE_BUCKETS = (
    (1, 10, 0.14),
    (11, 50, 0.20),
    (51, 200, 0.22),
    (201, 1000, 0.21),
    (1001, 5000, 0.13),
    (5001, 50000, 0.10),
)
FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "proton.me")
COMPETITORS = ("Southwind Metrics", "FunnelForge", "LeadLens")

FIRST_NAMES = (
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Femi",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kara",
    "Liam",
    "Maya",
    "Noah",
    "Olu",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Marco",
    "Lena",
    "Omar",
    "Sofia",
)
LAST_NAMES = (
    "Adams",
    "Becker",
    "Chen",
    "Diaz",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Müller",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quist",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Umarov",
    "Varga",
    "Wright",
    "Xu",
    "Young",
    "Zimmer",
    "Singh",
    "Moreau",
)
COMPANY_STEMS = (
    "Acme",
    "Blue",
    "Cedar",
    "Delta",
    "Ember",
    "Fjord",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Maple",
    "Nimbus",
    "Orbit",
    "Pioneer",
    "Quartz",
    "Ridge",
    "Summit",
    "Tidal",
    "Umbra",
    "Vertex",
    "Willow",
    "Zenith",
    "Arc",
    "Beacon",
    "Cobalt",
    "Drift",
)
COMPANY_SUFFIXES = ("Labs", "Cloud", "Systems", "Pay", "Data", "Works", "Health", "Logic", "Soft")
SALES_REPS = ("rep-alex", "rep-bea", "rep-chris", "rep-dana", "rep-eli")
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
)


@dataclass(frozen=True)
class World:
    """Who the vendor sells to and how buyers behave: one simulated market.

    ``northwind`` (the default, what the demo and the default policy describe) sells
    analytics to marketing and revenue leaders at mid-market software companies.
    ``harbor`` is written to test that nothing is tuned to it: an HR and payroll tool for
    small businesses, bought by HR managers and owners of 11-200 employee companies in
    healthcare, retail and hospitality, found through webinars and social ads, with weak
    pricing-page and demo signals and many free-mail buyers: the default policy's ICP
    (big companies, data titles, business email) points the wrong way on most of it.

    Attributes:
        size_fit: (low, high, fit) employee ranges.
        fit_weights: weights of size, industry, seniority, department, country in the fit.
        free_mail_rate / free_mail_factor: share of free-mail addresses, fit multiplier.
        propensity: (intercept, per fit, per intent) of the true log-odds.
        lifts: campaign id -> lift (added to the log-odds), overriding the campaign's own.
        activity: (base, per propensity, per intent) of how active a person is.
        pricing_pull / case_pull: how much propensity draws a visitor to pricing / cases.
        demo_share: share of buying moments that request a demo (else a sales review).
        webinar_attend: (base, per activity) chance a registrant attends a webinar.
        buy_days: mean days from capture to a buyer's buying moment.
        sends_minutes: the webinar tool reports ``minutes_attended`` (harbor's does not).
    """

    name: str
    roles: tuple[Role, ...]
    seniority_fit: dict[str, float]
    department_fit: dict[str, float]
    industries: tuple[tuple[str, float, float], ...]
    countries: tuple[tuple[str, float, float], ...]
    size_buckets: tuple[tuple[int, int, float], ...]
    size_fit: tuple[tuple[int, int, float], ...]
    fit_weights: tuple[float, float, float, float, float]
    free_mail_rate: float
    free_mail_factor: float
    propensity: tuple[float, float, float]
    channel_weights: dict[str, float]
    lifts: dict[str, float]
    activity: tuple[float, float, float]
    pricing_pull: float
    case_pull: float
    demo_share: float
    webinar_attend: tuple[float, float]
    buy_days: float
    sends_minutes: bool = True


def icp_fit(
    *,
    industry: str,
    company_size: int,
    seniority: str,
    department: str,
    country: str,
    free_mail: bool,
    world: World | None = None,
) -> float:
    """How well a person matches the ideal customer profile, in [0, 1].

    Company size weighs most (the product needs a real marketing team and budget), then
    industry, seniority, department and market. A free-mail address halves nothing but
    costs 40 %: real buyers use their work address. Another ``world`` has its own ICP.

    Example:
        >>> best = icp_fit(industry="Software", company_size=800, seniority="vp",
        ...                department="marketing", country="US", free_mail=False)
        >>> best
        1.0
        >>> icp_fit(industry="Education", company_size=5, seniority="student",
        ...         department="none", country="NG", free_mail=True) < 0.1
        True
    """
    w = world or NORTHWIND
    size = next((fit for low, high, fit in w.size_fit if low <= company_size <= high), 0.1)
    industry_fit = next((fit for name, fit, _ in w.industries if name == industry), 0.2)
    country_fit = next((fit for name, fit, _ in w.countries if name == country), 0.5)
    ws, wi, wn, wd, wc = w.fit_weights
    fit = (
        ws * size
        + wi * industry_fit
        + wn * w.seniority_fit.get(seniority, 0.3)
        + wd * w.department_fit.get(department, 0.3)
        + wc * country_fit
    )
    return round(fit * (w.free_mail_factor if free_mail else 1.0), 4)


def true_propensity(
    *, fit: float, intent: float, lift: float, competitor: bool, world: World | None = None
) -> float:
    """The TRUE probability that sales accepts this person once they are a lead.

    Logistic in fit (strong), latent intent (a standard normal: timing, pain, budget that
    no form reveals) and the acquiring campaign's lift. Competitors researching the vendor
    never buy.

    Example:
        >>> round(true_propensity(fit=1.0, intent=0.0, lift=0.0, competitor=False), 3)
        0.401
        >>> true_propensity(fit=0.2, intent=0.0, lift=0.0, competitor=False) < 0.05
        True
    """
    if competitor:
        return 0.002
    base, per_fit, per_intent = (world or NORTHWIND).propensity
    log_odds = base + per_fit * fit + per_intent * intent + lift
    return 1.0 / (1.0 + math.exp(-log_odds))


NORTHWIND = World(
    name="northwind",
    roles=ROLES,
    seniority_fit=SENIORITY_FIT,
    department_fit=DEPARTMENT_FIT,
    industries=INDUSTRIES,
    countries=COUNTRIES,
    size_buckets=SIZE_BUCKETS,
    size_fit=((201, 5000, 1.0), (51, 200, 0.6), (5001, 10**9, 0.6), (11, 50, 0.3), (1, 10, 0.1)),
    fit_weights=(0.30, 0.25, 0.20, 0.15, 0.10),
    free_mail_rate=0.12,
    free_mail_factor=0.6,
    propensity=(-5.2, 4.8, 1.1),
    channel_weights=CHANNEL_WEIGHTS,
    lifts={},
    activity=(0.5, 3.0, 0.35),
    pricing_pull=0.45,
    case_pull=0.3,
    demo_share=0.55,
    webinar_attend=(0.3, 0.15),
    buy_days=26.0,
)

HARBOR = World(
    name="harbor",
    roles=(
        Role("HR Manager", "manager", "hr", 0.14),
        Role("Head of People", "head", "hr", 0.06),
        Role("Chief People Officer", "cxo", "hr", 0.02),
        Role("Office Manager", "manager", "operations", 0.10),
        Role("Owner", "cxo", "executive", 0.07),
        Role("Founder & CEO", "cxo", "executive", 0.05),
        Role("HR Coordinator", "individual", "hr", 0.09),
        Role("Recruiter", "individual", "hr", 0.07),
        Role("Payroll Specialist", "individual", "finance", 0.07),
        Role("Finance Director", "director", "finance", 0.05),
        Role("Director of Operations", "director", "operations", 0.05),
        Role("Software Engineer", "individual", "engineering", 0.08),
        Role("Marketing Manager", "manager", "marketing", 0.06),
        Role("VP Data", "vp", "data", 0.03),
        Role("Student", "student", "none", 0.06),
    ),
    seniority_fit={
        "manager": 1.0,
        "head": 0.9,
        "cxo": 0.9,
        "director": 0.6,
        "vp": 0.3,
        "individual": 0.5,
        "student": 0.0,
    },
    department_fit={"hr": 1.0, "operations": 0.8, "executive": 0.9, "finance": 0.7},
    industries=(
        ("Healthcare", 1.0, 0.16),
        ("Retail", 0.9, 0.14),
        ("Hospitality", 0.9, 0.10),
        ("Construction", 0.8, 0.08),
        ("Manufacturing", 0.6, 0.10),
        ("Non-profit", 0.6, 0.06),
        ("Education", 0.5, 0.06),
        ("Software", 0.2, 0.16),
        ("Financial Services", 0.3, 0.08),
        ("Government", 0.1, 0.06),
    ),
    countries=(
        ("US", 1.0, 0.50),
        ("CA", 0.9, 0.10),
        ("AU", 0.8, 0.08),
        ("GB", 0.5, 0.10),
        ("IE", 0.5, 0.04),
        ("DE", 0.2, 0.06),
        ("IN", 0.1, 0.08),
        ("BR", 0.1, 0.04),
    ),
    size_buckets=(
        (1, 10, 0.25),
        (11, 50, 0.30),
        (51, 200, 0.22),
        (201, 1000, 0.13),
        (1001, 50000, 0.10),
    ),
    size_fit=((11, 50, 1.0), (51, 200, 0.9), (1, 10, 0.5), (201, 1000, 0.4), (1001, 10**9, 0.1)),
    fit_weights=(0.30, 0.25, 0.15, 0.20, 0.10),
    free_mail_rate=0.35,
    free_mail_factor=0.9,
    propensity=(-4.9, 4.4, 1.4),
    channel_weights={
        ORGANIC_SEARCH: 0.18,
        PAID_SEARCH: 0.08,
        PAID_SOCIAL: 0.27,
        EMAIL: 0.04,
        REFERRAL: 0.08,
        DIRECT: 0.05,
        WEBINAR: 0.20,
        EVENTS: 0.10,
    },
    lifts={"webinar-series-2026": 0.6, "fb-retargeting": 0.2, "gs-brand": -0.2},
    activity=(0.6, 2.0, 0.6),
    pricing_pull=0.12,
    case_pull=0.08,
    demo_share=0.2,
    webinar_attend=(0.25, 0.3),
    buy_days=34.0,
    sends_minutes=False,
)

WORLDS: dict[str, World] = {w.name: w for w in (NORTHWIND, HARBOR)}
"""The simulated markets by name (``SimConfig.world``)."""


@dataclass(frozen=True, slots=True)
class Person:
    """One simulated human: who they are and what is true about them.

    ``propensity`` and ``will_convert`` are ground truth, never sent; everything else is
    what forms, CRMs and trackers would reveal.
    """

    index: int
    anonymous_id: str
    lead_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    company: str
    title: str
    seniority: str
    department: str
    company_size: int
    industry: str
    country: str
    competitor: bool
    fit: float
    intent: float
    propensity: float
    will_convert: bool
    campaign: Campaign
    variant: str
    user_agent: str
    ip: str
    world: str = "northwind"

    @property
    def channel(self) -> str:
        """The acquiring channel (first touch)."""
        return self.campaign.channel

    @property
    def activity(self) -> float:
        """How active the person is (visits, opens, clicks), in about [0.2, 3].

        Driven by the same latent factors as the propensity (and not by the drawn
        outcome), so engagement is a genuine but noisy signal of it.
        """
        base, per_propensity, per_intent = WORLDS[self.world].activity
        return max(
            0.2, min(3.0, base + per_propensity * self.propensity + per_intent * self.intent)
        )


def _weighted(rng: random.Random, items: tuple[tuple[str, float, float], ...]) -> str:
    return rng.choices([name for name, _, _ in items], weights=[w for _, _, w in items])[0]


def pick_campaign(rng: random.Random, world: World | None = None) -> Campaign:
    """Draw the acquiring campaign: first the channel, then a campaign within it."""
    weights = (world or NORTHWIND).channel_weights
    channel = rng.choices(CHANNELS, weights=[weights[c] for c in CHANNELS])[0]
    options = [c for c in CAMPAIGNS if c.channel == channel]
    return rng.choices(options, weights=[CAMPAIGN_WEIGHTS[c.id] for c in options])[0]


def draw_person(rng: random.Random, seed: int, index: int, world: World | None = None) -> Person:
    """Draw person ``index`` of the simulation seeded with ``seed`` (in ``world``).

    Ids derive from (seed, index), so they are stable across runs and unique per seed.

    Example:
        >>> a = draw_person(random.Random("7:3"), 7, 3)
        >>> a == draw_person(random.Random("7:3"), 7, 3)
        True
        >>> 0.0 <= a.fit <= 1.0 and 0.0 < a.propensity < 1.0
        True
    """
    w = world or NORTHWIND
    campaign = pick_campaign(rng, w)
    role = rng.choices(w.roles, weights=[r.weight for r in w.roles])[0]
    industry = _weighted(rng, w.industries)
    country = _weighted(rng, w.countries)
    low, high, _ = rng.choices(w.size_buckets, weights=[b[2] for b in w.size_buckets])[0]
    company_size = round(math.exp(rng.uniform(math.log(low), math.log(high + 1)))) or 1
    competitor = rng.random() < 0.015
    if competitor:
        company = rng.choice(COMPETITORS)
    else:
        company = f"{rng.choice(COMPANY_STEMS)} {rng.choice(COMPANY_SUFFIXES)}"
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    free_mail = role.seniority == "student" or rng.random() < w.free_mail_rate
    domain = (
        rng.choice(FREE_MAIL)
        if free_mail
        else company.lower().replace(" ", "").replace("&", "") + ".example"
    )
    local = f"{first}.{last}".lower().replace("ü", "ue")
    email = f"{local}{index}@{domain}"
    fit = icp_fit(
        industry=industry,
        company_size=company_size,
        seniority=role.seniority,
        department=role.department,
        country=country,
        free_mail=free_mail,
        world=w,
    )
    intent = rng.gauss(0.0, 1.0)
    lift = w.lifts.get(campaign.id, campaign.lift)
    propensity = true_propensity(fit=fit, intent=intent, lift=lift, competitor=competitor, world=w)
    token = derived_id("leadflow-sim", seed, index)
    return Person(
        index=index,
        anonymous_id=f"anon-{token[:20]}",
        lead_id=f"lead-{token[12:28]}",
        first_name=first,
        last_name=last,
        email=email,
        phone=f"+1-555-{rng.randrange(1000, 9999)}",
        company=company,
        title=role.title,
        seniority=role.seniority,
        department=role.department,
        company_size=company_size,
        industry=industry,
        country=country,
        competitor=competitor,
        fit=fit,
        intent=round(intent, 4),
        propensity=propensity,
        will_convert=rng.random() < propensity,
        campaign=campaign,
        variant="B" if rng.random() < 0.5 else "A",
        user_agent=rng.choice(USER_AGENTS),
        ip=f"198.51.100.{rng.randrange(1, 255)}",
        world=w.name,
    )
