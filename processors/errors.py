"""Domain exceptions: a broken invariant raises one of these, loudly, never a silent default."""


class LeadflowError(Exception):
    """Base of every error leadflow raises on purpose."""


class InvalidTransition(LeadflowError):
    """A funnel stage change that the stage machine does not allow."""


class InvalidEvent(LeadflowError):
    """An event that decodes but breaks a domain invariant (goes to the dead-letter topic)."""


class PolicyError(LeadflowError):
    """The policy file is invalid; the message names the line and the field."""
